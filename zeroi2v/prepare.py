"""`zeroi2v prepare`: a fast-loading copy of a video dataset, as JPEG frames or short-GOP H.264 videos.

Decoding a source video costs most of a training clip's CPU time: a dense 8x16 clip decodes the
frames between its sampled ones, and at the source resolution. The copy stores frames at the short
side the training pipeline resizes to anyway, either as one JPEG per frame (MMAction2's rawframe
layout: `frame_dir/img_00001.jpg`, ...; a clip decodes exactly its 8 JPEGs) or as H.264 with a
keyframe every few frames (the decoder restarts at the keyframe before each sampled frame).

The input is anything `data.train_list` accepts (read by `zeroi2v.data.annotations`); the output is
`OUT_DIR/<list name>` (a rawframe list `frame_dir total_frames label`, or a video list
`path label`) with `classes.txt` beside it, so `data.root: OUT_DIR` and `data.train_list:
OUT_DIR/<list name>` replace the old two settings and nothing else changes. Frame i of an item is
frame i of the video as the loader indexes it, so sampling picks the same moments.

Each item is written to a temporary name and renamed when complete, so a killed run leaves only
finished items and temporaries (removed by the next run), and a rerun does only what is missing.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath

from zeroi2v.errors import UserError

FORMATS = ("frames", "video")
FILENAME_TMPL = "img_{:05d}.jpg"  # MMAction2's rawframe names, counted from 1 (data.start_index)
START_INDEX = 1
PARTIAL = ".partial"  # temporaries of items being written, one folder per running process
SETTINGS = ".prepare.json"  # the settings OUT_DIR was prepared with: a rerun must use the same


@dataclass(frozen=True)
class Settings:
    """What the copy is made of; every list prepared into one OUT_DIR shares it."""

    format: str
    short_side: int  # 0: keep the source size
    quality: int  # JPEG quality (frames)
    gop: int  # keyframe interval (video)
    crf: int  # x264 constant rate factor (video)


DEFAULTS = {"short_side": 256, "quality": 90, "gop": 8, "crf": 20}


@dataclass
class Item:
    source: str  # the video file
    out: str  # relative to OUT_DIR: a folder of frames, or a .mp4
    label: int


def prepare(
    ann,
    out_dir,
    root=None,
    fmt: str = "frames",
    short_side: int = DEFAULTS["short_side"],
    quality: int = DEFAULTS["quality"],
    gop: int = DEFAULTS["gop"],
    crf: int = DEFAULTS["crf"],
    workers: int | None = None,
    split: str = "train",
    progress: bool = True,
    log=print,
) -> dict:
    """Convert the dataset `ann` (a list file, class tree, SSv2 JSON, UCF101/HMDB51 split) into OUT_DIR.

    Returns the report (also written to OUT_DIR/<list stem>.prepare.json): counts of items written
    now, kept from an earlier run and unreadable (named), sizes before and after, the list written.
    """
    settings = _check_settings(fmt, short_side, quality, gop, crf)
    workers = _check_workers(workers)
    if split not in ("train", "val"):
        raise UserError(f"--split must be train or val, got {split!r}")
    from zeroi2v.data.annotations import load_annotations
    from zeroi2v.fileio import atomic_write_json

    if not str(ann).strip():
        raise UserError("LIST is empty: give a list file, a class folder, an SSv2 JSON or a UCF101/HMDB51 split")
    root = _source_root(ann, root)
    out_dir = Path(out_dir)
    annotations = load_annotations(root, ann, split=split)
    items = _items(annotations.samples, root, settings.format)
    list_path = out_dir / output_list_name(ann, split)
    _check_out_dir(out_dir, root, ann, items, list_path)
    _check_settings_match(out_dir, settings)
    _check_classes(out_dir, annotations.classes)

    source_bytes = sum(os.path.getsize(i.source) for i in items if os.path.isfile(i.source))
    log(f"source: {len(items)} videos, {_size(source_bytes)} ({root})")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / SETTINGS, asdict(settings))
    _remove_stale_partials(out_dir)
    results = _run(items, out_dir, settings, workers, progress)
    try:
        (out_dir / PARTIAL).rmdir()  # empty unless another run is writing
    except OSError:
        pass
    return _finish(ann, items, results, out_dir, list_path, annotations.classes, settings, source_bytes, log)


def output_list_name(ann, split: str) -> str:
    """The list's own file name where it is a plain list; otherwise one that reads as a plain list (a
    UCF101 `trainlist01.txt` or HMDB51 `*_test_split1.txt` name would be read as those formats)."""
    text = str(ann).rstrip("/" + os.sep)
    name = os.path.basename(text)
    if any(ch in name for ch in "*?[") or re.search(r"_test_split\d+\.txt$", name):
        number = re.search(r"split(\d+)", name)
        return f"hmdb51_split{number.group(1) if number else ''}_{split}.txt"
    if re.fullmatch(r"(train|test)list\d+\.txt", name):
        return f"ucf101_{name}"
    if Path(text).is_dir() or Path(text).suffix in ("", ".json"):  # a class folder, SSv2 JSON
        return f"{Path(text).stem}.txt"
    return name


def _check_settings(fmt, short_side, quality, gop, crf) -> Settings:
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    for name, value, low, high in (
        ("--short-side", short_side, 0, 4096),
        ("--quality", quality, 1, 100),
        ("--gop", gop, 1, 1000),
        ("--crf", crf, 0, 51),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise UserError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    if 0 < short_side < 16:
        raise UserError(f"--short-side {short_side} is too small (at least 16, or 0 to keep the source size)")
    if fmt == "frames":  # the other format's knobs do not change the copy
        gop, crf = 0, 0
    else:
        quality = 0
    return Settings(fmt, short_side, quality, gop, crf)


def _check_workers(workers) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise UserError(f"--workers must be an integer >= 1, got {workers!r}")
    return workers


def _source_root(ann, root) -> Path:
    """Where relative paths in the list point: --root, else the folder of the list (a class tree: itself)."""
    if root is not None:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"--root {root} is not a folder" if root.exists() else f"--root not found: {root}")
        return root.resolve()
    path = Path(str(ann))
    if path.is_dir():
        return path.resolve()
    return path.parent.resolve()


def _items(samples, root: Path, fmt: str) -> list[Item]:
    """One item per listed video (a video listed twice is prepared once); output paths kept inside OUT_DIR."""
    items, taken = [], {}
    for rel, label in samples:
        source = os.path.normpath(os.path.join(root, rel))
        out = _relative_out(source, root)
        stem = str(PurePath(out).with_suffix(""))
        key = stem if fmt == "frames" else stem + ".mp4"
        if taken.get(key, source) != source:  # a.mp4 and a.avi: the second one keeps its extension in the name
            key = f"{stem}_{PurePath(out).suffix.lstrip('.')}" + ("" if fmt == "frames" else ".mp4")
        taken.setdefault(key, source)
        items.append(Item(source, key, int(label)))
    return items


def _relative_out(source: str, root: Path) -> str:
    rel = os.path.relpath(source, root)
    parts = [p for p in PurePath(rel).parts if p not in ("..", ".")]
    if rel.startswith(".."):  # outside the root (an absolute path in the list): its own path, under OUT_DIR
        parts = [p for p in PurePath(source).parts[1:] if p not in ("..", ".")]
    return str(PurePath(*parts)) if parts else "video"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_out_dir(out_dir: Path, root: Path, ann, items: list[Item], list_path: Path) -> None:
    """Never write into the source: OUT_DIR outside the source root, no input file overwritten."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"OUT_DIR {out_dir} exists and is not a folder")
    resolved = out_dir.resolve()
    if _inside(resolved, root):
        where = "is" if resolved == root else "is inside"
        raise UserError(f"OUT_DIR {out_dir} {where} the source folder {root}; choose a folder outside it")
    inputs = [Path(str(ann))] + [Path(str(ann)).with_name(n) for n in ("classes.txt", "classInd.txt", "labels.json")]
    for target in (list_path, out_dir / "classes.txt"):
        for source in inputs:
            if source.is_file() and target.exists() and os.path.samefile(source, target):
                raise UserError(f"writing {target} would overwrite the input {source}; choose another OUT_DIR")
    prefix = str(resolved) + os.sep
    for item in items:
        if os.path.abspath(item.source).startswith(prefix):
            raise UserError(f"OUT_DIR {out_dir} holds source videos (e.g. {item.source}); choose a folder outside them")
    probe = resolved
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write in {probe} (permission denied)")


def _check_settings_match(out_dir: Path, settings: Settings) -> None:
    path = out_dir / SETTINGS
    if not path.is_file():
        return
    try:
        before = Settings(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return
    if before != settings:
        changed = ", ".join(
            f"{k} {getattr(before, k)} (now {getattr(settings, k)})"
            for k in asdict(settings)
            if getattr(before, k) != getattr(settings, k)
        )
        raise UserError(f"{out_dir} was prepared with other settings ({changed}); use those or another OUT_DIR")


def _check_classes(out_dir: Path, classes) -> None:
    path = out_dir / "classes.txt"
    if classes and path.is_file():
        there = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if there != list(classes):
            raise UserError(f"{path} names other classes than this dataset; use another OUT_DIR")


def _remove_stale_partials(out_dir: Path) -> None:
    """Temporaries of killed runs (a folder per process id; those of running processes are kept)."""
    partial = out_dir / PARTIAL
    if not partial.is_dir():
        return
    for entry in partial.iterdir():
        pid = entry.name.split("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _size(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.2f} {unit}"
        num_bytes /= 1000
    return ""


# --- the work: one item per task, in a pool of processes -----------------------------------------------
def _done(out_dir: Path, item: Item, fmt: str) -> dict | None:
    """The result of an item finished earlier (it exists under its final name), else None."""
    path = out_dir / item.out
    if fmt == "video":
        return {"frames": None, "bytes": path.stat().st_size} if path.is_file() else None
    if not path.is_dir():
        return None
    sizes = [e.stat().st_size for e in os.scandir(path) if e.name.endswith(".jpg")]
    return {"frames": len(sizes), "bytes": sum(sizes)}


def _run(items: list[Item], out_dir: Path, settings: Settings, workers: int, progress: bool) -> dict[str, dict]:
    """{item.out: result}: kept ({"kept": True, ...}), written, or {"error": message}."""
    from tqdm import tqdm

    results, todo = {}, []
    for item in {i.out: i for i in items}.values():
        done = _done(out_dir, item, settings.format)
        if done is not None:
            results[item.out] = {**done, "kept": True}
        else:
            todo.append(item)
    if not todo:
        return results
    bar = tqdm(total=len(todo), desc=f"preparing {settings.format}", disable=not progress, dynamic_ncols=True)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), initializer=_worker_init)
    try:
        futures = {pool.submit(prepare_item, item, str(out_dir), settings): item for item in todo}
        for future in as_completed(futures):
            results[futures[future].out] = future.result()
            bar.update()
    except BaseException:  # Ctrl-C or an error: stop now (finished items are kept for the rerun)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown()
    return results


def _worker_init() -> None:
    """One thread per worker (the pool is the parallelism); die with the parent (a kill -9 of `prepare`
    must not leave workers writing)."""
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def prepare_item(item: Item, out_dir: str, settings: Settings) -> dict:
    """Write one item under a temporary name, then rename it into place: {"frames", "bytes"} or {"error"}."""
    from zeroi2v.data.decode import VideoDecodeError

    partial = Path(out_dir) / PARTIAL
    partial.mkdir(parents=True, exist_ok=True)
    final = Path(out_dir) / item.out
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=partial))
    try:
        if settings.format == "frames":
            result = _write_frames(item.source, tmp, settings)
            _rename_into_place(tmp, final)
        else:
            result = _write_video(item.source, tmp / "video.mp4", settings)
            os.replace(tmp / "video.mp4", final)
        return result
    except VideoDecodeError as e:  # (FFmpeg's errors arrive as this; anything else is a bug or the disk)
        return {"error": str(e)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rename_into_place(tmp: Path, final: Path) -> None:
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():  # else another run finished it first: keep that one
            raise


def _resized(frames, short_side: int):
    """(T, H, W, 3) uint8 frames -> (T, 3, h, w) at `short_side` as the loader's resize makes it
    (antialiased bilinear); never enlarged."""
    import torch
    from torchvision.transforms.v2 import functional as F

    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    if short_side and min(video.shape[-2:]) > short_side:
        video = F.resize(video, [short_side], antialias=True)
    return video


def _chunks(path, size: int = 16):
    """The video's frames in order as RGB numpy chunks of up to `size` frames."""
    import numpy as np

    from zeroi2v.data.decode import _to_rgb, iter_frames

    chunk = []
    for _, frame in iter_frames(path):
        chunk.append(_to_rgb(frame))
        if len(chunk) == size:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


def _write_frames(source: str, folder: Path, settings: Settings) -> dict:
    """One JPEG per frame (Pillow's libjpeg-turbo, 4:2:0), img_00001.jpg for frame 0."""
    from PIL import Image

    count, total = 0, 0
    for chunk in _chunks(source):
        for rgb in _resized(chunk, settings.short_side).permute(0, 2, 3, 1).numpy():
            path = folder / FILENAME_TMPL.format(count + START_INDEX)
            Image.fromarray(rgb).save(path, format="JPEG", quality=settings.quality)
            total += path.stat().st_size
            count += 1
    return {"frames": count, "bytes": total}


def _write_video(source: str, path: Path, settings: Settings) -> dict:
    """H.264 at constant frame rate (frame i at i / fps, as the loader indexes the source), a keyframe
    every `gop` frames, no B-frames (a restart decodes only forward from its keyframe), x264's
    fastdecode tuning."""
    from fractions import Fraction

    import av

    from zeroi2v.data.decode import _fps, open_video

    container, stream = open_video(source)
    with container:
        fps = _fps(stream)
    count = 0
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1) / fps
        video.options = {
            "g": str(settings.gop),
            "crf": str(settings.crf),
            "bf": "0",
            "tune": "fastdecode",  # no CABAC, no deblocking filter: cheaper to decode, a little larger
            "threads": "1",
        }
        for chunk in _chunks(source):
            frames = _resized(chunk, settings.short_side)
            if count == 0:
                video.height, video.width = (s - s % 2 for s in frames.shape[-2:])  # even sizes for 4:2:0
            for rgb in frames[..., : video.height, : video.width].permute(0, 2, 3, 1).numpy():
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, count = count, count + 1
                out.mux(video.encode(frame))
        out.mux(video.encode())
    return {"frames": count, "bytes": path.stat().st_size}


# --- the list, the classes, the report -----------------------------------------------------------------
def _finish(ann, items, results, out_dir, list_path, classes, settings, source_bytes, log) -> dict:
    from zeroi2v.fileio import atomic_write_json, atomic_write_text

    lines, unreadable, written, kept, prepared_bytes = [], [], 0, 0, 0
    sources = {item.out: item.source for item in items}
    for out, result in results.items():
        if "error" in result:
            unreadable.append({"path": sources[out], "error": result["error"]})
        else:
            kept, written = kept + bool(result.get("kept")), written + (not result.get("kept"))
            prepared_bytes += result["bytes"]
    for item in items:
        result = results[item.out]
        if "error" not in result:
            lines.append(
                f"{item.out} {result['frames']} {item.label}"
                if settings.format == "frames"
                else f"{item.out} {item.label}"
            )
    report = {
        "list": str(list_path),
        "source": str(ann),
        "settings": asdict(settings),
        "items": len(results),
        "written": written,
        "kept": kept,
        "unreadable": unreadable,
        "source_bytes": source_bytes,
        "prepared_bytes": prepared_bytes,
    }
    report_path = list_path.with_name(list_path.stem + ".prepare.json")
    atomic_write_json(report_path, report)
    if not lines:
        raise UserError(f"none of the {len(results)} videos in {ann} could be read (named in {report_path})")
    atomic_write_text(list_path, "".join(line + "\n" for line in lines))
    if classes:
        atomic_write_text(out_dir / "classes.txt", "".join(f"{name}\n" for name in classes))
    share = f" ({prepared_bytes / source_bytes:.1f}× the source)" if source_bytes else ""
    log(
        f"prepared: {len(results) - len(unreadable)} videos as {settings.format}, {_size(prepared_bytes)}{share}; "
        f"{written} written now, {kept} kept from an earlier run"
    )
    if unreadable:
        log(f"{len(unreadable)} unreadable videos skipped (named in {report_path}), e.g. {unreadable[0]['path']}")
    log(f"wrote {list_path}" + (f" and {out_dir / 'classes.txt'}" if classes else ""))
    log(f"to use it: data.root: {out_dir}, and data.train_list (or data.val_list): {list_path}")
    report["path"] = str(report_path)
    return report
