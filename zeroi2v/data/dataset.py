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

import ctypes
import ctypes.util
import logging
import math
import os
import signal
import threading

import numpy as np
import torch

from zeroi2v.data.decode import VideoDecodeError, read_frames
from zeroi2v.data.decode import num_frames as count_frames
from zeroi2v.data.frames import count_frames as count_folder
from zeroi2v.data.frames import read_frame_files
from zeroi2v.data.sampling import sample_indices
from zeroi2v.data.spec import AugmentSpec, ClipSpec, split_fields
from zeroi2v.data.transforms import TrainTransform, test_transform
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
    clip-major (clip 0 crops 0..C-1, clip 1 ...). Samples are video files or rawframe folders (a
    path that is a folder, or one whose frame count `lengths` gives); both go through the same
    sampling, augmentation and broken-item handling.

    `clip` and `augment` (zeroi2v.data.spec) say what a clip is and how training augments it;
    keyword arguments named like their fields change single settings (`num_frames=4, img_size=32`).
    `flip_label_map` swaps labels when a training clip is mirrored (SSv2 direction classes);
    `lengths`: {relative path: total_frames} from a rawframe list.

    `clip.repeat_clips` N > 1 (training): N clips sampled and augmented independently from one read of
    the video; video (N, 3, T, H, W) and label (N,), which `collate` flattens into the batch.
    `augment.gpu_augment` (training): video is uint8 (T, C, H, W) after the cheap geometric steps and
    the item carries the clip's `plan`; `augment_on_device` finishes the batch on the training device.
    """

    def __init__(
        self,
        root,
        samples,
        clip: ClipSpec | None = None,
        augment: AugmentSpec | None = None,
        *,
        train: bool = True,
        seed: int = 0,
        flip_label_map: dict | None = None,
        lengths: dict | None = None,
        classes: list | None = None,
        max_retries: int = 10,
        cache_frames: bool = False,
        **fields,
    ):
        clip, augment = split_fields(fields, clip, augment)
        self.root = os.fspath(root) if root else ""
        self.samples = list(samples)
        self.clip, self.augment, self.classes = clip, augment, classes
        self.num_frames, self.sampling, self.frame_interval = clip.num_frames, clip.sampling, clip.frame_interval
        self.train, self.seed, self.backend, self.max_retries = train, seed, clip.backend, max_retries
        self.clips = 1 if train else clip.test_clips
        self.repeat = clip.repeat_clips if train else 1
        self.views = 1 if train else clip.test_clips * clip.test_crops
        self.on_device = train and augment.gpu_augment
        self.flip_label_map = {int(k): int(v) for k, v in (flip_label_map or {}).items()}
        self.listed = {os.path.join(self.root, rel): int(n) for rel, n in (lengths or {}).items()}
        self.epoch = 0
        self._lengths: dict[str, int] = {}  # verified frame counts, per process
        self._folders: dict[str, bool] = {}  # path -> is a rawframe folder
        self._frames: dict[str, torch.Tensor] = {}  # cache_frames: every decoded frame, (N, H, W, 3) uint8
        if train:
            self.transform = TrainTransform(clip.img_size, clip.mean, clip.std, augment)
        else:
            self.transform = test_transform(clip.img_size, clip.mean, clip.std, crops=clip.test_crops)
        self.shape = (3, clip.num_frames, clip.img_size, clip.img_size)
        if cache_frames:
            self.fill_cache()

    def is_folder(self, path: str) -> bool:
        if path not in self._folders:
            self._folders[path] = path in self.listed or os.path.isdir(path)
        return self._folders[path]

    def count(self, path: str) -> int:
        """Frame count of a video file or a rawframe folder; raises VideoDecodeError."""
        if self.is_folder(path):
            return count_folder(path, self.clip.filename_tmpl, self.clip.start_index, self.listed.get(path))
        return count_frames(path, self.backend)

    def read(self, path: str, indices) -> torch.Tensor:
        """uint8 (len(indices), H, W, 3); raises VideoDecodeError."""
        if self.is_folder(path):
            return read_frame_files(path, indices, self.clip.filename_tmpl, self.clip.start_index)
        return read_frames(path, indices, self.backend)

    def fill_cache(self) -> None:
        """Decode every readable video whole, once (broken ones stay out: items skip them as usual).
        Stops caching, with a warning, when the frames would take more than a quarter of the memory."""
        from tqdm import tqdm

        paths = sorted({self.path(i) for i in range(len(self.samples))})
        budget, used = _memory_bytes() // 4, 0
        for path in tqdm(paths, desc="decoding the videos into memory", unit="video", disable=None, leave=False):
            try:
                length = self.count(path)
                frames = self.read(path, np.arange(length))
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

    def load(self, index: int, rng: np.random.Generator, out: torch.Tensor | None = None):
        """Read and transform one sample: (video, label), plus the plans with gpu_augment; raises
        VideoDecodeError. Repeated clips (training) are sampled first, then augmented in turn; `out`
        (training without gpu_augment): the float tensor the clips are written into."""
        path, label = self.path(index), self.samples[index][1]
        if path not in self._lengths:
            self._lengths[path] = self.count(path)
        n, t, picks, seeds = self._lengths[path], self.num_frames, [], []
        for _ in range(self.repeat):  # each clip: its frames, then its augmentation seed (training)
            picks.append(sample_indices(n, t, self.sampling, self.frame_interval, self.clips, self.train, rng))
            seeds.append(int(rng.integers(2**62)) if self.train else 0)
        indices = np.concatenate(picks)  # (repeat·clips, T)
        if path in self._frames:  # read_frames repeats the last frame past the end: so does the cache
            cached = self._frames[path]
            frames = cached[np.minimum(indices.reshape(-1), len(cached) - 1)]
        else:
            frames = self.read(path, indices.reshape(-1))  # (clips·T, H, W, 3), in sampled order
        frames = frames.permute(0, 3, 1, 2).reshape(len(indices), self.num_frames, 3, *frames.shape[1:3])
        if not self.train:
            return torch.cat([self.transform(clip) for clip in frames]), label
        videos, labels, plans = [], [], []
        slots = [None] * len(frames) if out is None else out.view(len(frames), *self.shape)
        for clip, seed, slot in zip(frames, seeds, slots, strict=True):
            with torch.random.fork_rng(devices=[]):
                # the CPU generator only: torch.manual_seed also queues CUDA seeding with a stack trace (~1 ms)
                torch.default_generator.manual_seed(seed)
                if self.on_device:
                    video, plan = self.transform.start(clip)
                    plans.append(plan)
                    flipped = plan.flipped
                else:
                    video, flipped = self.transform(clip, slot)
            videos.append(video)
            labels.append(self.flip_label_map.get(label, label) if flipped else label)
        if self.repeat == 1:
            return (videos[0], labels[0], plans[0]) if self.on_device else (videos[0], labels[0])
        if out is not None:
            return out, labels
        stacked = torch.stack(videos) if len({v.shape for v in videos}) == 1 else videos
        return (stacked, labels, plans) if self.on_device else (stacked, labels)

    def __getitem__(self, index: int) -> dict:
        return self.item(index)

    def __getitems__(self, indices) -> list[dict]:
        """A batch's items, as the DataLoader fetches them: training clips are normalised straight into
        one batch tensor (in shared memory in a worker), which `collate` then takes as it is: the
        batch is assembled without a copy. The items equal `dataset[i]`'s."""
        indices = list(indices)
        if not self.train or self.on_device or not indices:
            return [self.item(i) for i in indices]
        shape = (self.repeat, *self.shape) if self.repeat > 1 else self.shape
        batch = batch_tensor((len(indices), *shape), torch.float32)
        return [self.item(i, slot) for i, slot in zip(indices, batch, strict=True)]

    def item(self, index: int, out: torch.Tensor | None = None) -> dict:
        """Item `index` (a replacement for a broken video in training), its clips written into `out`."""
        skipped, candidate = [], index
        for attempt in range(self.max_retries + 1):
            try:
                video, label, *plan = self.load(candidate, self.rng(candidate, attempt), out)
                item = {"video": video, "label": label, "index": candidate, "skipped": skipped, "broken": False}
                return {**item, "plan": plan[0]} if plan else item
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
    """Stack a list of items into a batch; `skipped` paths are concatenated. Repeated clips of an item
    (`data.repeat_clips`) become consecutive clips of the batch; clips of different sizes (gpu_augment
    with the k400 order: RandAugment before the crop) stay a list."""
    if batch and isinstance(batch[0]["label"], list):  # repeated clips: one entry per clip
        batch = [
            {**b, "video": video, "label": label, "plan": plan, "skipped": b["skipped"] if k == 0 else []}
            for b in batch
            for k, (video, label, plan) in enumerate(
                zip(b["video"], b["label"], b.get("plan") or [None] * len(b["label"]), strict=True)
            )
        ]
    videos = [b["video"] for b in batch]
    out = {
        "video": stack(videos) if len({v.shape for v in videos}) == 1 else videos,
        "label": torch.tensor([b["label"] for b in batch], dtype=torch.long),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
        "broken": torch.tensor([b["broken"] for b in batch], dtype=torch.bool),
        "skipped": [p for b in batch for p in b["skipped"]],
    }
    if batch and batch[0].get("plan") is not None:
        out["plans"] = [b["plan"] for b in batch]
    return out


def batch_tensor(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor for a batch; in a DataLoader worker in shared memory, as torch's
    `default_collate` makes its batches, so sending it to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    try:  # default_collate's own (private) way; a torch without it sends the batch with one copy
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape), device="cpu")
    except (AttributeError, TypeError):  # pragma: no cover - depends on the torch version
        return torch.empty(shape, dtype=dtype)
    return torch.empty(0, dtype=dtype).set_(storage.untyped(), 0, shape)


def stack(videos: list[torch.Tensor]) -> torch.Tensor:
    """`torch.stack(videos)`; videos that are already the consecutive parts of one tensor (the batch
    `__getitems__` writes) are that tensor, without a copy."""
    first, whole = videos[0], videos[0]._base
    size = first.numel() * first.element_size()
    if (
        whole is not None
        and whole.is_contiguous()
        and whole.dtype == first.dtype
        and whole.numel() == first.numel() * len(videos)
        and all(v._base is whole and v.is_contiguous() for v in videos)
        and all(v.data_ptr() == whole.data_ptr() + i * size for i, v in enumerate(videos))
    ):
        return whole.view(len(videos), *first.shape)
    out = batch_tensor((len(videos), *first.shape), first.dtype) if first.device.type == "cpu" else None
    return torch.stack(videos, out=out)


def augment_on_device(batch: dict, device, dataset=None) -> torch.Tensor:
    """The batch's clips on `device`, ready for the model: float (B, 3, T, H, W).

    Batches of a `gpu_augment` training set (they carry `plans`) are finished there: RandAugment,
    crop, flip, erasing and normalisation of each clip as its plan says (`dataset`: the dataset that
    made the batch). Other batches are just moved.
    """
    if "plans" not in batch:
        return batch["video"].to(device, non_blocking=True)
    return dataset.transform.finish(batch["video"], batch["plans"], device)


WORKER_STOP_GRACE_S = 10.0  # how long a worker keeps serving after a SIGTERM


# glibc's malloc gives large freed blocks (over 128 KiB, adapting up to 32 MiB) back to the kernel, so
# every clip's frames and float copies land on fresh pages that the kernel faults in and zeroes: about
# 3 ms more per prepared-frames clip here. Raised thresholds keep freed memory in the worker's heap
# for the next clip (its footprint stays at its peak: a few batches).
MALLOPT = ((-3, 32 << 20), (-1, 512 << 20))  # (M_MMAP_THRESHOLD, bytes), (M_TRIM_THRESHOLD, bytes)


def keep_freed_memory() -> bool:
    """Let this process's malloc reuse freed memory rather than return it to the kernel (glibc; True
    where set, elsewhere nothing happens). The loader workers call it; it changes no result."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in MALLOPT)


def worker_init(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a SIGTERM does not kill a worker before the main process has stopped.

    Preemption (SLURM, `timeout`) signals every process of the job, the workers too. A worker killed by
    it makes torch raise "DataLoader worker ... is killed by signal" in the main process: a traceback
    before the main process, which got the signal as well, can save its checkpoint. So a worker answers
    SIGTERM by exiting with status 0 (which torch does not report) after WORKER_STOP_GRACE_S seconds of
    still serving the batch the main process may be waiting for, or at once on a second SIGTERM; the main
    process normally shuts it down before that. (Ignoring SIGTERM instead would hang the exit of a process
    that leaves an iterator open: Python's exit terminates daemonic workers with SIGTERM and then waits
    for them.) Ctrl-C (SIGINT) is left to the main process. Also `keep_freed_memory`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_after_grace)
    keep_freed_memory()


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
