"""Evaluation and prediction: multi-view test, averaged softmax, top-1/top-5/mean class accuracy.

`zeroi2v eval DIR` works on a run directory, a saved model directory or a merged one: the data
settings come from the directory's `config.yaml` (if any) and `--set` overrides. Views are
`data.test_clips × data.test_crops` per video; their softmax probabilities are averaged. With several
processes each video is evaluated by exactly one rank (no sampler padding duplicates).
"""

from __future__ import annotations

import math
import os
import re
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from zeroi2v.build import last_checkpoint, load_pretrained
from zeroi2v.config import Config, load_config, parse_override
from zeroi2v.data import VideoDecodeError, collate, num_frames, worker_init
from zeroi2v.data.annotations import NO_VIDEOS, read_text, videos_in
from zeroi2v.data.build import create_dataset, make_dataset
from zeroi2v.dist import all_sum, interactive, setup_distributed
from zeroi2v.errors import UserError
from zeroi2v.fileio import atomic_write, atomic_write_json
from zeroi2v.plots import confusion_matrix


def accuracy_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    top = np.argsort(-probs, axis=1)[:, :5]
    top1 = float(np.mean(top[:, 0] == labels)) if len(labels) else 0.0
    top5 = float(np.mean([label in row for row, label in zip(top, labels, strict=False)])) if len(labels) else 0.0
    per_class = [float(np.mean(top[labels == c, 0] == c)) for c in range(num_classes) if np.any(labels == c)]
    return {"top1": top1, "top5": top5, "mean_class_accuracy": float(np.mean(per_class)) if per_class else 0.0}


@torch.no_grad()
def evaluate_dataset(
    model,
    dataset,
    device,
    rank: int = 0,
    world: int = 1,
    batch_size: int = 8,
    num_workers: int = 2,
    autocast=nullcontext,
    progress: bool = True,
    should_stop=None,
) -> dict | None:
    """Probabilities for every video of a test-mode dataset, gathered on all ranks, and metrics. None when
    `should_stop()` (checked before each batch) turned true: a signal in training's evaluation, which then
    keeps the epoch's steps in a checkpoint instead of waiting for the evaluation. With several processes
    the ranks agree on it (one collective per batch, over the batches every rank has), so all stop at the
    same batch even when the signal reached only one of them."""
    indices = list(range(rank, len(dataset), world))  # each video on exactly one rank
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=worker_init,
    )
    distributed = dist.is_initialized() and world > 1
    # ranks hold at most one video more than another, so at most one batch more: that one is not agreed on
    common = min(math.ceil(len(range(r, len(dataset), world)) / batch_size) for r in range(world))
    was_training = model.training
    model.eval()
    probs, labels, order, broken = [], [], [], []
    for i, batch in enumerate(tqdm(loader, desc="evaluating", disable=not progress, dynamic_ncols=True, leave=False)):
        if (
            should_stop is not None
            and i < common
            and (all_sum([float(should_stop())], device)[0] > 0 if distributed else should_stop())
        ):
            model.train(was_training)
            return None
        video = batch["video"].to(device)  # (B, V, 3, T, H, W)
        B, V = video.shape[:2]
        with autocast():
            logits = model(video.flatten(0, 1)).float()
        probs.append(logits.softmax(-1).view(B, V, -1).mean(1).cpu())
        labels.append(batch["label"])
        order.append(batch["index"])
        broken += batch["broken"].tolist()
    model.train(was_training)
    local = (
        torch.cat(probs).numpy() if probs else np.zeros((0, 0)),
        torch.cat(labels).numpy() if labels else np.zeros(0),
        torch.cat(order).numpy() if order else np.zeros(0),
        np.array(broken, dtype=bool),
    )
    parts = [local]
    if dist.is_initialized() and world > 1:
        parts = [None] * world
        dist.all_gather_object(parts, local)
    parts = [p for p in parts if len(p[1])]
    p = np.concatenate([x[0] for x in parts])
    y = np.concatenate([x[1] for x in parts])
    idx = np.concatenate([x[2] for x in parts])
    bad = np.concatenate([x[3] for x in parts])
    keep = ~bad  # unreadable videos are counted and reported, not scored as wrong answers
    num_classes = p.shape[1]
    metrics = accuracy_metrics(p[keep], y[keep], num_classes)
    metrics.update(num_videos=int(keep.sum()), broken_videos=int(bad.sum()))
    return {"metrics": metrics, "probs": p, "labels": y, "indices": idx, "broken": bad}


# keys `eval`/`predict` may change: how the test data is read, not what the model is
TEST_KEYS_PREFIX = "data."
TEST_KEYS = {"train.batch_size", "train.num_workers", "train.seed", "train.amp"}


def check_test_overrides(overrides) -> None:
    """`--set` on a trained model may change the test data, never the model or its training."""
    for text in overrides:
        key = parse_override(text)[0]
        if not (key.startswith(TEST_KEYS_PREFIX) or key in TEST_KEYS):
            raise UserError(
                f"--set {key}: cannot apply to a trained model (it is used as saved); "
                f"eval/predict accept data.* and {', '.join(sorted(TEST_KEYS))}"
            )


def config_for_test(directory: Path, overrides, model) -> Config:
    """The run's config (data settings for testing); a bare model directory gets the defaults, with the
    model's own frame count and image size."""
    check_test_overrides(overrides)
    config_file = directory / "config.yaml"
    if config_file.is_file():
        cfg = load_config(config_file, overrides)
    else:
        base = {
            "model": {
                "backbone": model.config.backbone,
                "timm_kwargs": dict(model.config.timm_kwargs),
                "num_frames": model.num_frames,
                "head_offsets": list(model.head_offsets),
            },
            "data": {"img_size": int(model.img_size[0])},
        }
        cfg = load_config(None, overrides, base=base)
    if cfg.data.img_size != model.img_size[0]:
        raise UserError(f"data.img_size={cfg.data.img_size}: the model was trained at {model.img_size[0]} px")
    return cfg


def saved_classes(directory, num_classes: int) -> list[str] | None:
    """The class names in the directory's classes.txt (None without one, or with another count)."""
    path = Path(directory) / "classes.txt"
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()] if path.is_file() else []
    return names if names and len(names) == num_classes else None


def class_names(directory, num_classes: int) -> list[str]:
    """Class names from the directory's classes.txt, else "0", "1", ..."""
    return saved_classes(directory, num_classes) or [str(i) for i in range(num_classes)]


DEVICE_TYPES = ("cpu", "cuda")


def check_device(device: str | None) -> None:
    """--device: cpu, cuda or cuda:N; anything else (mps, xpu, meta, a typo) is one line, not a traceback."""
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise UserError(f"--device {device!r}: not a device; use cpu, cuda or cuda:N") from None
    if kind not in DEVICE_TYPES:
        raise UserError(f"--device {device}: {kind} is not supported; use cpu, cuda or cuda:N")


IMAGE_CODECS = {"png", "mjpeg", "bmp", "webp", "tiff", "jpeg2000", "jpegls", "ppm", "pgm", "pam", "qoi", "jpegxl"}


def plain_error(error, path) -> str:
    """A decode error's message without the file name (the caller names it) or FFmpeg's raw errno."""
    text = str(error)
    for name in sorted({str(path), os.path.abspath(path), os.fspath(path)}, key=len, reverse=True):
        text = text.replace(f"'{name}'", "").replace(name, "")
    text = re.sub(r"\[Errno -?\d+\]\s*", "", text)
    text = re.sub(r"'[a-z_]+\(\)'", "", text)  # the FFmpeg call ('avcodec_send_packet()')
    text = re.sub(r"\s+:", ":", text)
    text = re.sub(r"(:\s*)+$", "", text.strip())
    return re.sub(r"\s+", " ", text).strip() or type(error).__name__


def inspect_video(path, backend: str = "auto") -> tuple[str | None, str | None]:
    """(error, warning) for one input: an image under a video name is not a video (error); a file that
    decodes to fewer frames than its header announces is cut short (warning: "decoded 35 of 100 frames")."""
    import av

    try:
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            codec, fmt, claimed = stream.codec_context.name, container.format.name, int(stream.frames or 0)
            if not claimed and stream.duration and stream.time_base and stream.average_rate:
                claimed = int(round(stream.duration * stream.time_base * stream.average_rate))
    except Exception:  # noqa: BLE001 - the decoder says why, in its own words
        return None, None
    if codec in IMAGE_CODECS and (fmt.endswith("_pipe") or fmt == "image2" or claimed <= 1):
        return f"not a video: a single {'JPEG' if codec == 'mjpeg' else codec.upper()} image", None
    try:
        found = num_frames(path, backend)
    except VideoDecodeError:
        return None, None
    if claimed > 1 and found < claimed - 1:
        return None, f"decoded {found} of {claimed} frames (the file ends early); predicted from those"
    return None, None


def load_for_test(directory, checkpoint: bool = False, device: str | None = None, compile: bool = False):
    """(model on its device, rank, world, device) of a run or model directory; `checkpoint`: an
    unfinished run's last checkpoint instead of final weights; `compile`: torch.compile it (in place)."""
    directory = Path(directory)
    check_device(device)
    weights = None
    if checkpoint:
        weights = last_checkpoint(directory)
        if weights is None:
            raise UserError(f"{directory} has no checkpoint (--checkpoint reads an unfinished run's last one)")
    rank, world, dev = setup_distributed(device)
    model = load_pretrained(directory, weights=weights).to(dev)
    if compile:
        model.compile(fullgraph=True, dynamic=False)
    return model, rank, world, dev


def evaluate(
    directory,
    overrides=(),
    device: str | None = None,
    progress: bool | None = None,
    checkpoint: bool = False,
    compile: bool = False,
) -> dict:
    """`zeroi2v eval`: writes metrics.json, per_class_accuracy.json and confusion_matrix.png."""
    directory = Path(directory)
    model, rank, world, dev = load_for_test(directory, checkpoint, device, compile)
    cfg = config_for_test(directory, overrides, model)
    d = cfg.data
    dataset = create_dataset(cfg, "test", model=model, classes=saved_classes(directory, model.num_classes))
    batch = max(1, cfg.train.batch_size // max(1, world) // (d.test_clips * d.test_crops))
    result = evaluate_dataset(
        model,
        dataset,
        dev,
        rank,
        world,
        batch_size=batch,
        num_workers=cfg.train.num_workers,
        progress=(progress if progress is not None else interactive()) and rank == 0,
    )
    metrics = {**result["metrics"], "views": f"{d.test_clips}x{d.test_crops}", "val_list": d.val_list}
    if result["metrics"]["num_videos"] == 0:
        raise UserError(
            f"none of the {len(dataset)} videos in {d.val_list} could be read (e.g. {dataset.path(0)}); "
            "check data.val_list and data.root"
        )
    if rank == 0:
        classes = class_names(directory, model.num_classes)
        keep = ~result["broken"]
        y, pred = result["labels"][keep], result["probs"][keep].argmax(1)
        matrix = np.zeros((model.num_classes, model.num_classes), dtype=np.int64)
        np.add.at(matrix, (y, pred), 1)
        per_class = {
            classes[c]: (float(matrix[c, c] / matrix[c].sum()) if matrix[c].sum() else None)
            for c in range(model.num_classes)
        }
        atomic_write_json(directory / "metrics.json", metrics)
        atomic_write_json(directory / "per_class_accuracy.json", per_class)
        title = f"{directory.name}: top-1 {metrics['top1']:.1%} on {metrics['num_videos']} videos"
        atomic_write(directory / "confusion_matrix.png", lambda tmp: confusion_matrix(matrix, classes, tmp, title))
    return metrics


def expand_folders(videos) -> list:
    """Each folder in `videos` replaced by the video files under it (sorted); a folder without any stays."""
    return [found for item in videos for found in ((videos_in(item) or [item]) if os.path.isdir(item) else [item])]


@torch.no_grad()
def predict(
    directory,
    videos,
    topk: int = 5,
    overrides=(),
    device: str | None = None,
    checkpoint: bool = False,
    compile: bool = False,
) -> list[dict]:
    """Top-k (class, probability) for each video file (or each video in a folder), with the model's own test views."""
    directory = Path(directory)
    if topk < 1:
        raise UserError(f"--topk must be >= 1, got {topk}")
    model, _, _, dev = load_for_test(directory, checkpoint, device, compile)
    cfg = config_for_test(directory, overrides, model)
    classes = class_names(directory, model.num_classes)
    results = []
    for path in expand_folders(videos):
        if os.path.isdir(path):
            results.append({"video": str(path), "error": f"{NO_VIDEOS} in this folder"})
            continue
        if not os.path.exists(path):
            results.append({"video": str(path), "error": "no such file"})
            continue
        dataset = make_dataset(cfg, model, "test", samples=[(os.path.abspath(path), 0)])
        error, warning = inspect_video(path, cfg.data.backend)
        if error:
            results.append({"video": str(path), "error": error})
            continue
        try:
            views = dataset.load(0, dataset.rng(0))[0]
        except VideoDecodeError as e:
            results.append({"video": str(path), "error": plain_error(e, path)})
            continue
        probs = model(views.to(dev)).softmax(-1).mean(0)
        values, idx = probs.topk(min(topk, len(probs)))
        top = [(classes[i], float(v)) for v, i in zip(values, idx, strict=False)]
        results.append({"video": str(path), "top": top, **({"warning": warning} if warning else {})})
    return results
