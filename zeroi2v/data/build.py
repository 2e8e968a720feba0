"""One place that turns a run's config into datasets: train, train-time validation, test views.

Used by `train`, `eval`, `predict` and `merge`, so the data a model is trained on and tested on are
assembled the same way (normalisation from the config, else the backbone's own statistics).
"""

from __future__ import annotations

import os

from zeroi2v.data.annotations import Annotations, check_labels, load_annotations, match_classes
from zeroi2v.data.dataset import VideoDataset
from zeroi2v.errors import UserError

SPLITS = ("train", "val", "test")  # val: one center view (during training); test: data.test_clips × test_crops


def load_split(cfg, split: str, classes: list[str] | None = None) -> Annotations:
    """The annotations of a split: data.train_list for train, data.val_list for val/test.

    A validation/test class-folder tree is labelled by the names of the training classes (`classes`,
    else those of data.train_list), never by its own folder order."""
    d = cfg.data
    source = d.train_list if split == "train" else d.val_list
    if split == "train" and not source and not d.root:
        raise UserError("config needs data.train_list (or data.root with one folder per class)")
    if split != "train" and not source:
        raise UserError("no data.val_list to evaluate on: pass --set data.val_list=PATH data.root=DIR")
    if d.root and not os.path.isdir(d.root):
        if os.path.exists(d.root):
            raise UserError(
                f"data.root {d.root} is a file, not a folder (the list files go in data.train_list / data.val_list)"
            )
        raise UserError(f"data.root not found: {d.root}")
    ann = load_annotations(d.root, source, split="train" if split == "train" else "val")
    check_some_exist(d.root, ann.samples, source or d.root)
    if split != "train" and ann.tree:
        reference = "the model"
        if classes is None and (d.train_list or d.root):
            classes, reference = load_split(cfg, "train").classes, f"data.train_list={d.train_list or d.root}"
        if classes is None:
            raise UserError(
                f"data.val_list={source} is a class-folder tree, but the training data names no classes to match "
                "its folders to (put a classes.txt beside the training list)"
            )
        ann = match_classes(ann, classes, source, reference)
    return ann


def check_some_exist(root, samples, source, probes: int = 32) -> None:
    """Fail early (and clearly) when none of a few listed videos exist: a wrong data.root, not broken files."""
    picks = samples[:: max(1, len(samples) // probes)][:probes]
    if picks and not any(os.path.exists(os.path.join(root or "", rel)) for rel, _ in picks):
        raise UserError(
            f"none of {len(picks)} videos listed in {source} exist under data.root={root!r} "
            f"(e.g. {os.path.join(root or '', picks[0][0])}); check data.root"
        )


def make_dataset(
    cfg, model, split: str, samples=None, flip_label_map: dict | None = None, classes: list[str] | None = None
) -> VideoDataset:
    """The `split` dataset of a run for `model` (its frame count and normalisation).

    `samples`: (path, label) pairs to use instead of the split's annotation file (few-shot subsets,
    a single clip). Labels are checked against the model's classes. `classes`: the model's class names
    (a validation class-folder tree is matched to them by name).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    d = cfg.data
    lines = None
    if samples is None:
        ann = load_split(cfg, split, classes)
        samples, lines = ann.samples, ann.lines
    if model.num_classes:
        check_labels(samples, model.num_classes, (d.train_list if split == "train" else d.val_list) or d.root, lines)
    common = dict(
        num_frames=model.num_frames,
        sampling=d.sampling,
        frame_interval=d.frame_interval,
        img_size=d.img_size,
        mean=tuple(d.mean or model.data_config["mean"]),
        std=tuple(d.std or model.data_config["std"]),
        seed=cfg.train.seed,
        backend=d.backend,
        cache_frames=d.cache_frames and split in ("train", "val"),
    )  # val: every eval_every epochs
    if split == "train":
        return VideoDataset(
            d.root,
            samples,
            train=True,
            flip=d.flip,
            flip_label_map=flip_label_map,
            rand_augment=d.rand_augment,
            rand_augment_layers=d.rand_augment_layers,
            rand_augment_magnitude=d.rand_augment_magnitude,
            augment_order=d.augment_order,
            random_erasing=d.random_erasing,
            erasing_mode=d.erasing_mode,
            short_side=d.short_side,
            crop_scale=tuple(d.crop_scale),
            **common,
        )
    views = (1, 1) if split == "val" else (d.test_clips, d.test_crops)
    return VideoDataset(d.root, samples, train=False, test_clips=views[0], test_crops=views[1], **common)
