"""What a clip is and how training augments it: two small objects built from the config in one place.

`ClipSpec` says which frames make a clip and how they are read and tested (sampling, frame count,
test views, normalisation, frame files of rawframe folders, repeated sampling); `AugmentSpec` holds
the training augmentation. Their field names are the `data.*` config keys, and their defaults are
`DataConfig`'s, so a key means one thing everywhere. Datasets and transforms take these objects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from zeroi2v.config import DataConfig

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _default(name: str):
    """The default of data.`name`, as DataConfig defines it."""
    value = getattr(DataConfig(), name)
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class ClipSpec:
    """Frames of a clip, how they are read, the test views and the normalisation (0..1 scale)."""

    num_frames: int = 8
    sampling: str = _default("sampling")
    frame_interval: int = _default("frame_interval")
    img_size: int = _default("img_size")
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    test_clips: int = _default("test_clips")
    test_crops: int = _default("test_crops")
    repeat_clips: int = _default("repeat_clips")
    backend: str = _default("backend")
    filename_tmpl: str = _default("filename_tmpl")
    start_index: int = _default("start_index")


@dataclass(frozen=True)
class AugmentSpec:
    """The training augmentation (see zeroi2v.data.transforms for the order of its steps)."""

    short_side: int | None = _default("short_side")
    crop_scale: tuple = _default("crop_scale")
    rand_augment: bool = _default("rand_augment")
    rand_augment_layers: int = _default("rand_augment_layers")
    rand_augment_magnitude: float = _default("rand_augment_magnitude")
    augment_order: str = _default("augment_order")
    flip: bool = _default("flip")
    random_erasing: float = _default("random_erasing")
    erasing_mode: str = _default("erasing_mode")
    gpu_augment: bool = _default("gpu_augment")


CLIP_FIELDS = tuple(f.name for f in dataclasses.fields(ClipSpec))
AUGMENT_FIELDS = tuple(f.name for f in dataclasses.fields(AugmentSpec))


def specs_from_config(data: DataConfig, num_frames: int, mean, std) -> tuple[ClipSpec, AugmentSpec]:
    """(ClipSpec, AugmentSpec) of a run: the data.* keys, the model's frame count, the normalisation."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in dataclasses.asdict(data).items()}
    clip = ClipSpec(
        num_frames=num_frames,
        mean=tuple(mean),
        std=tuple(std),
        **{k: values[k] for k in CLIP_FIELDS if k not in ("num_frames", "mean", "std")},
    )
    return clip, AugmentSpec(**{k: values[k] for k in AUGMENT_FIELDS})


def split_fields(fields: dict, clip: ClipSpec | None = None, augment: AugmentSpec | None = None):
    """Keyword arguments named like spec fields -> (ClipSpec, AugmentSpec), starting from the given ones."""
    unknown = sorted(set(fields) - set(CLIP_FIELDS) - set(AUGMENT_FIELDS))
    if unknown:
        raise TypeError(f"unknown clip/augmentation settings {unknown}; valid: {CLIP_FIELDS + AUGMENT_FIELDS}")
    clip = dataclasses.replace(clip or ClipSpec(), **{k: v for k, v in fields.items() if k in CLIP_FIELDS})
    augment = dataclasses.replace(augment or AugmentSpec(), **{k: v for k, v in fields.items() if k in AUGMENT_FIELDS})
    return clip, augment
