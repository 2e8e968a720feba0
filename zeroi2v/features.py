"""Clip-level features (`zeroi2v features RUN_OR_MODEL VIDEOS... --out FILE.safetensors`).

One row per video: the headless model's output (`num_classes=0` convention = `model.forward_features`,
the frame-mean of the final-normed class token), averaged over the run's test views
(`data.test_clips` × `data.test_crops`, sampled and cropped exactly as `zeroi2v eval` does).

By default the adapters are folded in first (`zeroi2v.reparameterize`: the model users deploy, same
outputs up to float rounding); `merged=False` (`--unmerged`) keeps the trained adapters. Baseline
methods that cannot be merged (AIM, ST-Adapter, ...) are used as they are, and the result says so.

Videos are given as files, or as list files (`.txt`, `.lst`, `.list`): one video per line, either a
path or an MMAction2 `path LABEL` line (blank lines and `#` comments skipped). A relative path in a
list file is looked up under `root` (default: the config's `data.root`), then beside the list file,
then from the current directory. When every video has a label, the labels are saved too.

The file (safetensors, written atomically) holds `features` float32 (N, D) and, when known,
`labels` int64 (N,); its metadata has `videos` (a JSON list of the video names in row order, as given
on the command line or in the list file) and the settings (`model`, `merged`, `views`, `num_frames`,
`sampling`, `frame_interval`, `feature_dim`). `load_features(path)` reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from zeroi2v.build import load_pretrained
from zeroi2v.data import VideoDecodeError, load_views
from zeroi2v.data.annotations import NO_VIDEOS, read_text, videos_in
from zeroi2v.dist import interactive, setup_distributed
from zeroi2v.errors import UserError
from zeroi2v.eval import check_device, inspect_video, plain_error
from zeroi2v.fileio import atomic_save_safetensors, check_writable, model_files
from zeroi2v.reparam import reparameterize
from zeroi2v.timeline import data_settings, one_line

LIST_SUFFIXES = (".txt", ".lst", ".list")
FORMAT = "zeroi2v-features"


def read_video_list(videos, root=None) -> list[dict]:
    """[{"name", "path", "label"}] from video paths, folders of videos and list files, in order; missing
    files are errors."""

    entries = []
    for item in videos:
        item_path = Path(item)
        if item_path.is_dir():
            found = videos_in(item_path)
            if not found:
                raise UserError(f"{NO_VIDEOS} in folder {item_path}")
            entries += [{"name": str(path), "path": path, "label": None} for path in found]
            continue
        if item_path.suffix.lower() not in LIST_SUFFIXES:
            entries.append({"name": str(item), "path": item_path, "label": None})
            continue
        if not item_path.is_file():
            raise UserError(f"video list not found: {item_path}")
        count = 0
        for number, line in enumerate(read_text(item_path).splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, label = line, None
            fields = line.rsplit(maxsplit=1)
            if len(fields) == 2 and fields[1].lstrip("-").isdigit():
                name, label = fields[0], int(fields[1])
                if label < 0:
                    raise UserError(f"{item_path}:{number}: negative label {label}")
            entries.append({"name": name, "path": _resolve(name, item_path, root, number), "label": label})
            count += 1
        if not count:
            raise UserError(f"{item_path} lists no videos")
    if not entries:
        raise UserError("no videos given")
    for entry in entries:
        if not entry["path"].is_file():
            if entry["path"].is_dir():
                raise UserError(f"{entry['path']} is a directory, not a video file (give the videos or a list file)")
            raise UserError(f"no such video: {entry['path']}")
    return entries


def _resolve(name: str, list_file: Path, root, number: int) -> Path:
    path = Path(name)
    if path.is_absolute():
        return path
    candidates = ([Path(root) / path] if root else []) + [list_file.parent / path, path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    places = ", ".join(str(c.parent) for c in candidates)
    raise UserError(f"{list_file}:{number}: video {name} not found (looked in {places})")


def _feature_rows(model, entries, s, dev, show) -> tuple[list, list, list, list]:
    """(feature rows, entries read, [(name, reason)] skipped, [(name, warning)]): unreadable videos are
    skipped and named; none readable is an error."""
    rows, read, skipped, warnings = [], [], [], []
    for entry in tqdm(entries, desc="features", unit="video", disable=not show, dynamic_ncols=True):
        error, warning = inspect_video(entry["path"], s["backend"])
        if error:
            skipped.append((entry["name"], error))
            continue
        if warning:
            warnings.append((entry["name"], warning))
        try:
            views = load_views(
                entry["path"],
                num_frames=model.num_frames,
                sampling=s["sampling"],
                frame_interval=s["frame_interval"],
                img_size=s["img_size"],
                mean=s["mean"],
                std=s["std"],
                test_clips=s["test_clips"],
                test_crops=s["test_crops"],
                backend=s["backend"],
            )
        except VideoDecodeError as e:
            skipped.append((entry["name"], plain_error(e, entry["path"])))
            continue
        rows.append(model.forward_features(views.to(dev)).float().mean(0).cpu())  # (D,) mean over the views
        read.append(entry)
    if not rows:
        name, reason = skipped[0]
        raise UserError(f"none of the {len(entries)} videos could be read (e.g. {name}: {reason}); nothing written")
    return rows, read, skipped, warnings


@torch.no_grad()
def extract_features(
    directory, videos, out, *, merged: bool = True, root=None, overrides=(), device=None, progress: bool | None = None
) -> dict:
    """Write FILE.safetensors with one feature row per video (see the module docstring).

    Unreadable videos (and images under a video name) are skipped and named, as `predict` and `train`
    do; only when none can be read is it an error, with nothing written.

    Returns {"path", "num_videos", "dim", "merged", "views", "videos" (names), "features" (N, D) tensor,
    "labels" (list or None), "note" (str or None), "skipped": [(name, reason)], "warnings": [(name, what)]}.
    """

    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: features are written as a .safetensors file")
    videos = [videos] if isinstance(videos, (str, Path)) else list(videos)
    model = load_pretrained(directory)
    s = data_settings(directory, overrides, model)
    entries = read_video_list(videos, root if root is not None else s["root"])
    check_writable(out, "--out", [e["path"] for e in entries] + [Path(v) for v in videos] + model_files(directory))
    if out.is_file() and not is_features_file(out):  # replace an earlier features file, never other weights
        raise UserError(f"--out {out} exists and is not a zeroi2v features file; refusing to overwrite it")

    check_device(device)
    note = None
    if merged and not model.merged:
        if model.config.method != "zeroi2v":
            note = f"{model.config.method} cannot be merged: features of the model as trained"
        else:
            model = reparameterize(model)
    dev = setup_distributed(device)[2]
    model.to(dev).eval()
    show = interactive() if progress is None else progress
    rows, entries, skipped, warnings = _feature_rows(model, entries, s, dev, show)
    features = torch.stack(rows)
    labels = [e["label"] for e in entries]
    labels = labels if all(label is not None for label in labels) else None
    tensors = {"features": features}
    if labels is not None:
        tensors["labels"] = torch.tensor(labels, dtype=torch.int64)
    names = [e["name"] for e in entries]
    views = f"{s['test_clips']}x{s['test_crops']}"
    is_merged = bool(model.merged)
    metadata = {
        "format": FORMAT,
        "videos": json.dumps(names),
        "model": str(directory),
        "merged": json.dumps(is_merged),
        "views": views,
        "num_frames": str(model.num_frames),
        "sampling": s["sampling"],
        "frame_interval": str(s["frame_interval"]),
        "feature_dim": str(features.shape[1]),
        "feature": "forward_features: frame-mean of the final-normed class token, mean over test views",
    }
    atomic_save_safetensors(out, tensors, metadata=metadata)
    return {
        "path": str(out),
        "num_videos": len(names),
        "dim": int(features.shape[1]),
        "merged": is_merged,
        "views": views,
        "videos": names,
        "features": features,
        "labels": labels,
        "note": note,
        "skipped": skipped,
        "warnings": warnings,
    }


def _is_features(metadata: dict, names) -> bool:
    return metadata.get("format") == FORMAT and "features" in names


def is_features_file(path) -> bool:
    """Whether `path` is a zeroi2v features file (its header only: no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return _is_features(dict(f.metadata() or {}), f.keys())
    except (SafetensorError, OSError):
        return False


def load_features(path) -> dict:
    """{"features": (N, D), "labels": (N,) or None, "videos": [names], "metadata": {...}} from a features file."""

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {path}: {one_line(e)}") from None
    if not _is_features(metadata, tensors):
        raise UserError(f"{path} is not a zeroi2v features file")
    return {
        "features": tensors["features"],
        "labels": tensors.get("labels"),
        "videos": json.loads(metadata.get("videos", "[]")),
        "metadata": metadata,
    }


__all__ = ["extract_features", "read_video_list", "load_features"]
