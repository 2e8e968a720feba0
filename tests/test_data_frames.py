"""Rawframe datasets (MMAction2's `frame_dir total_frames label` lists, class trees of frame folders)
read from real JPEG/PNG files: the same clips as from the video they were extracted from."""

import logging

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg, encode_png

from tests.videos import index_frame, read_index, write_index_video
from zeroi2v.config import load_config
from zeroi2v.data import VideoDataset, collate, create_dataset, load_annotations, read_frames, sample_indices
from zeroi2v.errors import UserError

RAW = dict(mean=(0.0,) * 3, std=(1.0,) * 3)


def write_frames(folder, frames, tmpl="img_{:05d}.jpg", start=1):
    """Frames (N, H, W, 3) uint8 as image files, as MMAction2's build_rawframes writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        chw = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
        data = encode_png(chw) if tmpl.endswith(".png") else encode_jpeg(chw, quality=95)
        (folder / tmpl.format(start + i)).write_bytes(data.numpy().tobytes())


def index_frames(n, h=48, w=64):
    return np.stack([index_frame(i, h, w) for i in range(n)])


@pytest.fixture()
def rawframes(tmp_path):
    """A rawframe list of three folders (30, 40, 50 frames) and a classes.txt."""
    lines = []
    for k, n in enumerate((30, 40, 50)):
        write_frames(tmp_path / "frames" / f"v{k}", index_frames(n, 48, 48))
        lines.append(f"frames/v{k} {n} {k % 2}\n")
    (tmp_path / "train.txt").write_text("".join(lines))
    (tmp_path / "classes.txt").write_text("a\nb\n")
    return tmp_path


def dataset(root, samples, lengths=None, **kw):
    settings = dict(num_frames=4, sampling="uniform", img_size=32, short_side=0, **RAW)
    return VideoDataset(root, samples, lengths=lengths, **{**settings, **kw})


def test_rawframe_lists_are_detected_with_their_frame_counts(rawframes):
    ann = load_annotations(rawframes, rawframes / "train.txt")
    assert ann.samples == [("frames/v0", 0), ("frames/v1", 1), ("frames/v2", 0)]
    assert ann.lengths == {"frames/v0": 30, "frames/v1": 40, "frames/v2": 50} and ann.classes == ["a", "b"]


def test_test_views_read_the_sampled_frames(rawframes):
    ann = load_annotations(rawframes, rawframes / "train.txt")
    ds = dataset(rawframes, ann.samples, ann.lengths, train=False, test_clips=1, test_crops=1, img_size=48)
    item = ds[2]
    frames = (item["video"][0] * 255).round().byte().permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
    assert [read_index(f) for f in frames] == sample_indices(50, 4, "uniform", train=False)[0].tolist()


def test_video_and_its_extracted_frames_give_the_same_clip(tmp_path):
    """Same sampled indices, near-identical pixels (JPEG noise only), in training and at test. (Training
    without RandAugment: Solarize at level 7 inverts every pixel above 0, so JPEG noise on black flips it.)"""
    video = tmp_path / "v.mp4"
    write_index_video(video, 60, height=48, width=64)
    write_frames(tmp_path / "v", read_frames(video, np.arange(60)).numpy())
    for train in (True, False):
        kw = dict(train=train, sampling="dense", frame_interval=4, test_clips=2, test_crops=3, seed=3, img_size=32)
        kw.update(rand_augment=False, random_erasing=0.5)
        from_video = dataset(tmp_path, [("v.mp4", 0)], short_side=40, **kw)
        from_frames = dataset(tmp_path, [("v", 0)], {"v": 60}, short_side=40, **kw)
        for epoch in range(3):
            from_video.set_epoch(epoch)
            from_frames.set_epoch(epoch)
            a, b = from_video[0]["video"], from_frames[0]["video"]
            assert a.shape == b.shape
            assert (a - b).abs().mean() < 0.02  # 0..1 scale: JPEG noise
            if not train:
                assert clip_indices(a) == clip_indices(b)


def clip_indices(views):
    """The frame indices drawn in test views (V, 3, T, H, W) on the 0..1 scale."""
    frames = (views * 255).round().byte().permute(0, 2, 3, 4, 1).numpy()
    return [read_index(frame) for view in frames for frame in view]


def test_png_frames_other_templates_and_start_index(tmp_path):
    write_frames(tmp_path / "x", index_frames(20, 48, 48), tmpl="{:06d}.png", start=0)
    ds = dataset(
        tmp_path, [("x", 0)], train=False, test_clips=1, filename_tmpl="{:06d}.png", start_index=0, img_size=48
    )
    frames = (ds[0]["video"][0] * 255).round().byte().permute(1, 2, 3, 0).numpy()
    expected = sample_indices(20, 4, "uniform", train=False)[0].tolist()  # counted on disk: 20 frames, no list
    assert [read_index(f) for f in frames] == expected


def test_missing_and_corrupt_frames_make_the_item_broken(tmp_path, caplog):
    for name in ("good", "hole", "corrupt", "empty"):
        write_frames(tmp_path / name, index_frames(16))
    (tmp_path / "hole" / "img_00004.jpg").unlink()
    (tmp_path / "corrupt" / "img_00008.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "empty").joinpath("img_00001.jpg").unlink()
    for f in (tmp_path / "empty").iterdir():
        f.unlink()
    samples = [("hole", 0), ("corrupt", 0), ("empty", 0), ("gone", 0), ("good", 1)]
    lengths = {name: 16 for name, _ in samples}
    caplog.set_level(logging.WARNING, logger="zeroi2v.data")
    train = dataset(tmp_path, samples, lengths, sampling="dense", frame_interval=1, num_frames=16)
    batch = collate([train[i] for i in range(4)])
    assert batch["label"].tolist() == [1] * 4
    assert {p.rsplit("/", 1)[-1] for p in batch["skipped"]} == {"hole", "corrupt", "empty", "gone"}
    text = caplog.text
    assert "frame missing" in text and "img_00004.jpg" in text and "cannot decode frame" in text
    assert "no frame img_00001.jpg" in text and "no such frame folder" in text
    test = dataset(
        tmp_path, samples, lengths, train=False, test_clips=1, sampling="dense", num_frames=16, frame_interval=1
    )
    assert test[0]["broken"] and test[0]["label"] == 0 and not test[4]["broken"]


def test_a_list_that_promises_more_frames_than_the_disk_has_is_named_and_sampled_from_the_disk(tmp_path, caplog):
    write_frames(tmp_path / "v", index_frames(12, 48, 48))
    caplog.set_level(logging.WARNING, logger="zeroi2v.data")
    ds = dataset(tmp_path, [("v", 0)], {"v": 300}, train=False, test_clips=1, img_size=48)
    item = ds[0]
    assert not item["broken"] and "the list says 300 frames, 12 are on disk" in caplog.text
    frames = (item["video"][0] * 255).round().byte().permute(1, 2, 3, 0).numpy()
    assert max(read_index(f) for f in frames) < 12


def test_class_folders_of_frame_folders(tmp_path):
    for cls, n in (("jump", 2), ("run", 1)):
        for k in range(n):
            write_frames(tmp_path / "tree" / cls / f"clip{k}", index_frames(10))
    ann = load_annotations(None, tmp_path / "tree")
    assert ann.classes == ["jump", "run"] and [label for _, label in ann.samples] == [0, 0, 1]
    ds = dataset("", ann.samples)
    assert ds[2]["label"] == 1 and ds[2]["video"].shape == (3, 4, 32, 32)


def test_a_wrong_template_is_one_error_naming_the_fix(rawframes, tmp_path):
    cfg = {"data": {"root": str(rawframes), "train_list": str(rawframes / "train.txt")}}
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(str(cfg).replace("'", '"'))
    with pytest.raises(
        UserError, match=r"data.filename_tmpl='\{:05d\}.jpg'.*set data.filename_tmpl='img_\{:05d\}.jpg'"
    ):
        create_dataset(yaml_path, "train", ["data.filename_tmpl='{:05d}.jpg'"])
    with pytest.raises(UserError, match="set data.start_index=1"):
        create_dataset(yaml_path, "train", ["data.start_index=0"])
    assert len(create_dataset(load_config(yaml_path), "train")) == 3


@pytest.mark.parametrize("tmpl", ["img.jpg", "img_{}_{}.jpg", "sub/{:05d}.jpg", "{:05z}.jpg"])
def test_bad_filename_templates_are_config_errors(tmpl):
    with pytest.raises(UserError, match="data.filename_tmpl"):
        load_config(None, [f"data.filename_tmpl='{tmpl}'"])
