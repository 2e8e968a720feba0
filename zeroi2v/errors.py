"""One exception type for user mistakes.

Anything a user can get wrong (a path, a config value, a file that is not what it claims)
raises `UserError` with a one-line message. The CLI prints that line and exits non-zero;
only `--debug` (or ZEROI2V_DEBUG=1) shows the traceback. Bugs stay ordinary exceptions.
"""


class UserError(ValueError):
    """A mistake in the user's input: shown as one line, never as a traceback."""
