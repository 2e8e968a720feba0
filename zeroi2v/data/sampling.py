"""Which frames make a clip: MMAction2's dense `SampleFrames` and segment `UniformSample`.

The arithmetic follows MMAction2 1.x (the ZeroI2V reference code), so numbers in its configs mean
the same thing here.

dense   (K400 recipe, `clip_len x frame_interval x num_clips`, e.g. 8x16x1): a clip is `clip_len`
        frames `frame_interval` apart.
        train: `num_clips` clips, each at a random offset inside its own equal share of the video.
        test:  `num_clips` clips evenly spaced from the first frame to the last possible start
               (one clip: centred).
        A video shorter than the clip loops (`out_of_bound_opt="loop"`): index k reads frame
        k mod n. The clip keeps `clip_len` frames and its frames stay in playing order except at
        the wrap-around, which is how MMAction2 trains on short videos too.
uniform (SSv2/UCF101/HMDB51 recipe, "u8", "u16"): the video is cut into `clip_len` equal segments
        and one frame is taken from each.
        train: a random frame in each segment (num_clips independent draws).
        test:  the middle of each segment; `num_clips` > 1 shifts the pick to 1/(num_clips+1),
               2/(num_clips+1), ... of each segment (MMAction2's multi-clip UniformSample).
        A video shorter than `clip_len` repeats frames; indices never decrease.
"""

from __future__ import annotations

import numpy as np

SAMPLINGS = ("dense", "uniform")


def sample_indices(
    num_video_frames: int,
    num_frames: int,
    sampling: str = "dense",
    frame_interval: int = 16,
    num_clips: int = 1,
    train: bool = True,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(num_clips, num_frames) int64 frame indices into a video of `num_video_frames` frames.

    `rng` drives the training randomness (pass a seeded generator for reproducible runs); test-mode
    indices are deterministic.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose from {', '.join(SAMPLINGS)}")
    if num_frames < 1 or num_clips < 1 or frame_interval < 1:
        raise ValueError("num_frames, num_clips and frame_interval must be >= 1")
    n = max(1, int(num_video_frames))
    rng = rng if rng is not None else np.random.default_rng()
    if sampling == "dense":
        offsets = (
            _dense_train(n, num_frames * frame_interval, num_clips, rng)
            if train
            else _dense_test(n, (num_frames - 1) * frame_interval + 1, num_clips)
        )
        indices = offsets.astype(np.int64)[:, None] + np.arange(num_frames) * frame_interval
        return np.mod(indices, n)
    return _uniform(n, num_frames, num_clips, train, rng)


def _dense_train(n: int, span: int, num_clips: int, rng) -> np.ndarray:
    """MMAction2 `SampleFrames._get_train_clips` (keep_tail_frames=False)."""
    avg_interval = (n - span + 1) // num_clips
    if avg_interval > 0:
        return np.arange(num_clips) * avg_interval + rng.integers(0, avg_interval, size=num_clips)
    if n > max(num_clips, span):
        return np.sort(rng.integers(0, n - span + 1, size=num_clips))
    if avg_interval == 0:
        return np.around(np.arange(num_clips) * (n - span + 1.0) / num_clips)
    return np.zeros(num_clips)


def _dense_test(n: int, span: int, num_clips: int) -> np.ndarray:
    """MMAction2 `SampleFrames._get_test_clips` (3D recognizers): span = (clip_len - 1) * interval + 1."""
    max_offset = max(n - span, 0)
    if num_clips == 1:
        return np.array([max_offset // 2])
    return np.round(np.arange(num_clips) * (max_offset / (num_clips - 1)))


def _uniform(n: int, clip_len: int, num_clips: int, train: bool, rng) -> np.ndarray:
    """MMAction2 `UniformSample` (from SlowFast's SSv2 loader)."""
    seg = (n - 1) / clip_len
    starts = np.round(seg * np.arange(clip_len)).astype(np.int64)
    if train:
        ends = np.round(seg * np.arange(1, clip_len + 1)).astype(np.int64)
        return np.stack([starts + rng.integers(0, ends - starts + 1) for _ in range(num_clips)])
    step = seg / (num_clips + 1)
    return np.stack([starts + int(step * (k + 1)) for k in range(num_clips)])
