"""Sliding-window prediction over a long video (`zeroi2v predict RUN VIDEO --timeline`), as MMAction2's
long-video demo does it: the model classifies overlapping windows of the video, one after another.

Windows (n = the video's frame count from `zeroi2v.data.decode.num_frames`, fps its average rate):
- A window is `W` consecutive source frames. By default, dense sampling: W = model.num_frames ×
  data.frame_interval, the stretch of video one training clip covers (8×16 = 128 frames, about 4 s at
  30 fps, for the K400 recipe); uniform sampling (whose training clips spread over a whole short
  video): W = model.num_frames × 2, every other frame (16 frames for the 8-frame demo recipe, the
  length of its training videos), so that short actions are not averaged away. `window=` sets W
  (at least num_frames frames).
- The window is sampled exactly as the run samples a test clip from a video of W frames
  (`zeroi2v.data.sampling.sample_indices(W, num_frames, sampling, frame_interval, train=False)`):
  dense: num_frames frames `frame_interval` apart, centred in the window (offset (interval-1)//2);
  uniform: the middle frame of each of num_frames equal segments of the window.
  Each window is one clip; `data.test_crops` crops (1 centre or 3) are averaged, `data.test_clips`
  does not apply (the windows are the temporal views).
- Windows start at 0, stride, 2·stride, ... while they fit. A given stride (at most W) is kept
  exactly; when the last window that fits ends before the video does, one more window ending at the
  last frame is added (`tail: true`, and a note), so the tail is classified too. The default stride
  is at most W // 2 (half-window overlap), chosen so that the windows reach the end in equal steps
  when the frame count allows; the JSON's `stride` is the step between window starts.
- A video shorter than one window is still predicted: one window covers the whole video, sampled with
  the run's own test sampling of a short video (dense loops, uniform repeats frames, as in evaluation).
  The result says so (`short: true` and a `note`).
- For the annotated video, a frame shows the top-1 class (and probability) of the window whose centre
  is nearest in time to the frame.

Memory stays bounded on a long video: frames are decoded window batch by window batch
(`read_frames` seeks to each batch, `WINDOW_BATCH` windows at a time), and the annotated video is
decoded, drawn and encoded one frame at a time. Only one probability row per window is kept.

Outputs (every file through `zeroi2v.fileio.atomic_write`; an existing file is replaced only when an
earlier timeline wrote it): PREFIX.json (settings and the top-k of
each window), PREFIX.csv (one row per window and rank), PREFIX.png (class probabilities over time)
and, with `annotate=`, the video with the current label drawn on each frame (same frame count and
frame rate as the source; no audio; odd widths/heights lose their last pixel row/column, as H.264
in yuv420p needs even sizes).
"""

from __future__ import annotations

import csv
import io
import json
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from zeroi2v.build import load_pretrained
from zeroi2v.data.decode import VideoDecodeError, read_frames
from zeroi2v.data.decode import num_frames as count_frames
from zeroi2v.data.sampling import sample_indices
from zeroi2v.data.transforms import test_transform
from zeroi2v.dist import interactive, setup_distributed
from zeroi2v.errors import UserError
from zeroi2v.eval import check_device, config_for_test, inspect_video, plain_error
from zeroi2v.eval import class_names as read_classes
from zeroi2v.fileio import atomic_write, atomic_write_json, atomic_write_text, check_writable, model_files
from zeroi2v.plots import timeline_chart

WINDOW_BATCH = 8  # windows decoded and classified together (bounds the frames held in memory)
ANNOTATE_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}


# --- shared helpers (also used by zeroi2v.features) ------------------------------------------------
def data_settings(directory, overrides, model) -> dict:
    """The run's test-time data settings (from config.yaml and `--set`, as `zeroi2v eval` reads them)."""
    d = config_for_test(Path(directory), overrides, model).data
    return {
        "sampling": d.sampling,
        "frame_interval": d.frame_interval,
        "test_clips": d.test_clips,
        "test_crops": d.test_crops,
        "img_size": d.img_size,
        "mean": tuple(d.mean or model.data_config["mean"]),
        "std": tuple(d.std or model.data_config["std"]),
        "backend": d.backend,
        "root": d.root,
    }


def one_line(text) -> str:
    return " ".join(str(text).split())


def _positive_int(value, name: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        and not (isinstance(value, float) and value.is_integer())
    ):
        raise UserError(f"{name} must be a whole number of frames, got {value!r}")
    if int(value) < 1:
        raise UserError(f"{name} must be >= 1 frame, got {value}")
    return int(value)


# --- windows -----------------------------------------------------------------------------------------
UNIFORM_STEP = 2  # uniform-sampling runs: the default window is num_frames × this many source frames


def default_window(num_frames: int, sampling: str, frame_interval: int) -> int:
    """The stretch of video one window covers when `--window` is not given (module docstring)."""
    return num_frames * (frame_interval if sampling == "dense" else UNIFORM_STEP)


def _starts(n: int, span: int, stride: int | None) -> tuple[list[int], int]:
    """Window starts and the stride between them. A given stride is kept exactly (one more window ending
    at the last frame covers a tail it leaves); the default is at most half a window, chosen so that
    the windows reach the end in equal steps when the length allows."""
    if stride is None:
        half = max(1, span // 2)
        even = [s for s in range(half, max(1, half // 2) - 1, -1) if (n - span) % s == 0]
        stride = even[0] if even and n > span else half  # between W/4 and W/2, in equal steps to the end
    starts = list(range(0, n - span + 1, stride))
    if starts[-1] + span < n:
        starts.append(n - span)  # the tail
    return starts, stride


def plan_windows(
    total_frames: int,
    num_frames: int,
    sampling: str = "dense",
    frame_interval: int = 16,
    stride: int | None = None,
    window: int | None = None,
) -> dict:
    """The windows over a video of `total_frames` frames (see the module docstring).

    Returns {"window": W, "stride": S, "short": bool, "starts": (K,), "ends": (K,) exclusive,
    "tail": bool (the last window was added to reach the end, off the stride), "indices": (K, num_frames)
    source frame indices}.
    """
    n = max(1, int(total_frames))
    span = (
        _positive_int(window, "window") if window is not None else default_window(num_frames, sampling, frame_interval)
    )
    if window is not None and span < max(2, num_frames):
        raise UserError(f"--window {span}: a window must hold at least the model's {max(2, num_frames)} frames")
    if stride is not None and _positive_int(stride, "stride") > span:
        raise UserError(
            f"--stride {stride} is longer than the window ({span} frames): frames between windows would be skipped"
        )
    if n < span:  # one window over the whole (short) video, the run's own short-video sampling
        local = sample_indices(n, num_frames, sampling, frame_interval, 1, train=False)
        step = stride if stride is not None else max(1, span // 2)
        return {
            "window": span,
            "stride": step,
            "short": True,
            "tail": False,
            "starts": np.array([0]),
            "ends": np.array([n]),
            "indices": local.astype(np.int64),
        }
    starts, step = _starts(n, span, stride)
    tail = len(starts) > 1 and starts[-1] - starts[-2] != step
    starts = np.array(starts, dtype=np.int64)
    local = sample_indices(span, num_frames, sampling, frame_interval, 1, train=False)[0]
    return {
        "window": span,
        "stride": step,
        "short": False,
        "tail": tail,
        "starts": starts,
        "ends": starts + span,
        "indices": starts[:, None] + local[None, :],
    }


def _video_info(path) -> dict:
    try:
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            return {
                "fps": float(rate) if rate else 0.0,
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
            }
    except Exception as e:  # noqa: BLE001 - num_frames has already opened it; anything here is unusual
        raise UserError(f"cannot read {path}: {plain_error(e, path)}") from None


# --- outputs: only our own earlier outputs are replaced ---------------------------------------------
TIMELINE_FORMAT = "zeroi2v-timeline"
CSV_HEADER = ["window", "start_frame", "end_frame", "start_s", "end_s", "rank", "class_id", "class", "probability"]


def _ours(path: Path, ext: str, json_ours: bool) -> bool:
    """Whether an existing output file is one a timeline wrote (JSON: its keys; CSV: its header; PNG:
    beside our JSON; a video: the comment we put in its metadata)."""
    try:
        if ext == "json":
            saved = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(saved, dict) and (
                saved.get("format") == TIMELINE_FORMAT or {"windows", "window", "stride", "video"} <= set(saved)
            )
        if ext == "csv":
            with open(path, encoding="utf-8") as f:
                return f.readline().strip() == ",".join(CSV_HEADER)
        if ext == "png":
            return json_ours
        with av.open(os.fspath(path)) as container:
            return container.metadata.get("comment") == TIMELINE_FORMAT
    except (OSError, ValueError, av.error.FFmpegError):
        return False


def check_outputs(video: Path, directory, out_prefix, annotate) -> dict:
    """The output paths, checked before any work: writable, never an input, and an existing file only
    if an earlier timeline wrote it (the user's own notes.json or clip.mp4 are left alone)."""
    prefix = Path(out_prefix) if out_prefix is not None else Path.cwd() / f"{video.stem}.timeline"
    inputs = [video] + model_files(directory)
    paths = {
        ext: check_writable(prefix.with_name(prefix.name + "." + ext), "timeline output", inputs)
        for ext in ("json", "csv", "png")
    }
    if annotate is not None:
        paths["annotate"] = check_writable(annotate, "--annotate", inputs)
        if paths["annotate"].suffix.lower() not in ANNOTATE_FORMATS:
            raise UserError(
                f"--annotate {paths['annotate']}: the annotated video is written as "
                f"{', '.join(ANNOTATE_FORMATS)}; got {paths['annotate'].suffix or 'no extension'}"
            )
    json_ours = paths["json"].is_file() and _ours(paths["json"], "json", False)
    foreign = [str(p) for ext, p in paths.items() if p.exists() and not _ours(p, ext, json_ours)]
    if foreign:
        raise UserError(
            f"{', '.join(foreign)} already exist{'s' if len(foreign) == 1 else ''} and "
            f"{'is' if len(foreign) == 1 else 'are'} not an earlier timeline output; refusing to overwrite: "
            "choose another --out / --annotate"
        )
    return paths


# --- the verb ----------------------------------------------------------------------------------------
def _classify(model, video, plan, s, dev, show) -> np.ndarray:
    """(K, C) class probabilities of the windows, decoded and classified WINDOW_BATCH windows at a time."""
    transform = test_transform(s["img_size"], s["mean"], s["std"], crops=s["test_crops"])
    indices = plan["indices"]
    probs = np.zeros((len(indices), model.num_classes), dtype=np.float32)
    bar = tqdm(total=len(indices), desc="timeline", unit="window", disable=not show, dynamic_ncols=True)
    for first in range(0, len(indices), WINDOW_BATCH):
        batch = indices[first : first + WINDOW_BATCH]
        wanted, where = np.unique(batch.ravel(), return_inverse=True)
        try:
            frames = read_frames(video, wanted, s["backend"])  # (U, H, W, 3) uint8, only this batch's frames
        except VideoDecodeError as e:
            raise UserError(f"cannot read {video}: {plain_error(e, video)}") from None
        frames = frames[torch.from_numpy(where.reshape(batch.shape))].permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
        clips = torch.stack([transform(clip) for clip in frames])  # (B, crops, 3, T, h, w)
        B, V = clips.shape[:2]
        logits = model(clips.flatten(0, 1).to(dev)).float()
        probs[first : first + B] = logits.softmax(-1).view(B, V, -1).mean(1).cpu().numpy()
        bar.update(B)
    bar.close()
    return probs


def _windows(plan, probs, classes, fps, topk) -> list[dict]:
    k = min(topk, probs.shape[1])
    last = len(plan["starts"]) - 1
    windows = []
    for i, (start, end) in enumerate(zip(plan["starts"].tolist(), plan["ends"].tolist(), strict=False)):
        order = np.argsort(-probs[i], kind="stable")[:k]
        windows.append(
            {
                "index": i,
                "start_frame": start,
                "end_frame": end,
                "start_s": start / fps,
                "end_s": end / fps,
                "center_s": (start + end) / 2 / fps,
                "tail": bool(plan["tail"] and i == last),
                "frames": plan["indices"][i].tolist(),
                "top": [{"class_id": int(c), "class": classes[c], "probability": float(probs[i, c])} for c in order],
            }
        )
    return windows


def _note(plan, total: int, sampling: str) -> str | None:
    if plan["short"]:
        return (
            f"the video has {total} frames, fewer than one window ({plan['window']}): one window over the "
            f"whole video, frames {'looped' if sampling == 'dense' else 'repeated'} as in evaluation"
        )
    if plan["tail"]:
        return (
            f"windows every {plan['stride']} frames; the last one starts at frame {int(plan['starts'][-1])} "
            "so that it ends with the video"
        )
    return None


@torch.no_grad()
def timeline(
    directory,
    video,
    *,
    stride: int | None = None,
    window: int | None = None,
    topk: int = 5,
    out_prefix=None,
    annotate=None,
    overrides=(),
    device=None,
    progress: bool | None = None,
) -> dict:
    """Classify sliding windows of `video` with the model in `directory`; write PREFIX.json/.csv/.png
    (PREFIX defaults to ./<video stem>.timeline) and, with `annotate`, the labelled video.

    Returns {"video", "fps", "frames", "duration_s", "window", "stride", "sampling", "frame_interval",
    "num_frames", "short", "note", "windows": [{"index", "start_frame", "end_frame", "start_s", "end_s",
    "center_s", "tail", "frames", "top": [{"class_id", "class", "probability"}]}], "probs": (K, C) array,
    "paths": {"json", "csv", "png", "annotate"}}.
    """
    video = Path(video)
    topk = _positive_int(topk, "topk")
    stride = _positive_int(stride, "--stride") if stride is not None else None
    window = _positive_int(window, "--window") if window is not None else None
    check_device(device)
    if not video.is_file():
        raise UserError(f"{video} is a directory, not a video file" if video.is_dir() else f"no such video: {video}")
    paths = check_outputs(video, directory, out_prefix, annotate)
    model = load_pretrained(directory)
    if model.num_classes < 1:
        raise UserError(f"{directory} has no classifier (num_classes=0); use `zeroi2v features` for its features")
    s = data_settings(directory, overrides, model)
    classes = read_classes(directory, model.num_classes)
    error, _ = inspect_video(video, s["backend"])
    if error:
        raise UserError(f"{video}: {error}")
    try:
        total = count_frames(video, s["backend"])
    except VideoDecodeError as e:
        raise UserError(f"cannot read {video}: {plain_error(e, video)}") from None
    fps = _video_info(video)["fps"] or 1.0
    plan = plan_windows(total, model.num_frames, s["sampling"], s["frame_interval"], stride, window)
    dev = setup_distributed(device)[2]
    show = interactive() if progress is None else progress
    probs = _classify(model.to(dev), video, plan, s, dev, show)
    windows = _windows(plan, probs, classes, fps, topk)
    result = {
        "format": TIMELINE_FORMAT,
        "video": str(video),
        "model": str(directory),
        "fps": fps,
        "frames": int(total),
        "duration_s": total / fps,
        "num_frames": model.num_frames,
        "sampling": s["sampling"],
        "frame_interval": s["frame_interval"],
        "test_crops": s["test_crops"],
        "window": plan["window"],
        "stride": plan["stride"],
        "window_s": plan["window"] / fps,
        "stride_s": plan["stride"] / fps,
        "short": plan["short"],
        "note": _note(plan, total, s["sampling"]),
        "windows": windows,
    }
    atomic_write_json(paths["json"], result)
    atomic_write_text(paths["csv"], _csv(windows))
    atomic_write(paths["png"], lambda tmp: timeline_chart(result, probs, classes, tmp))
    if annotate is not None:
        _annotate(video, paths["annotate"], result, probs, classes, show)
    return {**result, "probs": probs, "paths": {key: str(p) for key, p in paths.items()}}


def _csv(windows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for w in windows:
        for rank, top in enumerate(w["top"], start=1):
            writer.writerow(
                [
                    w["index"],
                    w["start_frame"],
                    w["end_frame"],
                    f"{w['start_s']:.3f}",
                    f"{w['end_s']:.3f}",
                    rank,
                    top["class_id"],
                    top["class"],
                    f"{top['probability']:.6f}",
                ]
            )
    return buffer.getvalue()


# --- annotated video ---------------------------------------------------------------------------------
def _font(height: int):

    size = max(8, height // 16)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _encoder():
    for codec in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(codec, "w")
            return codec
        except Exception:  # noqa: BLE001 - not built into this FFmpeg
            continue
    raise UserError("no H.264 or MPEG-4 encoder in this PyAV/FFmpeg build; cannot write --annotate")


def _annotate(video: Path, out: Path, result: dict, probs: np.ndarray, classes: list[str], show: bool) -> None:
    """Decode, draw the nearest window's top-1 label, encode; one frame in memory at a time."""
    centres = np.array([w["center_s"] for w in result["windows"]])
    top1 = probs.argmax(1)
    labels = [f"{classes[c]} {probs[i, c]:.2f}" for i, c in enumerate(top1.tolist())]
    fps = Fraction(result["fps"]).limit_denominator(100000) if result["fps"] else Fraction(25)
    fmt = ANNOTATE_FORMATS[out.suffix.lower()]

    def write(tmp: str) -> None:
        reformatter = VideoReformatter()
        with av.open(str(video)) as src, av.open(tmp, mode="w", format=fmt) as dst:
            dst.metadata["comment"] = TIMELINE_FORMAT  # marks the file as ours: a rerun may replace it
            sin = src.streams.video[0]
            sin.thread_type = "AUTO"
            rate = sin.average_rate or sin.guessed_rate or sin.base_rate
            rate = Fraction(rate) if rate else fps
            codec = _encoder()
            sout = dst.add_stream(codec, rate=rate)
            width, height = sin.codec_context.width // 2 * 2, sin.codec_context.height // 2 * 2
            if width < 2 or height < 2:
                raise UserError(
                    f"{video}: frames of {sin.codec_context.width}x{sin.codec_context.height} are too small to encode"
                )
            sout.width, sout.height, sout.pix_fmt = width, height, "yuv420p"
            if codec == "libx264":
                sout.options = {"crf": "18", "preset": "veryfast"}
            font = _font(height)
            bar = tqdm(total=result["frames"], desc="annotating", unit="frame", disable=not show, dynamic_ncols=True)
            count = 0
            try:
                for frame in src.decode(sin):
                    t = float(frame.time) if frame.time is not None else count / float(rate)
                    window = int(np.argmin(np.abs(centres - t)))  # nearest centre; ties go to the earlier window
                    rgb = reformatter.reformat(frame, format="rgb24").to_ndarray()[:height, :width]
                    image = Image.fromarray(np.ascontiguousarray(rgb))
                    _draw_label(ImageDraw.Draw(image), labels[window], font, height)
                    out_frame = av.VideoFrame.from_image(image)
                    out_frame.pts, out_frame.time_base = count, 1 / rate
                    for packet in sout.encode(out_frame):
                        dst.mux(packet)
                    count += 1
                    bar.update(1)
            except (av.error.FFmpegError, av.error.InvalidDataError):  # a damaged tail ends the video
                if count == 0:
                    raise
            bar.close()
            for packet in sout.encode():
                dst.mux(packet)

    try:
        atomic_write(out, write)
    except av.error.FFmpegError as e:
        raise UserError(f"cannot annotate {video} into {out}: {one_line(e)}") from None


def _draw_label(draw, text: str, font, height: int) -> None:
    pad = max(1, height // 60)
    left, top, right, bottom = draw.textbbox((pad, pad), text, font=font)
    draw.rectangle((0, 0, right + pad, bottom + pad), fill=(0, 0, 0))
    draw.text((pad, pad), text, fill=(255, 255, 255), font=font)
