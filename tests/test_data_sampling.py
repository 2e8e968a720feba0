"""Frame sampling: MMAction2's SampleFrames (dense) and UniformSample semantics, never reordering."""

import numpy as np
import pytest

from zeroi2v.data import sample_indices


def test_dense_training_clip_is_a_random_window():
    rng = np.random.default_rng(0)
    starts = []
    for _ in range(300):
        clip = sample_indices(300, 8, "dense", 16, train=True, rng=rng)
        assert clip.shape == (1, 8) and clip.dtype == np.int64
        assert np.all(np.diff(clip[0]) == 16) and clip.max() < 300
        starts.append(clip[0, 0])
    # MMAction2: offset uniform in [0, n - clip_len·interval + 1) = [0, 173)
    assert min(starts) < 10 and 160 < max(starts) <= 172


def test_dense_training_with_several_clips_spreads_them():
    rng = np.random.default_rng(1)
    for _ in range(50):
        clips = sample_indices(300, 8, "dense", 16, num_clips=2, train=True, rng=rng)
        avg_interval = (300 - 128 + 1) // 2
        assert 0 <= clips[0, 0] < avg_interval <= clips[1, 0] < 2 * avg_interval


def test_dense_test_clips_are_evenly_spaced_and_deterministic():
    # MMAction2 test: span = (8 - 1)·16 + 1 = 113, max_offset = 300 - 113 = 187
    one = sample_indices(300, 8, "dense", 16, num_clips=1, train=False)
    assert one.tolist() == [[93 + 16 * k for k in range(8)]]  # centred: 187 // 2
    three = sample_indices(300, 8, "dense", 16, num_clips=3, train=False)
    assert three[:, 0].tolist() == [0, 94, 187]  # round(k · 187 / 2)
    assert np.all(np.diff(three, axis=1) == 16) and three.max() == 299
    assert np.array_equal(three, sample_indices(300, 8, "dense", 16, num_clips=3, train=False))


def test_dense_short_video_loops():
    """Shorter than the clip: MMAction2's out_of_bound_opt="loop" (index k reads frame k mod n)."""
    expected = [[0, 16, 32, 48, 14, 30, 46, 12]]
    assert sample_indices(50, 8, "dense", 16, train=True, rng=np.random.default_rng(0)).tolist() == expected
    assert sample_indices(50, 8, "dense", 16, train=False).tolist() == expected
    assert sample_indices(1, 4, "dense", 2, num_clips=2, train=False).tolist() == [[0] * 4] * 2


def test_uniform_training_takes_one_random_frame_per_segment():
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(200):
        idx = sample_indices(81, 8, "uniform", train=True, rng=rng)[0]
        for i in range(8):  # segment i of (81 - 1) / 8 = 10 frames: [10 i, 10 (i + 1)]
            assert 10 * i <= idx[i] <= 10 * (i + 1)
        assert np.all(np.diff(idx) >= 0)
        seen.update(idx.tolist())
    assert len(seen) > 70  # every frame reachable


def test_uniform_test_takes_segment_middles_and_shifts_for_more_clips():
    assert sample_indices(81, 8, "uniform", train=False).tolist() == [[10 * i + 5 for i in range(8)]]
    two = sample_indices(81, 8, "uniform", num_clips=2, train=False)
    assert two.tolist() == [[10 * i + 3 for i in range(8)], [10 * i + 6 for i in range(8)]]  # 1/3, 2/3 in


def test_uniform_short_video_repeats_frames_in_order():
    for train in (True, False):
        idx = sample_indices(5, 16, "uniform", train=train, rng=np.random.default_rng(3))[0]
        assert idx.min() >= 0 and idx.max() <= 4 and np.all(np.diff(idx) >= 0)


def test_same_generator_state_same_clip():
    a = sample_indices(500, 8, "dense", 4, train=True, rng=np.random.default_rng([7, 1, 3]))
    b = sample_indices(500, 8, "dense", 4, train=True, rng=np.random.default_rng([7, 1, 3]))
    assert np.array_equal(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="sampling"):
        sample_indices(100, 8, "random")
    with pytest.raises(ValueError):
        sample_indices(100, 0, "dense")
