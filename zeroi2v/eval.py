"""Evaluation and prediction: multi-view test, averaged softmax, top-1/top-5/mean class accuracy.

`zeroi2v eval DIR` works on a run directory, a saved model directory or a merged one: the data
settings come from the directory's `config.yaml` (if any) and `--set` overrides. Views are
`data.test_clips × data.test_crops` per video; their softmax probabilities are averaged. With several
processes each video is evaluated by exactly one rank (no sampler padding duplicates).
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from zeroi2v.config import load_config
from zeroi2v.errors import UserError
from zeroi2v.fileio import atomic_write, atomic_write_json
from zeroi2v.model import load_pretrained


def accuracy_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    top = np.argsort(-probs, axis=1)[:, :5]
    top1 = float(np.mean(top[:, 0] == labels)) if len(labels) else 0.0
    top5 = float(np.mean([label in row for row, label in zip(top, labels)])) if len(labels) else 0.0
    per_class = [float(np.mean(top[labels == c, 0] == c)) for c in range(num_classes) if np.any(labels == c)]
    return {"top1": top1, "top5": top5, "mean_class_accuracy": float(np.mean(per_class)) if per_class else 0.0}


@torch.no_grad()
def evaluate_dataset(model, dataset, device, rank: int = 0, world: int = 1, batch_size: int = 8,
                     num_workers: int = 2, autocast=nullcontext, progress: bool = True) -> dict:
    """Probabilities for every video of a test-mode dataset, gathered on all ranks, and metrics."""
    from tqdm import tqdm

    from zeroi2v.data import collate

    indices = list(range(rank, len(dataset), world))  # each video on exactly one rank
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=collate)
    was_training = model.training
    model.eval()
    probs, labels, order, broken = [], [], [], []
    for batch in tqdm(loader, desc="evaluating", disable=not progress, dynamic_ncols=True):
        video = batch["video"].to(device)  # (B, V, 3, T, H, W)
        B, V = video.shape[:2]
        with autocast():
            logits = model(video.flatten(0, 1)).float()
        probs.append(logits.softmax(-1).view(B, V, -1).mean(1).cpu())
        labels.append(batch["label"])
        order.append(batch["index"])
        broken += batch["broken"].tolist()
    model.train(was_training)
    local = (torch.cat(probs).numpy() if probs else np.zeros((0, 0)), torch.cat(labels).numpy() if labels else np.zeros(0),
             torch.cat(order).numpy() if order else np.zeros(0), np.array(broken, dtype=bool))
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


def _dir_config(directory: Path, overrides, model) -> dict:
    """The run's config (data settings for testing); a bare model directory gets the defaults, with the
    model's own frame count and image size."""
    config_file = directory / "config.yaml"
    if config_file.is_file():
        return load_config(config_file, overrides)
    base = {"model": {"num_frames": model.num_frames, "head_offsets": list(model.config.get("head_offsets", []))}}
    if getattr(model, "img_size", None):
        base["data"] = {"img_size": int(model.img_size[0])}
    return load_config(None, overrides, base=base)


def _classes(directory: Path) -> list[str] | None:
    path = directory / "classes.txt"
    from zeroi2v.data.annotations import read_text
    return [line.strip() for line in read_text(path).splitlines() if line.strip()] if path.is_file() else None


def evaluate(directory, overrides=(), device: str | None = None, progress: bool | None = None) -> dict:
    """`zeroi2v eval`: writes metrics.json, per_class_accuracy.json and confusion_matrix.png."""
    from zeroi2v.data import VideoDataset, check_labels, load_annotations
    from zeroi2v.train import interactive, setup_distributed

    directory = Path(directory)
    model = load_pretrained(directory)
    cfg = _dir_config(directory, overrides, model)
    d = cfg["data"]
    if not d["val_list"]:
        raise UserError("no data.val_list to evaluate on: pass --set data.val_list=PATH data.root=DIR")
    rank, world, dev = setup_distributed()
    dev = torch.device(device) if device else dev
    model.to(dev)
    ann = load_annotations(d["root"], d["val_list"], split="val")
    check_labels(ann.samples, model.num_classes, d["val_list"])
    mean, std = tuple(d["mean"] or model.data_config["mean"]), tuple(d["std"] or model.data_config["std"])
    dataset = VideoDataset(d["root"], ann.samples, num_frames=model.num_frames, sampling=d["sampling"],
                           frame_interval=d["frame_interval"], train=False, img_size=d["img_size"], mean=mean, std=std,
                           test_clips=d["test_clips"], test_crops=d["test_crops"], seed=cfg["train"]["seed"],
                           backend=d["backend"])
    batch = max(1, cfg["train"]["batch_size"] // max(1, world) // (d["test_clips"] * d["test_crops"]))
    result = evaluate_dataset(model, dataset, dev, rank, world, batch_size=batch,
                              num_workers=cfg["train"]["num_workers"],
                              progress=(progress if progress is not None else interactive()) and rank == 0)
    metrics = {**result["metrics"], "views": f"{d['test_clips']}x{d['test_crops']}", "val_list": d["val_list"]}
    if rank == 0:
        classes = _classes(directory) or [str(i) for i in range(model.num_classes)]
        keep = ~result["broken"]
        y, pred = result["labels"][keep], result["probs"][keep].argmax(1)
        matrix = np.zeros((model.num_classes, model.num_classes), dtype=np.int64)
        np.add.at(matrix, (y, pred), 1)
        per_class = {classes[c]: (float(matrix[c, c] / matrix[c].sum()) if matrix[c].sum() else None)
                     for c in range(model.num_classes)}
        atomic_write_json(directory / "metrics.json", metrics)
        atomic_write_json(directory / "per_class_accuracy.json", per_class)
        from zeroi2v.plots import confusion_matrix
        atomic_write(directory / "confusion_matrix.png", lambda tmp: confusion_matrix(matrix, classes, tmp))
    return metrics


@torch.no_grad()
def predict(directory, videos, topk: int = 5, overrides=()) -> list[dict]:
    """Top-k (class, probability) for each video file, with the model's own test sampling."""
    from zeroi2v.data import VideoDecodeError, load_views

    directory = Path(directory)
    model = load_pretrained(directory)
    cfg = _dir_config(directory, overrides, model)
    d = cfg["data"]
    classes = _classes(directory) or [str(i) for i in range(model.num_classes)]
    mean, std = tuple(d["mean"] or model.data_config["mean"]), tuple(d["std"] or model.data_config["std"])
    results = []
    for path in videos:
        try:
            views = load_views(path, num_frames=model.num_frames, sampling=d["sampling"],
                               frame_interval=d["frame_interval"], img_size=d["img_size"], mean=mean, std=std,
                               test_clips=d["test_clips"], test_crops=d["test_crops"], backend=d["backend"])
        except VideoDecodeError as e:
            results.append({"video": str(path), "error": str(e)})
            continue
        probs = model(views).softmax(-1).mean(0)
        values, idx = probs.topk(min(topk, len(probs)))
        results.append({"video": str(path), "top": [(classes[i], float(v)) for v, i in zip(values, idx)]})
    return results
