"""Video data: decoding, frame sampling, annotation layouts, transforms, datasets."""

from zeroi2v.data.annotations import (
    Annotations,
    check_labels,
    few_shot,
    flip_label_map,
    load_annotations,
    ssv2_flip_label_map,
)
from zeroi2v.data.build import create_dataset
from zeroi2v.data.dataset import VideoDataset, augment_on_device, collate, load_views, worker_init
from zeroi2v.data.decode import VideoDecodeError, num_frames, read_frames
from zeroi2v.data.sampling import sample_indices
from zeroi2v.data.spec import AugmentSpec, ClipSpec
from zeroi2v.data.transforms import test_transform, train_transform

__all__ = [
    "Annotations",
    "load_annotations",
    "few_shot",
    "ssv2_flip_label_map",
    "flip_label_map",
    "check_labels",
    "create_dataset",
    "ClipSpec",
    "AugmentSpec",
    "VideoDataset",
    "augment_on_device",
    "collate",
    "load_views",
    "worker_init",
    "VideoDecodeError",
    "num_frames",
    "read_frames",
    "sample_indices",
    "train_transform",
    "test_transform",
]
