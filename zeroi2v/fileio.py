"""Atomic file writes: a kill or a full disk at any moment leaves the old file intact.

Every file in a run or model directory goes through here: write to a temporary file in the
same directory, flush + fsync, then `os.replace` (atomic on POSIX), then fsync the directory.
The file gets the permissions the umask gives (mkstemp's private 0600 is not kept), so colleagues on
a shared cluster can read runs as they read any other file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import save_file

from zeroi2v.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Call `write(tmp_path)` to produce the file, then atomically move it to `path` (`suffix`: of the
    temporary file, for writers that look at it). If `write` raises, nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)  # (some writers replace the file: the mode is set after)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems do not support fsync on directories
        pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> None:
    """safetensors.torch.save_file through a temp file (tensors made contiguous, CPU)."""
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(clean, tmp, metadata=metadata))


def check_writable(path, what: str, sources=()) -> Path:
    """Fail now (one line), not after the work, if `path` cannot be written or would overwrite an input."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory; give a file name")
    for source in sources:
        try:
            if path.exists() and os.path.samefile(path, source):
                raise UserError(f"{what} {path} is the input {source}; refusing to overwrite it")
        except OSError:
            pass
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{what} {path}: {ancestor} is not a directory")
    if ancestor == path.parent:  # try it for real (permission bits say nothing for root or some mounts)
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=ancestor)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise UserError(f"{what} {path}: cannot write in {ancestor} ({e.strerror})") from None
    elif not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: cannot create folders in {ancestor} (permission denied)")
    return path


def model_files(directory) -> list[Path]:
    """Every file of a model or run directory (weights, config, metrics, checkpoints): what an output
    path given to export / features / predict must never overwrite. Empty for a non-directory."""
    directory = Path(directory) if isinstance(directory, (str, os.PathLike)) else None
    return [f for f in directory.rglob("*") if f.is_file()] if directory is not None and directory.is_dir() else []
