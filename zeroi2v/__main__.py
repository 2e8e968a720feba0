"""`python -m zeroi2v ...` is the same program as the `zeroi2v` console script (torchrun uses it)."""

from zeroi2v.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
