"""Synthetic motion videos whose classes differ only in temporal order.

Each class pair is one motion and its time reversal (moving up / down, left / right, growing /
shrinking, brightening / darkening), with randomised appearance: shape, colours, textured background,
start position, speed. The set of frames of a "moving up" video is exactly the set of frames of some
"moving down" video, so any model that pools frames without order (frame averaging) is at chance
within a pair (~50% overall); a model that sees order can be perfect. The files are real videos
(H.264 in MP4 by default) written with PyAV, with MMAction2 list files, so they go through the
normal pipeline.

    zeroi2v synth OUT_DIR --train-per-class 40 --val-per-class 10
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CLASSES = ["moving up", "moving down", "moving left", "moving right", "growing", "shrinking",
           "brightening", "darkening"]


def scene(rng: np.random.Generator, size: int) -> dict:
    """Random appearance: background colour and texture, object colour (contrasting)."""
    background = rng.integers(0, 256, 3).astype(np.float32)
    texture = rng.normal(0, 18, (size // 4 + 1, size // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:size, :size]
    color = rng.integers(0, 256, 3).astype(np.float32)
    while np.abs(color - background).sum() < 200:
        color = rng.integers(0, 256, 3).astype(np.float32)
    return {"background": background, "texture": texture.astype(np.float32), "color": color}


def draw_frame(rng: np.random.Generator | None, size: int, *, shape: int, x: float, y: float, radius: float,
               gain: float = 1.0, look: dict | None = None) -> np.ndarray:
    """One (size, size, 3) uint8 frame: a square (0), disc (1) or diamond (2) on a textured background."""
    look = look or scene(rng, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if shape == 0:
        mask = (np.abs(xx - x) < radius) & (np.abs(yy - y) < radius)
    elif shape == 1:
        mask = (xx - x) ** 2 + (yy - y) ** 2 < radius ** 2
    else:
        mask = np.abs(xx - x) + np.abs(yy - y) < 1.3 * radius
    frame = np.broadcast_to(look["background"], (size, size, 3)) + look["texture"]
    frame = np.where(mask[..., None], np.clip(look["color"] * gain, 0, 255), frame)
    return np.clip(frame, 0, 255).astype(np.uint8)


def render(label: int, num_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 frames of one random video of class `label`."""
    pair, reverse = divmod(label, 2)
    look = scene(rng, size)
    shape = int(rng.integers(3))  # square, disc, diamond
    radius = rng.uniform(0.12, 0.2) * size
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    travel = rng.uniform(0.3, 0.45) * size
    frames = []
    for t in np.linspace(-0.5, 0.5, num_frames):
        r, x, y, gain = radius, cx, cy, 1.0
        if pair == 0:
            y = cy + travel * t
        elif pair == 1:
            x = cx + travel * t
        elif pair == 2:
            r = radius * (1.0 + 1.2 * (t + 0.5))
        else:
            gain = 0.35 + 1.3 * (t + 0.5)
        frames.append(draw_frame(None, size, shape=shape, x=x, y=y, radius=r, gain=gain, look=look))
    frames = np.stack(frames)
    if reverse:  # the odd class of a pair is the same motion played backwards
        frames = frames[::-1]
    return np.ascontiguousarray(frames)


def write_video(path, frames: np.ndarray, fps: int = 8, codec: str = "libx264") -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_motion_dataset(out_dir, *, train_per_class: int = 40, val_per_class: int = 10, num_frames: int = 16,
                        size: int = 32, num_classes: int = len(CLASSES), fps: int = 8, seed: int = 0,
                        codec: str = "libx264", progress: bool = True) -> dict:
    """Write `train/`, `val/` videos, `train.txt`, `val.txt` (MMAction2 lists) and `classes.txt`."""
    from tqdm import tqdm

    if num_classes % 2 or not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be an even number in [2, {len(CLASSES)}]")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    ext = ".avi" if codec == "mjpeg" else ".mp4"
    jobs = [(split, label, i) for split, n in (("train", train_per_class), ("val", val_per_class))
            for label in range(num_classes) for i in range(n)]
    lists = {"train": [], "val": []}
    for split, label, i in tqdm(jobs, desc="synthesising videos", disable=not progress, leave=False):
        rel = f"{split}/{CLASSES[label].replace(' ', '_')}_{i:04d}{ext}"
        (out / split).mkdir(parents=True, exist_ok=True)
        write_video(out / rel, render(label, num_frames, size, rng), fps=fps, codec=codec)
        lists[split].append(f"{rel} {label}")
    for split, lines in lists.items():
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (out / "classes.txt").write_text("\n".join(CLASSES[:num_classes]) + "\n")
    return {"root": str(out), "train_list": str(out / "train.txt"), "val_list": str(out / "val.txt"),
            "classes": CLASSES[:num_classes]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zeroi2v synth", description="Write synthetic motion videos "
                                     "(classes differ only in temporal order) with MMAction2 list files.")
    parser.add_argument("out_dir")
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--size", type=int, default=32, help="frame height and width")
    parser.add_argument("--classes", type=int, default=len(CLASSES), help="even number of classes (pairs)")
    parser.add_argument("--codec", default="libx264", choices=["libx264", "mpeg4", "mjpeg", "libvpx-vp9"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    info = make_motion_dataset(args.out_dir, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                               num_frames=args.frames, size=args.size, num_classes=args.classes,
                               codec=args.codec, seed=args.seed)
    print(f"wrote {args.out_dir}: train list {info['train_list']}, val list {info['val_list']}, "
          f"{len(info['classes'])} classes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
