"""Faster RandAugment ops, GPU-side augmentation (run here on the CPU) and repeated sampling: the same
clips as the plain CPU path; create_dataset and the new data keys."""

import platform

import numpy as np
import pytest
import torch

from tests.conftest import write_config
from tests.videos import write_index_video
from zeroi2v.config import load_config
from zeroi2v.data import VideoDataset, augment_on_device, collate, create_dataset, train_transform
from zeroi2v.data.augment_ops import OPS, apply_op, fast_op, op_argument, ops_in_box
from zeroi2v.errors import UserError

HALF = dict(mean=(0.5,) * 3, std=(0.5,) * 3)


@pytest.mark.parametrize("shape", [(4, 3, 24, 32), (3, 31, 17), (2, 3, 40, 56)])
def test_fast_ops_give_the_reference_pixels(shape):
    video = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(len(shape)))
    video[..., 0, :, :] = 77  # a flat channel (AutoContrast, Equalize: left as they are)
    video[..., 1, :, :] //= 85  # four values (Equalize: steps of a few pixels)
    for name in OPS:
        for level in (0.0, 3.3, 7.0, 10.0):
            for sign in (1, -1):
                argument = op_argument(name, level, sign)
                assert torch.equal(fast_op(video, name, argument), apply_op(video, name, argument)), (name, argument)


def test_ops_in_the_crop_box_give_the_reference_pixels():
    """Ops computed only where the crop keeps pixels (a 1-pixel rim for Sharpness, whole frames for the
    statistics and before a warp) equal the reference ops on whole frames, then the crop: chains of
    0-4 ops, boxes anywhere down to 1x1 (frame edges, Sharpness's unchanged border), frames down to 1 px."""
    rnd, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    for trial in range(600):
        h, w = (int(s) for s in rnd.integers(1, 40, 2)) if trial % 10 else (int(rnd.integers(60, 90)), 113)
        video = torch.randint(0, 256, (int(rnd.integers(1, 4)), 3, h, w), dtype=torch.uint8, generator=gen)
        if trial % 3 == 0:
            video = video // 64 * 64  # few values: Equalize/AutoContrast corner cases
        if trial % 2:
            video = video.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # decoders' (H, W, C) memory
        names = rnd.choice(OPS, int(rnd.integers(0, 5)), replace=False)
        ops = [(str(n), op_argument(str(n), float(rnd.uniform(0, 10)), float(rnd.choice([1, -1])))) for n in names]
        bh, bw = int(rnd.integers(1, h + 1)), int(rnd.integers(1, w + 1))
        top, left = int(rnd.integers(0, h - bh + 1)), int(rnd.integers(0, w - bw + 1))
        expected = video
        for name, argument in ops:
            expected = apply_op(expected, name, argument)
        got = ops_in_box(video, ops, (top, left, bh, bw))
        assert torch.equal(got, expected[..., top : top + bh, left : left + bw]), (ops, (h, w), (top, left, bh, bw))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    write_index_video(root / "wide.mp4", 40, height=48, width=64)
    write_index_video(root / "tall.mp4", 30, height=64, width=48)
    return root, [("wide.mp4", 0), ("tall.mp4", 1)]


SETTINGS = [
    dict(augment_order="k400", random_erasing=0.5, erasing_mode="rand"),
    dict(augment_order="ssv2", random_erasing=0.5, erasing_mode="const"),
    dict(augment_order="k400", rand_augment_magnitude=10.0, short_side=40),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_gpu_augment_gives_the_clips_of_the_cpu_path(videos, settings):
    root, samples = videos
    kw = dict(num_frames=4, sampling="uniform", img_size=32, seed=1, flip_label_map={0: 1, 1: 0}, **HALF, **settings)
    cpu = VideoDataset(root, samples, **kw)
    gpu = VideoDataset(root, samples, gpu_augment=True, **kw)
    for epoch in range(4):
        cpu.set_epoch(epoch)
        gpu.set_epoch(epoch)
        expected = collate([cpu[i] for i in range(2)])
        batch = collate([gpu[i] for i in range(2)])
        assert all(v.dtype == torch.uint8 for v in batch["video"]) and len(batch["plans"]) == 2
        assert torch.equal(augment_on_device(batch, "cpu", gpu), expected["video"])
        assert torch.equal(batch["label"], expected["label"])  # flips decided in the loader


def test_gpu_augment_loader_keeps_only_cheap_geometry(videos):
    root, samples = videos
    k400 = VideoDataset(root, samples, num_frames=4, img_size=32, gpu_augment=True, **HALF)
    ssv2 = VideoDataset(root, samples, num_frames=4, img_size=32, gpu_augment=True, augment_order="ssv2", **HALF)
    assert k400.transform.steps[: k400.transform.loader_steps] == ("resize",)
    assert ssv2.transform.steps[: ssv2.transform.loader_steps] == ("resize", "random_resized_crop", "flip")
    assert ssv2[0]["video"].shape == (4, 3, 32, 32) and k400[0]["video"].shape == (
        4,
        3,
        37,
        49,
    )  # short side 32·256/224
    batch = collate([k400[0], k400[1]])  # frames of different shapes before the crop: a list
    assert isinstance(batch["video"], list) and augment_on_device(batch, "cpu", k400).shape == (2, 3, 4, 32, 32)


def test_eval_items_are_unchanged_by_gpu_augment(videos):
    root, samples = videos
    kw = dict(num_frames=4, img_size=32, train=False, test_clips=2, **HALF)
    plain, flagged = VideoDataset(root, samples, **kw), VideoDataset(root, samples, gpu_augment=True, **kw)
    assert torch.equal(plain[0]["video"], flagged[0]["video"]) and "plan" not in flagged[0]
    assert torch.equal(augment_on_device(collate([plain[0]]), "cpu"), collate([plain[0]])["video"])


class CountingDataset(VideoDataset):
    """Counts the reads of each sample (the decoding itself is the real one)."""

    def read(self, path, indices):
        self.reads = getattr(self, "reads", 0) + 1
        return super().read(path, indices)


def test_repeated_clips_decode_once_and_are_independent(videos):
    root, samples = videos
    kw = dict(num_frames=4, sampling="uniform", img_size=32, seed=2, flip_label_map={0: 1, 1: 0}, **HALF)
    once = VideoDataset(root, samples, **kw)
    repeated = CountingDataset(root, samples, repeat_clips=3, **kw)
    item = repeated[0]
    assert repeated.reads == 1 and item["video"].shape == (3, 3, 4, 32, 32) and len(item["label"]) == 3
    assert torch.equal(item["video"][0], once[0]["video"])  # the first clip is the single-clip item
    assert not torch.equal(item["video"][1], item["video"][2])
    labels = set()
    for epoch in range(6):
        repeated.set_epoch(epoch)
        labels |= set(repeated[0]["label"])
    assert labels == {0, 1}  # flipped clips swap their own label
    batch = collate([repeated[0], repeated[1]])
    assert batch["video"].shape == (6, 3, 4, 32, 32) and batch["index"].tolist() == [0, 0, 0, 1, 1, 1]
    gpu = VideoDataset(root, samples, repeat_clips=3, gpu_augment=True, **kw)
    gpu.set_epoch(5)
    repeated.set_epoch(5)
    done = augment_on_device(collate([gpu[0], gpu[1]]), "cpu", gpu)
    assert torch.equal(done, collate([repeated[0], repeated[1]])["video"])


def test_repeated_clips_of_a_broken_video_count_it_once(videos, tmp_path):
    root, samples = videos
    (root / "junk.mp4").write_text("not a video")
    ds = VideoDataset(root, [("junk.mp4", 0)] + samples, num_frames=4, img_size=32, repeat_clips=2, **HALF)
    batch = collate([ds[0]])
    assert batch["video"].shape[0] == 2 and [p.rsplit("/", 1)[-1] for p in batch["skipped"]] == ["junk.mp4"]


def test_create_dataset_is_what_train_and_eval_use(ramps, tmp_path):
    path = write_config(tmp_path / "c.yaml", ramps, tmp_path / "run")
    train = create_dataset(path)
    assert len(train) == 48 and train.train and train.clip.num_frames == 4 and train.clip.img_size == 32
    item = train[0]
    assert item["video"].shape == (3, 4, 32, 32) and item["label"] in (0, 1)
    test = create_dataset(load_config(path), "test", ["data.test_crops=3"])
    assert len(test) == 20 and test[0]["video"].shape == (6, 3, 4, 32, 32)
    assert create_dataset(path, "val")[0]["video"].shape == (1, 3, 4, 32, 32)
    few = create_dataset(path, "train", ["data.shots=3", "data.repeat_clips=2", "data.gpu_augment=true"])
    assert len(few) == 6 and few.repeat == 2 and few[0]["video"].dtype == torch.uint8
    from timm.data import OPENAI_CLIP_MEAN

    clip = create_dataset(path, "val", ["model.backbone=vit_base_patch16_clip_224.openai"]).clip
    assert clip.mean == pytest.approx(OPENAI_CLIP_MEAN)
    with pytest.raises(UserError, match="split must be one of"):
        create_dataset(path, "training")


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.repeat_clips=0", "data.repeat_clips: must be >= 1"),
        ("data.gpu_augment=yes please", "data.gpu_augment: expected bool"),
        ("data.start_index=-1", "data.start_index: must be >= 0"),
    ],
)
def test_new_data_keys_are_checked(override, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [override])


def test_training_with_gpu_augment_and_repeated_clips(ramps, tmp_path):
    """train.py end to end: batch_size counts clips; a batch that repeat_clips does not divide is refused."""
    from zeroi2v.train import train

    changes = dict(train__epochs=1, train__batch_size=8)
    path = write_config(tmp_path / "c.yaml", ramps, tmp_path / "run", **changes)
    cfg = load_config(path, ["data.gpu_augment=true", "data.repeat_clips=2", "data.rand_augment=true"])
    metrics = train(cfg, progress=False)
    assert np.isfinite(metrics["train_loss"]) and metrics["skipped_videos"] == 0
    bad = load_config(path, ["data.repeat_clips=3", f"output={tmp_path / 'bad'}"])
    with pytest.raises(UserError, match="multiple of processes × train.accum_steps × data.repeat_clips"):
        train(bad, progress=False)


def test_train_transform_accepts_a_spec_or_its_fields():
    from zeroi2v.data import AugmentSpec

    by_spec = train_transform(32, **HALF, spec=AugmentSpec(augment_order="ssv2", flip=False))
    by_fields = train_transform(32, **HALF, augment_order="ssv2", flip=False)
    assert by_spec.steps == by_fields.steps == ("resize", "random_resized_crop", "rand_augment", "normalize")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_loader_workers_keep_freed_memory():
    """glibc accepts the thresholds (mallopt returns 1), so the loader workers run with them."""
    from zeroi2v.data.dataset import keep_freed_memory

    assert keep_freed_memory()


def test_histograms_by_bincount_and_by_scatter_agree():
    """Equalize counts with bincount on the CPU and with scatter_add on a GPU (no device sync)."""
    from zeroi2v.data.augment_ops import histograms

    planes = torch.randint(0, 256, (6, 999), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    planes[0] = 7
    counts = histograms(planes, scatter=False)
    assert torch.equal(counts, histograms(planes, scatter=True))
    assert counts[0, 7] == 999 and torch.equal(counts.sum(1), torch.full((6,), 999))
