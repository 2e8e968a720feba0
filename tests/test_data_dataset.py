"""Transforms and the dataset on real video files: shapes, views, reproducibility, broken files."""

import logging

import av
import numpy as np
import pytest
import torch

from tests.videos import read_index, write_index_video
from zeroi2v.data import VideoDataset, collate, load_annotations, load_views, sample_indices, train_transform
from zeroi2v.data import test_transform as make_test_transform
from zeroi2v.errors import UserError

HALF = dict(mean=(0.5,) * 3, std=(0.5,) * 3)
RAW = dict(mean=(0.0,) * 3, std=(1.0,) * 3)  # output = pixel / 255, so pictures can be read back


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in 0..1 -> (T, H, W, 3) uint8."""
    return (video * 255).round().clamp(0, 255).byte().permute(1, 2, 3, 0).numpy()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "a").mkdir()
    (root / "b").mkdir()
    for i in range(3):
        write_index_video(root / "a" / f"{i}.mp4", 40)
    for i in range(2):
        write_index_video(root / "b" / f"{i}.avi", 30, codec="mjpeg")
    return root


# --- transforms ----------------------------------------------------------------------------------------
def test_train_transform_uses_the_same_parameters_for_every_frame():
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    video = frame.expand(6, 3, 40, 60).contiguous()
    transform = train_transform(32, **HALF, random_erasing=1.0)
    flips = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out, flipped = transform(video)
        flips.add(flipped)
        assert out.shape == (3, 6, 32, 32) and out.dtype == torch.float32
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(1, 6))
    assert flips == {True, False}


def test_train_transform_flip_is_a_mirror_and_reported():
    """No RandAugment, full-frame crop: a flipped clip is exactly the mirror of an unflipped one."""
    video = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    video[..., :8] = 255  # bright on the left
    transform = train_transform(32, **RAW, short_side=0, rand_augment=False, crop_scale=(1.0, 1.0))
    outputs = {}
    for seed in range(10):
        torch.manual_seed(seed)
        out, flipped = transform(video)
        outputs[flipped] = out
        left, right = out[..., :16].mean(), out[..., 16:].mean()
        assert (right > left) == flipped
    assert torch.equal(outputs[True], outputs[False].flip(-1))
    assert train_transform(32, **RAW, flip=False)(video)[1] is False


@pytest.mark.parametrize("h, w", [(40, 72), (72, 40)])
def test_three_crop_covers_the_long_side(h, w):
    video = (
        torch.arange(w, dtype=torch.float32).expand(2, 3, h, w)
        if w > h
        else torch.arange(h, dtype=torch.float32)[:, None].expand(2, 3, h, w)
    )
    video = video.round().to(torch.uint8).contiguous()
    views = make_test_transform(40, **RAW, crops=3)(video)
    assert views.shape == (3, 3, 2, 40, 40)
    first, last = views[0] * 255, views[2] * 255
    axis = -1 if w > h else -2
    assert first.amin().round() == 0 and last.amax().round() == max(h, w) - 1  # both ends of the long side
    assert torch.all(views[0].mean(axis) < views[1].mean(axis)) and torch.all(views[1].mean(axis) < views[2].mean(axis))
    center = make_test_transform(40, **RAW, crops=1)(video)
    assert center.shape == (1, 3, 2, 40, 40) and torch.equal(center[0], views[1])


# --- dataset ------------------------------------------------------------------------------------------
def test_training_items_are_reproducible_and_change_with_the_epoch(tree):
    samples = load_annotations(tree).samples
    ds = VideoDataset(tree, samples, num_frames=4, sampling="uniform", train=True, img_size=32, **HALF, seed=5)
    item = ds[3]
    assert item["video"].shape == (3, 4, 32, 32) and item["label"] == 1 and item["index"] == 3
    assert item["skipped"] == [] and item["broken"] is False
    ds[0], ds[4]  # other items in between change nothing
    assert torch.equal(ds[3]["video"], item["video"])
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["video"], item["video"])
    ds.set_epoch(0)
    assert torch.equal(ds[3]["video"], item["video"])


def test_items_do_not_depend_on_the_number_of_workers(tree):
    samples = load_annotations(tree).samples
    ds = VideoDataset(
        tree,
        samples,
        num_frames=4,
        sampling="dense",
        frame_interval=2,
        train=True,
        img_size=32,
        **HALF,
        random_erasing=0.5,
    )
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=workers, collate_fn=collate)
        batches.append(next(iter(loader)))
    assert torch.equal(batches[0]["video"], batches[1]["video"])
    assert torch.equal(batches[0]["label"], batches[1]["label"])


@pytest.mark.parametrize("repeat", [1, 2])
def test_a_fetched_batch_is_its_items_assembled_without_a_copy(tree, tmp_path, repeat):
    """`__getitems__` (what the DataLoader calls) writes the clips into one batch tensor that `collate`
    takes as it is; its items equal `dataset[i]`, a broken video's replacement included; in a worker
    the batch lies in shared memory, so it reaches the main process without a copy either."""
    (tmp_path / "good.mp4").write_bytes((tree / "a" / "0.mp4").read_bytes())
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    samples = [("good.mp4", 0), ("bad.mp4", 1)] + [(str(tree / "b" / f"{i}.avi"), 1) for i in range(2)]
    kw = dict(num_frames=4, sampling="dense", frame_interval=2, img_size=32, **HALF, random_erasing=0.5)
    ds = VideoDataset(tmp_path, samples, train=True, repeat_clips=repeat, **kw)
    ds.set_epoch(3)
    indices = [2, 1, 0, 3, 1]
    items = ds.__getitems__(indices)
    batch = collate(items)
    expected = collate([ds[i] for i in indices])
    assert batch["video"].shape == (5 * repeat, 3, 4, 32, 32) and items[1]["skipped"]
    assert batch["video"].data_ptr() == items[0]["video"].data_ptr()  # the items' own memory
    for key in ("video", "label", "index", "broken"):
        assert torch.equal(batch[key], expected[key]), key
    assert batch["skipped"] == expected["skipped"]

    def collate_in_worker(got):
        out = collate(got)
        return out, out["video"].is_shared()

    loader = torch.utils.data.DataLoader(ds, batch_size=5, sampler=indices, num_workers=1, collate_fn=collate_in_worker)
    from_worker, in_shared_memory = next(iter(loader))
    assert in_shared_memory and torch.equal(from_worker["video"], expected["video"])
    test_set = VideoDataset(tmp_path, samples, train=False, **kw)  # test items: one by one, as before
    assert torch.equal(collate(test_set.__getitems__([0, 2]))["video"], collate([test_set[0], test_set[2]])["video"])


def test_training_keeps_frame_order(tmp_path):
    """Sampling + augmentation never reorder frames: read the frame indices back from the clip."""
    write_index_video(tmp_path / "v.mp4", 64, height=64, width=64)
    ds = VideoDataset(
        tmp_path,
        [("v.mp4", 0)],
        num_frames=8,
        sampling="dense",
        frame_interval=4,
        train=True,
        img_size=64,
        **RAW,
        short_side=0,
        rand_augment=False,
        flip=False,
        crop_scale=(1.0, 1.0),
    )
    for epoch in range(3):
        ds.set_epoch(epoch)
        indices = [read_index(f) for f in to_uint8(ds[0]["video"])]
        assert np.all(np.diff(indices) == 4), indices


def test_test_views_are_clip_major_and_the_right_frames(tmp_path):
    """A portrait video: top/center/bottom crops all show the full bar code."""
    write_index_video(tmp_path / "v.mp4", 90, height=128, width=64)
    ds = VideoDataset(
        tmp_path,
        [("v.mp4", 7)],
        num_frames=4,
        sampling="dense",
        frame_interval=8,
        train=False,
        img_size=64,
        **RAW,
        test_clips=2,
        test_crops=3,
    )
    item = ds[0]
    assert item["video"].shape == (6, 3, 4, 64, 64) and item["label"] == 7
    expected = sample_indices(90, 4, "dense", 8, num_clips=2, train=False)
    for view in range(6):
        clip = view // 3  # clip-major: clip 0 crops 0, 1, 2, then clip 1
        assert [read_index(f) for f in to_uint8(item["video"][view])] == expected[clip].tolist()
    views = load_views(
        tmp_path / "v.mp4",
        num_frames=4,
        sampling="dense",
        frame_interval=8,
        img_size=64,
        **RAW,
        test_clips=2,
        test_crops=3,
    )
    assert torch.equal(views, item["video"])


def test_flip_label_map_follows_the_flip(tmp_path):
    with av.open(str(tmp_path / "left.mp4"), "w") as container:  # bright left half: a direction
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        picture = np.zeros((32, 32, 3), dtype=np.uint8)
        picture[:, :16] = 255
        for _ in range(8):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    ds = VideoDataset(
        tmp_path,
        [("left.mp4", 0)],
        num_frames=2,
        sampling="uniform",
        train=True,
        img_size=32,
        **RAW,
        short_side=0,
        rand_augment=False,
        crop_scale=(1.0, 1.0),
        flip_label_map={0: 1, 1: 0},
    )
    labels = set()
    for epoch in range(10):
        ds.set_epoch(epoch)
        item = ds[0]
        mirrored = bool(item["video"][..., 16:].mean() > item["video"][..., :16].mean())
        assert item["label"] == (1 if mirrored else 0)
        labels.add(item["label"])
    assert labels == {0, 1}


def test_multi_view_batches(tree):
    samples = load_annotations(tree).samples
    ds = VideoDataset(
        tree,
        samples,
        num_frames=4,
        sampling="dense",
        frame_interval=4,
        train=False,
        img_size=32,
        **HALF,
        test_clips=2,
        test_crops=3,
    )
    batch = collate([ds[0], ds[4]])
    assert batch["video"].shape == (2, 6, 3, 4, 32, 32)
    assert batch["label"].tolist() == [0, 1] and batch["index"].tolist() == [0, 4]
    assert batch["broken"].tolist() == [False, False] and batch["skipped"] == []


def test_broken_videos_are_skipped_named_and_logged_once(tree, tmp_path, caplog):
    root = tmp_path
    write_index_video(root / "good.mp4", 20)
    (root / "text.mp4").write_text("this is not a video\n" * 20)
    (root / "empty.mp4").write_bytes(b"")
    data = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    broken = ["text.mp4", "empty.mp4", "truncated.mp4", "missing.mp4"]
    samples = [(name, 0) for name in broken] + [("good.mp4", 1)]
    train = VideoDataset(root, samples, num_frames=4, sampling="uniform", train=True, img_size=32, **HALF)
    caplog.set_level(logging.WARNING, logger="zeroi2v.data")
    batch = collate([train[i] for i in range(len(samples))])
    assert batch["video"].shape == (5, 3, 4, 32, 32) and batch["label"].tolist() == [1] * 5  # all replaced by good
    assert batch["index"].tolist() == [4] * 5
    assert {p.rsplit("/", 1)[-1] for p in batch["skipped"]} == set(broken)
    train[0], train[1]
    for name in broken:
        assert sum(name in r.getMessage() for r in caplog.records) == 1  # once per process
    test = VideoDataset(
        root, samples, num_frames=4, sampling="uniform", train=False, img_size=32, **HALF, test_clips=1, test_crops=3
    )
    item = test[2]
    assert item["broken"] and item["index"] == 2 and item["label"] == 0 and item["skipped"][0].endswith("truncated.mp4")
    assert item["video"].shape == (3, 3, 4, 32, 32) and not item["video"].any()
    assert not test[4]["broken"]


def test_a_dataset_of_only_broken_videos_stops_with_a_clear_error(tmp_path):
    ds = VideoDataset(
        tmp_path, [("nope.mp4", 0)], num_frames=4, sampling="uniform", train=True, img_size=32, **HALF, max_retries=3
    )
    with pytest.raises(UserError, match="4 videos in a row could not be decoded"):
        ds[0]


def test_cached_frames_give_the_same_items_and_broken_videos_are_still_skipped(tree, tmp_path):
    samples = [("a/0.mp4", 0), ("a/1.mp4", 0), ("b/0.avi", 1), ("b/1.avi", 1)]
    for kwargs in (
        dict(train=True, sampling="uniform"),
        dict(train=False, sampling="dense", frame_interval=16, test_clips=2, test_crops=3),
    ):
        plain = VideoDataset(tree, samples, num_frames=4, img_size=32, **HALF, seed=3, **kwargs)
        cached = VideoDataset(tree, samples, num_frames=4, img_size=32, **HALF, seed=3, cache_frames=True, **kwargs)
        assert len(cached._frames) == 4
        for epoch in (0, 1):
            plain.set_epoch(epoch)
            cached.set_epoch(epoch)
            for i in range(len(samples)):
                assert torch.equal(plain[i]["video"], cached[i]["video"])  # dense clips run past the 30-frame AVIs
    (tmp_path / "broken.mp4").write_text("not a video")
    write_index_video(tmp_path / "good.mp4", 12)
    ds = VideoDataset(
        tmp_path,
        [("broken.mp4", 0), ("good.mp4", 1)],
        num_frames=4,
        sampling="uniform",
        train=True,
        img_size=32,
        **HALF,
        cache_frames=True,
    )
    assert list(ds._frames) == [str(tmp_path / "good.mp4")]
    item = ds[0]
    assert item["label"] == 1 and item["skipped"][0].endswith("broken.mp4")


def test_a_cache_that_would_not_fit_falls_back_to_decoding(tree, monkeypatch, caplog):
    from zeroi2v.data import dataset

    monkeypatch.setattr(dataset, "_memory_bytes", lambda: 4 * 40 * 32 * 32 * 3)  # a quarter: about one video
    caplog.set_level(logging.WARNING, logger="zeroi2v.data")
    samples = [("a/0.mp4", 0), ("a/1.mp4", 0), ("b/0.avi", 1)]
    ds = VideoDataset(tree, samples, num_frames=4, sampling="uniform", img_size=32, **HALF, cache_frames=True)
    assert not ds._frames and "decoding each epoch instead" in caplog.text
    assert ds[2]["video"].shape == (3, 4, 32, 32)
