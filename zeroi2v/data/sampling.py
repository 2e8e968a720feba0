"""Which frames make a clip: MMAction2's dense and uniform (segment) sampling.

dense   (K400 recipe, `clip_len × frame_interval × num_clips`): a clip is `clip_len` frames
        `frame_interval` apart. Training: one clip at a random offset (per clip slot). Test: `num_clips`
        clips evenly spaced over the video. A video shorter than a clip loops (MMAction2's
        `out_of_bound_opt="loop"`), so the clip still has `clip_len` frames in temporal order.
uniform (SSv2/UCF/HMDB recipe): the video is cut into `clip_len` equal segments and one frame is taken
        from each: a random one in training, the middle one at test; `num_clips` test clips shift the
        pick inside the segments. Short videos repeat frames (indices stay non-decreasing).

Indices are always in temporal order within a clip: nothing here may destroy frame order.
"""
from __future__ import annotations

import numpy as np

SAMPLINGS = ("dense", "uniform")


def sample_indices(num_video_frames: int, num_frames: int, sampling: str = "dense", frame_interval: int = 1,
                   num_clips: int = 1, train: bool = True, rng: np.random.Generator | None = None) -> np.ndarray:
    """(num_clips, num_frames) frame indices into a video of `num_video_frames` frames."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose from {SAMPLINGS}")
    n = max(1, int(num_video_frames))
    rng = rng if rng is not None else np.random.default_rng()
    if sampling == "dense":
        return _dense(n, num_frames, frame_interval, num_clips, train, rng)
    return _uniform(n, num_frames, num_clips, train, rng)


def _dense(n, clip_len, interval, num_clips, train, rng) -> np.ndarray:
    span = clip_len * interval
    if train:
        slot = (n - span + 1) / num_clips
        if slot > 0:
            offsets = np.arange(num_clips) * slot + rng.integers(0, max(1, int(slot)), size=num_clips)
        elif n > max(num_clips, span):
            offsets = np.sort(rng.integers(0, n - span + 1, size=num_clips))
        else:
            offsets = np.zeros(num_clips)
    else:
        slot = (n - span + 1) / num_clips
        offsets = np.arange(num_clips) * slot + slot / 2 if n > span - 1 else np.zeros(num_clips)
    indices = offsets.astype(np.int64)[:, None] + np.arange(clip_len)[None, :] * interval
    return np.mod(indices, n)  # loop short videos


def _uniform(n, clip_len, num_clips, train, rng) -> np.ndarray:
    seg = (n - 1) / clip_len
    starts = np.round(seg * np.arange(clip_len)).astype(np.int64)
    ends = np.round(seg * np.arange(1, clip_len + 1)).astype(np.int64)
    if train:
        return np.stack([starts + rng.integers(0, ends - starts + 1) for _ in range(num_clips)])
    step = seg / (num_clips + 1)
    return np.stack([np.minimum(starts + int(step * (k + 1)), n - 1) for k in range(num_clips)])
