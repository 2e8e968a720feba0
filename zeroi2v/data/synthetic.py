"""Synthetic motion videos whose classes differ only in temporal order.

Each class pair is one change and its time reversal (moving up / down, left / right, growing /
shrinking, brightening / darkening), with randomised appearance: shape, colours, textured background,
start position, speed. The set of frames of a "moving up" video is exactly the set of frames of some
"moving down" video, so any model that pools frames without order (frame averaging) is at chance
within a pair (~50% overall); a model that sees order can be perfect. The files are real videos
(H.264 in MP4 by default) written with PyAV, with MMAction2 list files, so they go through the
normal pipeline. The still-image pretraining of the demo backbone (`zeroi2v.pretrain`) draws from
the same renderer, so the image model has seen this visual world, never its motion.

    zeroi2v synth OUT_DIR --train-per-class 100 --val-per-class 20
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from zeroi2v.errors import UserError
from zeroi2v.fileio import atomic_write, atomic_write_text

CLASSES = ["moving up", "moving down", "moving left", "moving right", "growing", "shrinking",
           "brightening", "darkening"]
SHAPES = ("square", "disc", "diamond")
CODECS = {"libx264": ("mp4", "yuv420p"), "mpeg4": ("mp4", "yuv420p"), "mjpeg": ("avi", "yuvj420p"),
          "libvpx-vp9": ("webm", "yuv420p")}


def scene(rng: np.random.Generator, size: int) -> dict:
    """Random appearance: background colour with blocky texture, and an object colour that contrasts."""
    background = rng.integers(0, 256, 3).astype(np.float32)
    texture = rng.normal(0, 18, (size // 4 + 1, size // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:size, :size]
    color = rng.integers(0, 256, 3).astype(np.float32)
    while np.abs(color - background).sum() < 200:
        color = rng.integers(0, 256, 3).astype(np.float32)
    return {"background": background, "texture": texture.astype(np.float32), "color": color}


def object_mask(size: int, shape: int, x: float, y: float, radius: float) -> np.ndarray:
    """(size, size) bool mask of a square (0), disc (1) or diamond (2) centred at (x, y) in pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == 0:
        return (np.abs(xx - x) < radius) & (np.abs(yy - y) < radius)
    if shape == 1:
        return (xx - x) ** 2 + (yy - y) ** 2 < radius ** 2
    return np.abs(xx - x) + np.abs(yy - y) < 1.3 * radius


def shade(color: np.ndarray, level: float) -> np.ndarray:
    """The object colour at brightness `level` in [0, 1]: 0.5 is the colour itself, 0 near black, 1 near white.

    Mixing towards black/white (not multiplying) keeps the change visible for dark colours too.
    """
    if level < 0.5:
        return color * (0.2 + 1.6 * level)
    return color + (255 - color) * 1.2 * (level - 0.5)


def draw_frame(look: dict, mask: np.ndarray, level: float = 0.5) -> np.ndarray:
    """One (size, size, 3) uint8 frame: the object (mask) in its shaded colour on the textured background."""
    size = mask.shape[0]
    frame = np.broadcast_to(look["background"], (size, size, 3)) + look["texture"]
    frame = np.where(mask[..., None], shade(look["color"], level), frame)
    return np.clip(frame, 0, 255).astype(np.uint8)


def render(label: int, num_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 frames of one random video of class `label`.

    Movements cover about half the frame, so that neighbouring frames of an 8-frame clip differ by a
    few pixels, a distance a patch-8 ViT can see.
    """
    pair, reverse = divmod(label, 2)
    look = scene(rng, size)
    shape = int(rng.integers(len(SHAPES)))
    radius = rng.uniform(0.12, 0.2) * size
    travel = rng.uniform(0.45, 0.65) * size
    along = rng.uniform(0.1 * size + travel / 2, 0.9 * size - travel / 2)  # mid-point of the movement
    across = rng.uniform(0.25, 0.75) * size
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    start_level = rng.uniform(0.0, 0.15)
    frames = []
    for t in np.linspace(0.0, 1.0, num_frames):
        x, y, r, level = cx, cy, radius, 0.5
        if pair == 0:
            x, y = across, along + travel * (t - 0.5)
        elif pair == 1:
            x, y = along + travel * (t - 0.5), across
        elif pair == 2:
            r = radius * (1.0 + 1.2 * t)
        else:
            level = start_level + (0.85 - start_level) * t
        frames.append(draw_frame(look, object_mask(size, shape, x, y, r), level))
    frames = np.stack(frames)
    if reverse:  # the odd class of a pair is the same video played backwards
        frames = frames[::-1]
    return np.ascontiguousarray(frames)


def write_video(path, frames: np.ndarray, fps: int = 8, codec: str = "libx264") -> None:
    """Encode (T, H, W, 3) uint8 frames with PyAV (FFmpeg bundled in the wheel), atomically."""
    import av

    container_format, pix_fmt = CODECS[codec]

    def write(tmp: str) -> None:
        with av.open(tmp, mode="w", format=container_format) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = pix_fmt
            if codec == "libx264":
                stream.options = {"crf": "18", "preset": "veryfast"}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())

    atomic_write(path, write)


def make_motion_dataset(out_dir, *, train_per_class: int = 100, val_per_class: int = 20, num_frames: int = 16,
                        size: int = 32, num_classes: int = len(CLASSES), fps: int = 8, seed: int = 0,
                        codec: str = "libx264", progress: bool = True) -> dict:
    """Write `train/`, `val/` videos, `train.txt`, `val.txt` (MMAction2 lists) and `classes.txt`.

    Returns {"root", "train_list", "val_list", "classes_file", "classes"} (paths as strings).
    The same arguments always give the same videos.
    """
    from tqdm import tqdm

    if num_classes % 2 or not 2 <= num_classes <= len(CLASSES):
        raise UserError(f"num_classes must be an even number in [2, {len(CLASSES)}], got {num_classes}")
    if codec not in CODECS:
        raise UserError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    for name, value, low in (("train_per_class", train_per_class, 1), ("val_per_class", val_per_class, 0),
                             ("num_frames", num_frames, 2), ("size", size, 16)):
        if int(value) < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if size % 2:
        raise UserError(f"size must be even (yuv420p video), got {size}")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    ext = CODECS[codec][0]
    jobs = [(split, label, i) for split, n in (("train", train_per_class), ("val", val_per_class))
            for i in range(n) for label in range(num_classes)]
    lists = {"train": [], "val": []}
    for split, label, i in tqdm(jobs, desc="synthesising videos", disable=not progress, dynamic_ncols=True):
        rel = f"{split}/{CLASSES[label].replace(' ', '_')}_{i:04d}.{ext}"
        write_video(out / rel, render(label, num_frames, size, rng), fps=fps, codec=codec)
        lists[split].append(f"{rel} {label}")
    for split, lines in lists.items():
        atomic_write_text(out / f"{split}.txt", "".join(line + "\n" for line in lines))
    atomic_write_text(out / "classes.txt", "".join(name + "\n" for name in CLASSES[:num_classes]))
    return {"root": str(out), "train_list": str(out / "train.txt"), "val_list": str(out / "val.txt"),
            "classes_file": str(out / "classes.txt"), "classes": CLASSES[:num_classes]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zeroi2v synth", description="Write synthetic motion videos "
                                     "(classes differ only in temporal order) with MMAction2 list files.")
    parser.add_argument("out_dir")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--size", type=int, default=32, help="frame height and width (even)")
    parser.add_argument("--classes", type=int, default=len(CLASSES), help="even number of classes (pairs)")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--codec", default="libx264", choices=sorted(CODECS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    info = make_motion_dataset(args.out_dir, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                               num_frames=args.frames, size=args.size, num_classes=args.classes, fps=args.fps,
                               codec=args.codec, seed=args.seed)
    print(f"wrote {args.out_dir}: {info['train_list']}, {info['val_list']}, {info['classes_file']} "
          f"({len(info['classes'])} classes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
