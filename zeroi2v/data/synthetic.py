"""Synthetic motion videos whose classes differ only in temporal order.

Each class pair is one change and its time reversal, with randomised appearance, so the set of frames
of a video of one class is exactly the set of frames of some video of its partner class: any model
that pools frames without order (frame averaging) is at chance within a pair (~50% overall), a model
that sees order can be perfect. Two families with different statistics:

- `basic` (the demo's): moving up / down, left / right, growing / shrinking, brightening / darkening
  of a square, disc or diamond on a blocky textured background.
- `complex`: rotating clockwise / counter-clockwise (shapes with no rotational symmetry), moving
  diagonally (up and left / down and right, up and right / down and left), approaching / receding
  (the camera zooms into a textured scene: background, distractors and object all scale), with
  static distractor shapes, multi-scale texture and per-frame pixel noise by default.

Directions are screen directions: image rows grow downward, so "moving up" is toward the top edge
(the object's row decreases), "moving left" toward the left edge, "clockwise" as seen on screen.

Resolution, clip length, speed, pixel noise, shape set and codec (MP4 / AVI / WebM, or a mix of MP4
and AVI) are arguments, so the same tool emulates data nobody tuned on. The files are real videos
written with PyAV, with MMAction2 list files, so they go through the normal pipeline. The still-image
pretraining of the demo backbone (`zeroi2v.pretrain`) draws stills from these renderers (the basic
shapes, and the complex family's pointers at random headings), so the image model has seen this visual
world, never its motion; the `--shapes all` extras (triangle, ring, cross) it never saw.

    zeroi2v synth OUT_DIR --train-per-class 100 --val-per-class 20
    zeroi2v synth OUT_DIR --family complex --frames 16 --size 48 --codec mixed --noise 6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from zeroi2v.dist import interactive
from zeroi2v.errors import UserError
from zeroi2v.fileio import atomic_write, atomic_write_json, atomic_write_text

FAMILIES = {
    "basic": [
        "moving up",
        "moving down",
        "moving left",
        "moving right",
        "growing",
        "shrinking",
        "brightening",
        "darkening",
    ],
    "complex": [
        "rotating clockwise",
        "rotating counter-clockwise",
        "moving up and left",
        "moving down and right",
        "moving up and right",
        "moving down and left",
        "approaching",
        "receding",
    ],
}
CLASSES = FAMILIES["basic"]
SHAPES = ("square", "disc", "diamond")  # the pretraining's shapes (its shape target has these classes)
EXTRA_SHAPES = ("triangle", "ring", "cross")  # `shapes="all"`: shapes the backbone never saw
POINTERS = ("arrow", "key", "ell")  # no rotational symmetry: the complex family's rotating shapes
CODECS = {
    "libx264": ("mp4", "yuv420p"),
    "mpeg4": ("mp4", "yuv420p"),
    "mjpeg": ("avi", "yuvj420p"),
    "libvpx-vp9": ("webm", "yuv420p"),
}
MIXED = ("libx264", "mjpeg")  # codec="mixed": MP4 and AVI files alternate


def scene(rng: np.random.Generator, size: int) -> dict:
    """Random appearance: background colour with blocky texture, and an object colour that contrasts."""
    background = rng.integers(0, 256, 3).astype(np.float32)
    texture = rng.normal(0, 18, (size // 4 + 1, size // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:size, :size]
    color = rng.integers(0, 256, 3).astype(np.float32)
    while np.abs(color - background).sum() < 200:
        color = rng.integers(0, 256, 3).astype(np.float32)
    return {"background": background, "texture": texture.astype(np.float32), "color": color}


def object_mask(size: int, shape: int, x: float, y: float, radius: float) -> np.ndarray:
    """(size, size) bool mask of a square (0), disc (1), diamond (2), triangle (3), ring (4) or cross (5)
    centred at (x, y) in pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xx - x, yy - y
    if shape == 0:
        return (np.abs(dx) < radius) & (np.abs(dy) < radius)
    if shape == 1:
        return dx**2 + dy**2 < radius**2
    if shape == 2:
        return np.abs(dx) + np.abs(dy) < 1.3 * radius
    if shape == 3:  # apex up: |dx| grows toward the base
        return (dy < 0.8 * radius) & (np.abs(dx) < 0.6 * (dy + 1.1 * radius))
    if shape == 4:
        d2 = dx**2 + dy**2
        return (d2 < radius**2) & (d2 > (0.5 * radius) ** 2)
    return ((np.abs(dx) < radius) & (np.abs(dy) < 0.35 * radius)) | (
        (np.abs(dy) < radius) & (np.abs(dx) < 0.35 * radius)
    )


def pointer_mask(u: np.ndarray, v: np.ndarray, kind: int, radius: float) -> np.ndarray:
    """Mask in object coordinates (u along the shape's heading): shapes that look different after any
    rotation below 360 degrees, so the sense of a rotation is visible."""
    if kind == 0:  # arrow: a long isosceles triangle pointing along +u
        return (u > -radius) & (u < radius) & (np.abs(v) < 0.45 * (radius - u))
    if kind == 1:  # key: a bar with a disc at its +u end
        return ((np.abs(v) < 0.22 * radius) & (np.abs(u) < radius)) | ((u - radius) ** 2 + v**2 < (0.45 * radius) ** 2)
    return ((np.abs(v) < 0.25 * radius) & (u > -radius) & (u < radius)) | (  # ell
        (u > -radius) & (u < -0.5 * radius) & (v > -0.25 * radius) & (v < 0.9 * radius)
    )


def heading_mask(size: int, kind: int, x: float, y: float, radius: float, angle: float) -> np.ndarray:
    """(size, size) bool mask of pointer `kind` centred at (x, y), heading `angle` radians (clockwise on
    screen from the +x axis, since rows grow downward)."""
    py, px = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    u = (px - x) * np.cos(angle) + (py - y) * np.sin(angle)
    v = -(px - x) * np.sin(angle) + (py - y) * np.cos(angle)
    return pointer_mask(u, v, kind, radius)


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


def render(
    label: int,
    num_frames: int,
    size: int,
    rng: np.random.Generator,
    *,
    family: str = "basic",
    speed: float = 1.0,
    noise: float = 0.0,
    shapes: str = "basic",
) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 frames of one random video of class `label` of `family`.

    `speed` scales how far things move / turn / zoom over the clip (1: the defaults below); `noise` is
    the standard deviation of per-frame Gaussian pixel noise (0-255 scale); `shapes="all"` adds shapes
    the demo backbone never saw (basic family). The odd class of a pair is the even one played backwards.
    """
    if family not in FAMILIES:
        raise UserError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    render_family = _render_basic if family == "basic" else _render_complex
    pair, reverse = divmod(label, 2)
    frames = render_family(pair, num_frames, size, rng, speed, shapes)
    if noise > 0:
        frames = np.clip(frames + rng.normal(0, noise, frames.shape), 0, 255).astype(np.uint8)
    if reverse:
        frames = frames[::-1]
    return np.ascontiguousarray(frames)


def _render_basic(
    pair: int, num_frames: int, size: int, rng: np.random.Generator, speed: float, shapes: str
) -> np.ndarray:
    """Movements cover about half the frame, so that neighbouring frames of an 8-frame clip differ by a
    few pixels, a distance a patch-8 ViT can see."""
    look = scene(rng, size)
    shape = int(rng.integers(len(SHAPES) + (len(EXTRA_SHAPES) if shapes == "all" else 0)))
    radius = rng.uniform(0.12, 0.2) * size
    travel = min(0.8, rng.uniform(0.45, 0.65) * speed) * size
    along = rng.uniform(0.1 * size + travel / 2, 0.9 * size - travel / 2)  # mid-point of the movement
    across = rng.uniform(0.25, 0.75) * size
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    start_level = rng.uniform(0.0, 0.15)
    growth = 1.2 * min(2.0, speed)
    frames = []
    for t in np.linspace(0.0, 1.0, num_frames):
        x, y, r, level = cx, cy, radius, 0.5
        if pair == 0:  # moving up: toward the top edge, the row decreases
            x, y = across, along - travel * (t - 0.5)
        elif pair == 1:  # moving left: toward the left edge, the column decreases
            x, y = along - travel * (t - 0.5), across
        elif pair == 2:
            r = radius * (1.0 + growth * t)
        else:
            level = start_level + (0.85 - start_level) * t
        frames.append(draw_frame(look, object_mask(size, shape, x, y, r), level))
    return np.stack(frames)


def multiscale_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 1) multi-scale blocky texture (blocks of 2, 4 and 8 pixels)."""
    out = np.zeros((size, size, 1), np.float32)
    for block, amp in ((2, 8.0), (4, 12.0), (8, 14.0)):
        n = size // block + 1
        out += rng.normal(0, amp, (n, n, 1)).repeat(block, 0).repeat(block, 1)[:size, :size].astype(np.float32)
    return out


def _render_complex(
    pair: int, num_frames: int, size: int, rng: np.random.Generator, speed: float, shapes: str
) -> np.ndarray:
    """Rotation, diagonal motion or a zoom, on a world drawn at 2x resolution and sampled per frame."""
    look = scene(rng, size)
    world_size = 2 * size  # the world is drawn at twice the frame's resolution (the zoom samples it)
    texture = multiscale_texture(rng, world_size)
    background = np.broadcast_to(look["background"], (world_size, world_size, 3)) + texture
    for _ in range(int(rng.integers(1, 3))):  # static distractors in their own colours
        mask = object_mask(
            world_size,
            int(rng.integers(len(SHAPES) + len(EXTRA_SHAPES))),
            *(rng.uniform(0.1, 0.9, 2) * world_size),
            rng.uniform(0.06, 0.12) * world_size,
        )
        background = np.where(mask[..., None], rng.integers(0, 256, 3).astype(np.float32), background)
    color = look["color"]
    radius = rng.uniform(0.16, 0.26) * size
    kind = int(rng.integers(len(POINTERS)))
    frames = []
    if pair == 3:  # approaching: the camera zooms in about a random point; the object sits near it
        cx, cy = rng.uniform(0.35, 0.65, 2) * size
        obj = object_mask(
            world_size,
            int(rng.integers(len(SHAPES))),
            2 * (cx + rng.uniform(-0.1, 0.1) * size),
            2 * (cy + rng.uniform(-0.1, 0.1) * size),
            2 * radius * 0.7,
        )
        world = np.where(obj[..., None], color, background)
        zoom = 1.0 + min(2.0, rng.uniform(0.7, 1.2) * speed)
        py, px = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        for t in np.linspace(0.0, 1.0, num_frames):
            s = zoom**t  # geometric: the same relative change per frame
            sy, sx = cy + (py - cy) / s, cx + (px - cx) / s  # frame pixel -> world point (frame units)
            iy = np.clip((sy * 2).astype(int), 0, world_size - 1)
            ix = np.clip((sx * 2).astype(int), 0, world_size - 1)
            frames.append(world[iy, ix])
        return np.clip(np.stack(frames), 0, 255).astype(np.uint8)
    base = np.clip(background[::2, ::2] * 0.5 + background[1::2, 1::2] * 0.5, 0, 255)  # the world at frame size
    if pair == 0:  # rotating clockwise (on screen, rows down): the heading angle increases
        cx, cy = rng.uniform(0.3, 0.7, 2) * size
        start = rng.uniform(0, 2 * np.pi)
        turn = np.deg2rad(min(300.0, rng.uniform(120, 200) * speed))
        for t in np.linspace(0.0, 1.0, num_frames):
            mask = heading_mask(size, kind, cx, cy, radius, start + turn * t)
            frames.append(np.where(mask[..., None], color, base))
        return np.clip(np.stack(frames), 0, 255).astype(np.uint8)
    # diagonal: pair 1 up and left (both coordinates decrease), pair 2 up and right
    travel = min(0.6, rng.uniform(0.3, 0.45) * speed) * size  # per axis
    mid = rng.uniform(0.15 * size + travel / 2, 0.85 * size - travel / 2, 2)
    shape = int(rng.integers(len(SHAPES) + len(EXTRA_SHAPES)))
    sign_x = -1.0 if pair == 1 else 1.0
    for t in np.linspace(0.0, 1.0, num_frames):
        x, y = mid[0] + sign_x * travel * (t - 0.5), mid[1] - travel * (t - 0.5)
        frames.append(np.where(object_mask(size, shape, x, y, radius * 0.8)[..., None], color, base))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


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


def _check_settings(
    family, num_classes, codec, shapes, train_per_class, val_per_class, num_frames, size, speed, noise
) -> float:
    """One-line errors for impossible settings; the noise level (None: the family's default)."""
    if family not in FAMILIES:
        raise UserError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    if num_classes % 2 or not 2 <= num_classes <= len(FAMILIES[family]):
        raise UserError(f"num_classes must be an even number in [2, {len(FAMILIES[family])}], got {num_classes}")
    if codec not in CODECS and codec != "mixed":
        raise UserError(f"codec must be one of {sorted(CODECS) + ['mixed']}, got {codec!r}")
    if shapes not in ("basic", "all"):
        raise UserError(f"shapes must be 'basic' or 'all', got {shapes!r}")
    noise = (0.0 if family == "basic" else 4.0) if noise is None else float(noise)
    for name, value, low in (
        ("train_per_class", train_per_class, 1),
        ("val_per_class", val_per_class, 0),
        ("num_frames", num_frames, 2),
        ("size", size, 16),
    ):
        if int(value) < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if size % 2:
        raise UserError(f"size must be even (yuv420p video), got {size}")
    if not 0 < speed <= 4 or not 0 <= noise <= 64:
        raise UserError(f"speed must be in (0, 4] and noise in [0, 64], got {speed}, {noise}")
    return noise


def _refuse_foreign_lists(out: Path, force: bool) -> None:
    """A folder whose annotation lists zeroi2v synth did not write is never overwritten (unless `force`)."""
    theirs = [name for name in ("train.txt", "val.txt", "classes.txt") if (out / name).exists()]
    if theirs and not force and not (out / "synth.json").is_file():
        raise UserError(
            f"{out} holds {', '.join(theirs)} that zeroi2v synth did not write; refusing to overwrite "
            "them (choose a new or empty folder; zeroi2v synth --force overwrites them)"
        )


def make_motion_dataset(
    out_dir,
    *,
    train_per_class: int = 100,
    val_per_class: int = 20,
    num_frames: int = 16,
    size: int = 32,
    num_classes: int = len(CLASSES),
    fps: int = 8,
    seed: int = 0,
    codec: str = "libx264",
    family: str = "basic",
    speed: float = 1.0,
    noise: float | None = None,
    shapes: str = "basic",
    progress: bool | None = None,
    force: bool = False,
) -> dict:
    """Write `train/`, `val/` videos, `train.txt`, `val.txt` (MMAction2 lists) and `classes.txt`.

    `synth.json` records the arguments. A folder whose lists this function did not write (a real
    dataset's, given by mistake) is refused unless `force`: its annotations are never overwritten.

    `codec="mixed"` alternates MP4 (H.264) and AVI (MJPEG) files. `noise=None`: 0 for the basic
    family, 4 for the complex one. Returns {"root", "train_list", "val_list", "classes_file", "classes"}
    (paths as strings). The same arguments always give the same videos. `progress=None`: a bar only
    on a terminal.
    """
    progress = interactive() if progress is None else progress
    noise = _check_settings(
        family, num_classes, codec, shapes, train_per_class, val_per_class, num_frames, size, speed, noise
    )
    names = FAMILIES[family]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    _refuse_foreign_lists(out, force)
    settings = dict(
        family=family,
        train_per_class=int(train_per_class),
        val_per_class=int(val_per_class),
        num_frames=int(num_frames),
        size=int(size),
        num_classes=int(num_classes),
        fps=int(fps),
        codec=codec,
        speed=float(speed),
        noise=noise,
        shapes=shapes,
        seed=int(seed),
    )
    rng = np.random.default_rng(seed)
    jobs = [
        (split, label, i)
        for split, n in (("train", train_per_class), ("val", val_per_class))
        for i in range(n)
        for label in range(num_classes)
    ]
    lists = {"train": [], "val": []}
    for k, (split, label, i) in enumerate(
        tqdm(jobs, desc="synthesising videos", disable=not progress, dynamic_ncols=True)
    ):
        video_codec = MIXED[k % 2] if codec == "mixed" else codec
        rel = f"{split}/{names[label].replace(' ', '_')}_{i:04d}.{CODECS[video_codec][0]}"
        frames = render(label, num_frames, size, rng, family=family, speed=speed, noise=noise, shapes=shapes)
        write_video(out / rel, frames, fps=fps, codec=video_codec)
        lists[split].append(f"{rel} {label}")
    for split, lines in lists.items():
        atomic_write_text(out / f"{split}.txt", "".join(line + "\n" for line in lines))
    atomic_write_text(out / "classes.txt", "".join(name + "\n" for name in names[:num_classes]))
    atomic_write_json(out / "synth.json", {"written_by": "zeroi2v synth", **settings})
    return {
        "root": str(out),
        "train_list": str(out / "train.txt"),
        "val_list": str(out / "val.txt"),
        "classes_file": str(out / "classes.txt"),
        "classes": names[:num_classes],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="zeroi2v synth",
        description="Write synthetic motion videos (classes differ only in temporal order) with MMAction2 list files.",
    )
    parser.add_argument("out_dir", help="folder for the videos, train.txt, val.txt and classes.txt")
    parser.add_argument(
        "--family",
        default="basic",
        choices=sorted(FAMILIES),
        help="basic: up/down, left/right, grow/shrink, brighten/darken (the demo's); complex: "
        "rotation, diagonal motion, approach/recede with distractors and noise (default: %(default)s)",
    )
    parser.add_argument("--train-per-class", type=int, default=100, help="(default: %(default)s)")
    parser.add_argument("--val-per-class", type=int, default=20, help="(default: %(default)s)")
    parser.add_argument("--frames", type=int, default=16, help="frames per video (default: %(default)s)")
    parser.add_argument("--size", type=int, default=32, help="frame height and width, even (default: %(default)s)")
    parser.add_argument(
        "--classes", type=int, default=8, help="even number of classes, in pairs (default: %(default)s)"
    )
    parser.add_argument("--fps", type=int, default=8, help="(default: %(default)s)")
    parser.add_argument(
        "--codec",
        default="libx264",
        choices=sorted(CODECS) + ["mixed"],
        help="mixed: MP4 (H.264) and AVI (MJPEG) files alternate (default: %(default)s)",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="scale of movement / rotation / zoom per clip (default: %(default)s)"
    )
    parser.add_argument(
        "--noise", type=float, default=None, help="per-frame pixel noise std, 0-255 (default: 0 basic, 4 complex)"
    )
    parser.add_argument(
        "--shapes",
        default="basic",
        choices=("basic", "all"),
        help="all: also shapes the demo backbone never saw (triangle, ring, cross) (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite train.txt / val.txt / classes.txt that zeroi2v synth did not write",
    )
    args = parser.parse_args(argv)
    info = make_motion_dataset(
        args.out_dir,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        num_frames=args.frames,
        size=args.size,
        num_classes=args.classes,
        fps=args.fps,
        codec=args.codec,
        family=args.family,
        speed=args.speed,
        noise=args.noise,
        shapes=args.shapes,
        seed=args.seed,
        force=args.force,
    )
    print(
        f"wrote {args.out_dir}: {info['train_list']}, {info['val_list']}, {info['classes_file']} "
        f"({len(info['classes'])} classes)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
