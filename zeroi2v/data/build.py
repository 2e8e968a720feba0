"""One place that turns a run's config into datasets: train, train-time validation, test views.

Used by `train`, `eval`, `predict` and `merge`, so the data a model is trained on and tested on are
assembled the same way (normalisation from the config, else the backbone's own statistics).
"""

from __future__ import annotations

import copy
import dataclasses
import os

from zeroi2v.data.annotations import (
    Annotations,
    check_labels,
    few_shot,
    load_annotations,
    match_classes,
    ssv2_flip_label_map,
)
from zeroi2v.data.dataset import VideoDataset
from zeroi2v.data.frames import template_hint
from zeroi2v.data.spec import specs_from_config
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
    if not d.root and source and os.path.isfile(source):
        ann = beside(ann, os.path.dirname(os.path.abspath(source)))
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


def beside(ann: Annotations, folder: str) -> Annotations:
    """Without data.root, a list file's relative paths are relative to the list's own folder (as
    `zeroi2v prepare` writes them), not to wherever the command runs."""
    absolute = {rel: os.path.join(folder, rel) for rel, _ in ann.samples}
    lengths = {absolute.get(rel, rel): n for rel, n in (ann.lengths or {}).items()} or None
    samples = [(absolute[rel], label) for rel, label in ann.samples]
    return dataclasses.replace(ann, samples=samples, lengths=lengths)


def check_some_exist(root, samples, source, probes: int = 32) -> None:
    """Fail early (and clearly) when none of a few listed videos exist: a wrong data.root, not broken files."""
    picks = samples[:: max(1, len(samples) // probes)][:probes]
    if picks and not any(os.path.exists(os.path.join(root or "", rel)) for rel, _ in picks):
        raise UserError(
            f"none of {len(picks)} videos listed in {source} exist under data.root={root!r} "
            f"(e.g. {os.path.join(root or '', picks[0][0])}); check data.root"
        )


def make_dataset(
    cfg,
    model,
    split: str,
    samples=None,
    flip_label_map: dict | None = None,
    lengths: dict | None = None,
    classes: list[str] | None = None,
) -> VideoDataset:
    """The `split` dataset of a run for `model` (its frame count and normalisation).

    `samples`: (path, label) pairs to use instead of the split's annotation file (few-shot subsets,
    a single clip); `lengths`: their rawframe counts. Labels are checked against the model's classes.
    `classes`: the model's class names (a validation class-folder tree is matched to them by name).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    ann = load_split(cfg, split, classes) if samples is None else Annotations(list(samples), lengths=lengths)
    return _for_model(cfg, model, split, ann, flip_label_map)


def _for_model(cfg, model, split: str, ann: Annotations, flips) -> VideoDataset:
    d = cfg.data
    if model.num_classes:
        source = (d.train_list if split == "train" else d.val_list) or d.root
        check_labels(ann.samples, model.num_classes, source, ann.lines)
    mean, std = d.mean or model.data_config["mean"], d.std or model.data_config["std"]
    return _dataset(cfg, split, ann, model.num_frames, mean, std, flips)


def _dataset(cfg, split: str, ann: Annotations, num_frames: int, mean, std, flips) -> VideoDataset:
    d = cfg.data
    clip, augment = specs_from_config(d, num_frames, mean, std)
    if split == "val":
        clip = dataclasses.replace(clip, test_clips=1, test_crops=1)  # one center view, every eval_every epochs
    check_frame_names(d.root, ann, clip)
    return VideoDataset(
        d.root,
        ann.samples,
        clip,
        augment,
        train=split == "train",
        seed=cfg.train.seed,
        flip_label_map=flips if split == "train" else None,
        lengths=ann.lengths,
        classes=ann.classes,
        cache_frames=d.cache_frames and split in ("train", "val"),
    )


def create_dataset(config, split: str = "train", overrides=(), model=None, classes=None) -> VideoDataset:
    """The dataset `zeroi2v train` (split "train", "val") or `zeroi2v eval` ("test") builds from a config.

    config: a YAML path or a `Config`; overrides: `KEY=VALUE` strings as `--set` takes them. Training
    gets the few-shot subset (`data.shots`) and the SSv2 label flips (`data.flip_label_map`) as `train`
    does. The frame count and normalisation come from `model` when given, else from the config
    (`model.num_frames`; `data.mean`/`data.std`, else the backbone's pretrained statistics from timm).
    `classes`: the model's class names, to which a validation class-folder tree is matched by name
    (default: the training data's). Items are dicts with `video`, `label`, `index`, `skipped`, `broken`.
    """
    from zeroi2v.config import Config, load_config, parse_override, set_key

    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
        for text in overrides:
            set_key(cfg, *parse_override(text))
        cfg.check()
    else:
        cfg = load_config(config, overrides)
    d = cfg.data
    ann = load_split(cfg, split, classes)
    flips = None
    if split == "train":
        if d.shots:
            ann = Annotations(few_shot(ann.samples, d.shots, cfg.train.seed), ann.classes, lengths=ann.lengths)
        classes = ann.classes or (load_split(cfg, "val").classes if d.val_list and d.flip_label_map else None)
        flips = ssv2_flip_label_map(classes) if d.flip_label_map and classes else None
    if model is not None:
        return _for_model(cfg, model, split, ann, flips)
    mean, std = backbone_statistics(cfg.model.backbone)
    return _dataset(cfg, split, ann, cfg.model.num_frames, d.mean or mean, d.std or std, flips)


def backbone_statistics(backbone: str) -> tuple[tuple, tuple]:
    """(mean, std) of a timm backbone's pretraining, without building it (ImageNet's when timm does not say)."""
    import timm

    from zeroi2v.data.spec import IMAGENET_MEAN, IMAGENET_STD

    try:
        pretrained = timm.models.get_pretrained_cfg(backbone)
    except Exception:  # noqa: BLE001 - an unknown name: the model build reports it; statistics default
        pretrained = None
    values = pretrained.to_dict() if pretrained is not None else {}
    return tuple(values.get("mean") or IMAGENET_MEAN), tuple(values.get("std") or IMAGENET_STD)


def check_frame_names(root, ann: Annotations, clip, probes: int = 32) -> None:
    """Fail early, naming the fix, when none of a few rawframe folders has a first frame named as
    data.filename_tmpl and data.start_index say (a wrong template, not broken folders)."""
    folders = [os.path.join(root or "", rel) for rel, _ in ann.samples[:: max(1, len(ann.samples) // probes)][:probes]]
    folders = [f for f in folders if os.path.isdir(f)]
    first = clip.filename_tmpl.format(clip.start_index)
    if not folders or any(os.path.isfile(os.path.join(f, first)) for f in folders):
        return
    raise UserError(
        f"none of {len(folders)} frame folders has a frame {first} (data.filename_tmpl="
        f"'{clip.filename_tmpl}', data.start_index={clip.start_index}), e.g. {folders[0]}"
        f"{template_hint(os.listdir(folders[0]), clip.filename_tmpl, clip.start_index)}"
    )
