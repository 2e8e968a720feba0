"""The video dataset: annotations -> sampled, decoded, augmented clips.

Randomness (which frames, which crop, flip, RandAugment ops) is derived from (seed, epoch, index)
only, so a sample is the same whatever the worker count or order: runs are reproducible and a resumed
run sees exactly the data it would have seen.

A video that cannot be decoded is never fatal. In training it is replaced by another sample (drawn
from the same seed) and reported in the item's `skipped` list; in test mode the item is flagged
`broken` so evaluation can count it. Each broken path is logged once per process.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torchvision import tv_tensors

from zeroi2v.data.decode import VideoDecodeError, num_frames as count_frames, read_frames
from zeroi2v.data.sampling import sample_indices
from zeroi2v.data.transforms import eval_transform, train_transform

log = logging.getLogger("zeroi2v.data")
_reported: set[str] = set()


def report_broken(path: str, error: Exception) -> None:
    if path not in _reported:
        _reported.add(path)
        log.warning("skipping unreadable video %s (%s)", path, error)


class VideoDataset(torch.utils.data.Dataset):
    def __init__(self, root, samples, *, num_frames: int, sampling: str = "dense", frame_interval: int = 1,
                 train: bool = True, img_size: int = 224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 test_clips: int = 1, test_crops: int = 1, flip: bool = True, flip_label_map: dict | None = None,
                 rand_augment: bool = True, random_erasing: float = 0.0, short_side: int | None = None,
                 crop_scale=(0.08, 1.0),
                 seed: int = 0, backend: str = "auto", max_retries: int = 10):
        self.root = str(root) if root else ""
        self.samples = list(samples)
        self.num_frames, self.sampling, self.frame_interval = num_frames, sampling, frame_interval
        self.train, self.seed, self.backend, self.max_retries = train, seed, backend, max_retries
        self.test_clips, self.test_crops = test_clips, test_crops
        self.flip, self.flip_label_map = flip, flip_label_map or {}
        self.epoch = 0
        if train:
            self.transform = train_transform(img_size, mean, std, short_side=short_side,
                                             rand_augment=rand_augment, random_erasing=random_erasing,
                                             scale=crop_scale)
        else:
            self.transform = eval_transform(img_size, mean, std, crops=test_crops)
        self.shape = (3, num_frames, img_size, img_size)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def path(self, index: int) -> str:
        return os.path.join(self.root, self.samples[index][0])

    def _rng(self, index: int, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, attempt])

    def load(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        """Decode and transform one video: train (3, T, H, W), test (V, 3, T, H, W)."""
        path, label = self.path(index), self.samples[index][1]
        clips = 1 if self.train else self.test_clips
        indices = sample_indices(count_frames(path), self.num_frames, self.sampling, self.frame_interval,
                                 clips, self.train, rng)
        frames = read_frames(path, indices.reshape(-1), self.backend)  # (clips·T, H, W, 3)
        h, w = frames.shape[1:3]
        frames = frames.permute(0, 3, 1, 2).reshape(clips, self.num_frames, 3, h, w)
        if self.train:
            video = frames[0]
            if self.flip and rng.random() < 0.5:
                video = video.flip(-1)
                label = self.flip_label_map.get(label, label)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**62)))
                out = self.transform(tv_tensors.Video(video))  # (T, C, H, W)
            return out.permute(1, 0, 2, 3).contiguous(), label
        views = torch.cat([self.transform(clip) for clip in frames])  # clip-major (clips·crops, C, T, H, W)
        return views, label

    def __getitem__(self, index: int) -> dict:
        skipped = []
        candidate = index
        for attempt in range(self.max_retries + 1):
            try:
                video, label = self.load(candidate, self._rng(candidate, attempt))
                return {"video": video, "label": label, "index": candidate, "skipped": skipped, "broken": False}
            except (VideoDecodeError, RuntimeError, ValueError) as e:
                report_broken(self.path(candidate), e)
                skipped.append(self.path(candidate))
                if not self.train:
                    views = self.test_clips * self.test_crops
                    return {"video": torch.zeros(views, *self.shape), "label": self.samples[index][1],
                            "index": index, "skipped": skipped, "broken": True}
                candidate = int(self._rng(index, attempt + 1).integers(len(self.samples)))
        raise RuntimeError(f"{self.max_retries + 1} videos in a row could not be decoded (last: {skipped[-1]}); "
                           "is the data root right?")


def collate(batch: list[dict]) -> dict:
    return {
        "video": torch.stack([b["video"] for b in batch]),
        "label": torch.tensor([b["label"] for b in batch], dtype=torch.long),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
        "broken": torch.tensor([b["broken"] for b in batch], dtype=torch.bool),
        "skipped": [p for b in batch for p in b["skipped"]],
    }


def load_views(path, *, num_frames: int, sampling: str, frame_interval: int, img_size: int, mean, std,
               test_clips: int = 1, test_crops: int = 1, backend: str = "auto") -> torch.Tensor:
    """Test views (V, 3, T, H, W) of one video file, for `predict`; raises VideoDecodeError."""
    dataset = VideoDataset("", [(str(path), 0)], num_frames=num_frames, sampling=sampling,
                           frame_interval=frame_interval, train=False, img_size=img_size, mean=mean, std=std,
                           test_clips=test_clips, test_crops=test_crops, backend=backend)
    video, _ = dataset.load(0, dataset._rng(0))
    return video
