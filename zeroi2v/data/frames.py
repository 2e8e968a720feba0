"""Rawframe folders as MMAction2 keeps datasets: one image file per frame, read only where sampled.

A folder holds `filename_tmpl.format(start_index + i)` for frame i (MMAction2 and denseflow write
`img_00001.jpg`, ...; SSv2 rawframes `00001.jpg`; other tools `{:06d}` or `.png`). Only the sampled
files are read; each is decoded with torchvision (`decode_image`: libjpeg-turbo for JPEG, also PNG).

The frame count is the list's `total_frames` when the last frame it promises exists, else the frames
on disk (counted from `start_index` up to the first gap): a list that disagrees with the disk is
named once in the log, and sampling uses the frames that are there. A folder without frames, a
missing or corrupt frame file: `VideoDecodeError`, so the item is skipped, counted and named like an
unreadable video.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, read_file

from zeroi2v.data.decode import VideoDecodeError

warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
log = logging.getLogger("zeroi2v.data")
_warned: set[str] = set()


def count_frames(folder: str, tmpl: str, start: int, listed: int | None = None) -> int:
    """Frames of `folder`: `listed` (a list's total_frames) when its last frame exists, else those on disk."""
    if listed and os.path.isfile(os.path.join(folder, tmpl.format(start + listed - 1))):
        return listed
    if not os.path.isdir(folder):
        raise VideoDecodeError(f"no such frame folder: {folder}")
    names = set(os.listdir(folder))
    n = 0
    while tmpl.format(start + n) in names:
        n += 1
    if n == 0:
        raise VideoDecodeError(f"no frame {tmpl.format(start)} in {folder}{template_hint(names, tmpl, start)}")
    if listed and folder not in _warned:
        _warned.add(folder)
        log.warning("%s: the list says %d frames, %d are on disk (%s...); sampling from those", folder, listed, n, tmpl)
    return n


def read_frame_files(folder: str, indices, tmpl: str, start: int) -> torch.Tensor:
    """RGB frames at `indices` (0-based, any order, repeats allowed) as uint8 (len(indices), H, W, 3)."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    unique, where = np.unique(indices, return_inverse=True)
    decoded = [decode_frame(os.path.join(folder, tmpl.format(start + int(i)))) for i in unique]
    if len({d.shape for d in decoded}) > 1:
        sizes = sorted({tuple(d.shape[1:]) for d in decoded})
        raise VideoDecodeError(f"frames of {folder} differ in size ({sizes[0]} and {sizes[-1]})")
    frames = torch.stack([d.permute(1, 2, 0) for d in decoded])  # the decoder's (H, W, 3) memory: a plain copy
    if len(unique) != len(indices) or not np.array_equal(unique, indices):  # repeats or out of order
        frames = frames[torch.from_numpy(where.reshape(-1))]
    return frames


def decode_frame(path: str) -> torch.Tensor:
    """One image file as uint8 (3, H, W) RGB."""
    try:
        data = read_file(path)
    except RuntimeError:
        reason = "missing" if not os.path.exists(path) else "unreadable"
        raise VideoDecodeError(f"frame {reason}: {path}") from None
    if data.numel() == 0:
        raise VideoDecodeError(f"empty frame file: {path}")
    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as e:
        reason = re.sub(r"^.*?\.cpp:\d+, ", "", str(e).splitlines()[0])  # without the C++ source location
        raise VideoDecodeError(f"cannot decode frame {path}: {reason}") from None


def guess_template(name: str) -> tuple[str, int] | None:
    """(filename_tmpl, the number) that an image file name like `img_00001.jpg` follows, or None."""
    match = re.fullmatch(r"(.*?)(\d+)(\.[A-Za-z]+)", name)
    if not match or match.group(3).lower() not in IMAGE_EXTENSIONS:
        return None
    prefix, digits, ext = match.groups()
    width = f"0{len(digits)}" if digits.startswith("0") and len(digits) > 1 else ""
    return f"{prefix}{{:{width}d}}{ext}".replace("{:d}", "{}"), int(digits)


def template_hint(names, tmpl: str, start: int) -> str:
    """Why no frame matched: what the folder's image files are called, as the config keys to set."""
    images = sorted(n for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    if not images:
        return " (the folder holds no image files)"
    guess = guess_template(images[0])
    if guess is None:
        return f" (its images are named like {images[0]})"
    found, first = guess
    if found == tmpl and first != start:
        return f" (its frames start at {images[0]}: set data.start_index={first})"
    return f" (its images are named like {images[0]}: set data.filename_tmpl='{found}' data.start_index={first})"


def is_frame_folder(folder) -> bool:
    """A folder of image files (a rawframe folder), not of videos or class folders."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file():
                    return True
    except OSError:
        return False
    return False


def frame_folders(folder) -> list:
    """The rawframe folders directly inside `folder`, sorted."""
    try:
        subfolders = sorted(d for d in Path(folder).iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return []
    return [d for d in subfolders if is_frame_folder(d)]
