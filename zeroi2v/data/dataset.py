"""The video dataset: annotations -> sampled, decoded, augmented clips.

Randomness (which frames, crop, flip, RandAugment ops, erasing) is derived from (seed, epoch, index)
only, so an item is the same whatever the worker count or order: runs are reproducible and a
resumed run sees exactly the data it would have seen.

A video that cannot be decoded never stops a run. In training it is replaced by another sample
(drawn from the same seed) and named in the item's `skipped` list, so the loop can count it and give
up when too many are broken. In test mode the item keeps its index and label, its video is zeros and
`broken` is True, so evaluation can count it instead of silently scoring garbage. Each broken path is
logged once per process.

`cache_frames=True` decodes every video once, when the dataset is made, and keeps all its frames in
memory (uint8): DataLoader workers are forked from the process that holds them, so no epoch decodes
again. Items are identical to decoding each time. For small datasets (the demo's 480 clips of
16 x 32 x 32 pixels are 24 MB); past a quarter of the memory it warns and decodes each epoch instead.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import numpy as np
import torch

from zeroi2v.data.decode import VideoDecodeError, read_frames
from zeroi2v.data.decode import num_frames as count_frames
from zeroi2v.data.sampling import sample_indices
from zeroi2v.data.transforms import test_transform, train_transform
from zeroi2v.errors import UserError

log = logging.getLogger("zeroi2v.data")
_reported: set[str] = set()


def report_broken(path: str, error: Exception) -> None:
    """Log a broken video once per process (a DataLoader worker is a process)."""
    if path not in _reported:
        _reported.add(path)
        log.warning("skipping unreadable video %s (%s)", path, error)


class VideoDataset(torch.utils.data.Dataset):
    """Items: {"video", "label", "index", "skipped", "broken"}.

    video: float (3, T, H, W) in training; (V, 3, T, H, W) at test with V = test_clips·test_crops,
    clip-major (clip 0 crops 0..C-1, clip 1 ...). `flip_label_map` swaps labels when a training clip
    is mirrored (SSv2 direction classes). The training augmentation's keywords (`augment_order`,
    `rand_augment*`, `random_erasing`, `erasing_mode`, `crop_scale`, `short_side`) go to `train_transform`.
    """

    def __init__(
        self,
        root,
        samples,
        *,
        num_frames: int,
        sampling: str = "dense",
        frame_interval: int = 16,
        train: bool = True,
        img_size: int = 224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        test_clips: int = 1,
        test_crops: int = 1,
        flip: bool = True,
        flip_label_map: dict | None = None,
        rand_augment: bool = True,
        rand_augment_layers: int = 4,
        rand_augment_magnitude: float = 7.0,
        augment_order: str = "k400",
        random_erasing: float = 0.0,
        erasing_mode: str = "const",
        short_side: int | None = None,
        crop_scale=(0.08, 1.0),
        seed: int = 0,
        backend: str = "auto",
        max_retries: int = 10,
        cache_frames: bool = False,
    ):
        self.root = os.fspath(root) if root else ""
        self.samples = list(samples)
        self.num_frames, self.sampling, self.frame_interval = num_frames, sampling, frame_interval
        self.train, self.seed, self.backend, self.max_retries = train, seed, backend, max_retries
        self.clips = 1 if train else test_clips
        self.views = 1 if train else test_clips * test_crops
        self.flip_label_map = {int(k): int(v) for k, v in (flip_label_map or {}).items()}
        self.epoch = 0
        self._lengths: dict[str, int] = {}  # verified frame counts, per process
        self._frames: dict[str, torch.Tensor] = {}  # cache_frames: every decoded frame, (N, H, W, 3) uint8
        if train:
            self.transform = train_transform(
                img_size,
                mean,
                std,
                short_side=short_side,
                rand_augment=rand_augment,
                rand_augment_layers=rand_augment_layers,
                rand_augment_magnitude=rand_augment_magnitude,
                flip=flip,
                order=augment_order,
                random_erasing=random_erasing,
                erasing_mode=erasing_mode,
                scale=crop_scale,
            )
        else:
            self.transform = test_transform(img_size, mean, std, crops=test_crops)
        self.shape = (3, num_frames, img_size, img_size)
        if cache_frames:
            self.fill_cache()

    def fill_cache(self) -> None:
        """Decode every readable video whole, once (broken ones stay out: items skip them as usual).
        Stops caching, with a warning, when the frames would take more than a quarter of the memory."""
        from tqdm import tqdm

        paths = sorted({self.path(i) for i in range(len(self.samples))})
        budget, used = _memory_bytes() // 4, 0
        for path in tqdm(paths, desc="decoding the videos into memory", unit="video", disable=None, leave=False):
            try:
                length = count_frames(path, self.backend)
                frames = read_frames(path, np.arange(length), self.backend)
            except VideoDecodeError:
                continue
            self._lengths[path], self._frames[path] = length, frames
            used += frames.numel()
            projected = used * len(paths) / len(self._frames)
            if budget and projected > budget:
                log.warning(
                    "data.cache_frames: the decoded frames of %d videos would take about %.1f GB, more "
                    "than a quarter of the memory; decoding each epoch instead",
                    len(paths),
                    projected / 2**30,
                )
                self._frames.clear()
                return

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (in the main process: workers get a copy when they start)."""
        self.epoch = epoch

    def path(self, index: int) -> str:
        return os.path.join(self.root, self.samples[index][0])

    def rng(self, index: int, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, attempt])

    def load(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        """Decode and transform one video; raises VideoDecodeError."""
        path, label = self.path(index), self.samples[index][1]
        if path not in self._lengths:
            self._lengths[path] = count_frames(path, self.backend)
        indices = sample_indices(
            self._lengths[path], self.num_frames, self.sampling, self.frame_interval, self.clips, self.train, rng
        )
        if path in self._frames:  # read_frames repeats the last frame past the end: so does the cache
            cached = self._frames[path]
            frames = cached[np.minimum(indices.reshape(-1), len(cached) - 1)]
        else:
            frames = read_frames(path, indices.reshape(-1), self.backend)  # (clips·T, H, W, 3), in sampled order
        frames = frames.permute(0, 3, 1, 2).reshape(self.clips, self.num_frames, 3, *frames.shape[1:3])
        if not self.train:
            return torch.cat([self.transform(clip) for clip in frames]), label
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also queues CUDA seeding with a stack trace (~1 ms)
            torch.default_generator.manual_seed(int(rng.integers(2**62)))
            video, flipped = self.transform(frames[0])
        return video, self.flip_label_map.get(label, label) if flipped else label

    def __getitem__(self, index: int) -> dict:
        skipped, candidate = [], index
        for attempt in range(self.max_retries + 1):
            try:
                video, label = self.load(candidate, self.rng(candidate, attempt))
                return {"video": video, "label": label, "index": candidate, "skipped": skipped, "broken": False}
            except VideoDecodeError as e:
                report_broken(self.path(candidate), e)
                skipped.append(self.path(candidate))
                if not self.train:
                    return {
                        "video": torch.zeros(self.views, *self.shape),
                        "label": self.samples[index][1],
                        "index": index,
                        "skipped": skipped,
                        "broken": True,
                    }
                candidate = int(self.rng(index, attempt + 1).integers(len(self.samples)))
        raise UserError(
            f"{len(skipped)} videos in a row could not be decoded (last: {skipped[-1]}); is data.root right?"
        )


def _memory_bytes() -> int:
    """Physical memory (0 where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


def collate(batch: list[dict]) -> dict:
    """Stack a list of items into a batch; `skipped` paths are concatenated."""
    return {
        "video": torch.stack([b["video"] for b in batch]),
        "label": torch.tensor([b["label"] for b in batch], dtype=torch.long),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
        "broken": torch.tensor([b["broken"] for b in batch], dtype=torch.bool),
        "skipped": [p for b in batch for p in b["skipped"]],
    }


WORKER_STOP_GRACE_S = 10.0  # how long a worker keeps serving after a SIGTERM


def worker_init(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a SIGTERM does not kill a worker before the main process has stopped.

    Preemption (SLURM, `timeout`) signals every process of the job, the workers too. A worker killed by
    it makes torch raise "DataLoader worker ... is killed by signal" in the main process: a traceback
    before the main process, which got the signal as well, can save its checkpoint. So a worker answers
    SIGTERM by exiting with status 0 (which torch does not report) after WORKER_STOP_GRACE_S seconds of
    still serving the batch the main process may be waiting for, or at once on a second SIGTERM; the main
    process normally shuts it down before that. (Ignoring SIGTERM instead would hang the exit of a process
    that leaves an iterator open: Python's exit terminates daemonic workers with SIGTERM and then waits
    for them.) Ctrl-C (SIGINT) is left to the main process.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_after_grace)


def _exit_after_grace(signum, frame) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    timer = threading.Timer(WORKER_STOP_GRACE_S, os._exit, (0,))
    timer.daemon = True
    timer.start()


def load_views(
    path,
    *,
    num_frames: int,
    sampling: str,
    frame_interval: int,
    img_size: int,
    mean,
    std,
    test_clips: int = 1,
    test_crops: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """The test views (V, 3, T, H, W) of one video file, as evaluation builds them (for `predict`).

    Raises VideoDecodeError for a file that cannot be read.
    """
    dataset = VideoDataset(
        "",
        [(os.fspath(path), 0)],
        num_frames=num_frames,
        sampling=sampling,
        frame_interval=frame_interval,
        train=False,
        img_size=img_size,
        mean=mean,
        std=std,
        test_clips=test_clips,
        test_crops=test_crops,
        backend=backend,
    )
    return dataset.load(0, dataset.rng(0))[0]
