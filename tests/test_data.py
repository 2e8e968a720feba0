"""Data pipeline on real video files written by the tests: decoding, sampling, formats, transforms."""
import json

import numpy as np
import pytest
import torch

from tests.videos import read_index, write_index_video
from zeroi2v import UserError
from zeroi2v.data import (VideoDataset, VideoDecodeError, collate, few_shot, flip_label_map, load_annotations,
                          load_views, num_frames, read_frames, sample_indices)
from zeroi2v.data.transforms import eval_transform

CONTAINERS = [("mp4", "libx264", {}), ("webm", "libvpx-vp9", {}), ("avi", "mjpeg", {}),
              ("mp4", "mpeg4", {"width": 66, "height": 38}), ("mp4", "libx264", {"gray": True})]


@pytest.mark.parametrize("ext, codec, extra", CONTAINERS, ids=["h264", "vp9", "mjpeg", "mpeg4_odd", "gray"])
def test_decoded_frames_are_the_requested_ones(tmp_path, ext, codec, extra):
    path = write_index_video(tmp_path / f"v.{ext}", 90, codec=codec, **extra)
    assert num_frames(path) == 90
    rng = np.random.default_rng(0)
    for indices in ([0, 1, 2], [89], [5, 40, 85, 40, 5], list(rng.integers(0, 90, 12)), list(range(40, 88, 6))):
        frames = read_frames(path, indices)
        assert frames.dtype == torch.uint8 and frames.shape[-1] == 3
        assert [read_index(f.numpy()) for f in frames] == [int(i) for i in indices]


def test_variable_frame_rate_and_lying_container(tmp_path):
    vfr = write_index_video(tmp_path / "vfr.mp4", 40, vfr=True)
    got = [read_index(f.numpy()) for f in read_frames(vfr, [0, 10, 20, 39])]
    assert got == [0, 10, 20, 39]
    short = write_index_video(tmp_path / "short.mp4", 20)
    frames = read_frames(short, [18, 19, 25, 30])  # beyond the end: clamped to the last real frame
    assert [read_index(f.numpy()) for f in frames] == [18, 19, 19, 19]


def test_broken_files_raise_decode_errors(tmp_path):
    good = write_index_video(tmp_path / "good.mp4", 60)
    cases = {"missing": tmp_path / "nope.mp4", "empty": tmp_path / "empty.mp4", "text": tmp_path / "text.mp4",
             "truncated": tmp_path / "trunc.mp4"}
    cases["empty"].write_bytes(b"")
    cases["text"].write_text("not a video at all\n" * 50)
    data = open(good, "rb").read()
    cases["truncated"].write_bytes(data[: len(data) // 3])
    for name, path in cases.items():
        with pytest.raises(VideoDecodeError):
            num_frames(path)
            read_frames(path, [0, 30, 59])


def test_dense_sampling_semantics():
    rng = np.random.default_rng(0)
    train = sample_indices(300, 8, "dense", 16, 1, True, rng)
    assert train.shape == (1, 8) and np.all(np.diff(train[0]) == 16) and train.max() < 300
    test = sample_indices(300, 8, "dense", 16, 3, False)
    assert test.shape == (3, 8) and np.all(np.diff(test, axis=1) == 16)
    assert test[0, 0] < test[1, 0] < test[2, 0]  # evenly spaced clips
    assert np.array_equal(test, sample_indices(300, 8, "dense", 16, 3, False))  # deterministic at test
    short = sample_indices(50, 8, "dense", 16, 1, False)  # shorter than the 128-frame span: loops
    assert short.max() < 50 and short.shape == (1, 8)


def test_uniform_sampling_semantics():
    rng = np.random.default_rng(1)
    for _ in range(20):
        idx = sample_indices(80, 8, "uniform", train=True, rng=rng)[0]
        seg = 79 / 8
        assert all(round(seg * i) <= idx[i] <= round(seg * (i + 1)) for i in range(8))
        assert np.all(np.diff(idx) >= 0)
    middle = sample_indices(81, 8, "uniform", train=False)[0]
    assert np.array_equal(middle, np.round(10 * np.arange(8)).astype(int) + 5)
    assert np.all(np.diff(sample_indices(5, 8, "uniform", train=False)[0]) >= 0)  # short video repeats, in order
    assert sample_indices(100, 8, "uniform", num_clips=2, train=False).shape == (2, 8)


def write_list_tree(tmp_path):
    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    paths = [write_index_video(root / "a" / f"{i}.mp4", 30) for i in range(3)]
    paths += [write_index_video(root / "b" / f"{i}.avi", 30, codec="mjpeg") for i in range(2)]
    return root


def test_annotation_formats(tmp_path):
    root = write_list_tree(tmp_path)
    tree = load_annotations(root)
    assert tree.classes == ["a", "b"] and len(tree.samples) == 5 and tree.samples[-1] == ("b/1.avi", 1)
    lst = tmp_path / "train.txt"
    lst.write_text("a/0.mp4 0\n\n# comment\nb/1.avi 1\n")
    assert load_annotations(root, lst).samples == [("a/0.mp4", 0), ("b/1.avi", 1)]
    # SSv2: JSON entries + labels file
    ss = tmp_path / "ssv2"
    ss.mkdir()
    (ss / "labels.json").write_text(json.dumps({"Pushing something from left to right": "0",
                                                "Pushing something from right to left": "1"}))
    (ss / "train.json").write_text(json.dumps([
        {"id": "17", "label": "pushing a cup from left to right", "template": "Pushing [something] from left to right",
         "placeholders": ["a cup"]},
        {"id": "9", "label": "x", "template": "Pushing [something] from right to left", "placeholders": ["x"]}]))
    ssv2 = load_annotations(ss, ss / "train.json")
    assert ssv2.samples == [("17.webm", 0), ("9.webm", 1)]
    assert flip_label_map(ssv2.classes) == {0: 1, 1: 0}
    # UCF101 split files
    ucf = tmp_path / "ucfTrainTestlist"
    ucf.mkdir()
    (ucf / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (ucf / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g01_c01.avi 2\n")
    (ucf / "testlist01.txt").write_text("Archery/v_Archery_g02_c01.avi\n")
    assert load_annotations(tmp_path, ucf / "trainlist01.txt").samples[1] == ("Archery/v_Archery_g01_c01.avi", 1)
    assert load_annotations(tmp_path, ucf / "testlist01.txt").samples == [("Archery/v_Archery_g02_c01.avi", 1)]
    # HMDB51 split files
    hm = tmp_path / "splits"
    hm.mkdir()
    (hm / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (hm / "cartwheel_test_split1.txt").write_text("d.avi 2\ne.avi 1\n")
    train = load_annotations(tmp_path, str(hm / "*_test_split1.txt"), split="train")
    val = load_annotations(tmp_path, str(hm / "*_test_split1.txt"), split="val")
    assert train.classes == ["brush_hair", "cartwheel"]
    assert train.samples == [("brush_hair/a.avi", 0), ("cartwheel/e.avi", 1)]
    assert val.samples == [("brush_hair/b.avi", 0), ("cartwheel/d.avi", 1)]


@pytest.mark.parametrize("content, message", [
    ("a.mp4 0\nb.mp4\n", r"train.txt:2: expected"),
    ("a.mp4 30 1\n", "rawframe"),
    ("a.mp4 zero\n", "not an integer"),
    ("", "lists no videos"),
])
def test_malformed_list_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "train.txt"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_annotations(tmp_path, path)


def test_missing_annotations_are_clear(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_annotations(tmp_path, tmp_path / "nope.txt")
    with pytest.raises(UserError, match="data root not found"):
        load_annotations(tmp_path / "nowhere")


def test_few_shot_is_reproducible():
    samples = [(f"v{i}.mp4", i % 5) for i in range(100)]
    draw = few_shot(samples, 4, seed=3)
    assert draw == few_shot(samples, 4, seed=3) and draw != few_shot(samples, 4, seed=4)
    assert sorted(np.bincount([label for _, label in draw]).tolist()) == [4] * 5


def test_dataset_views_and_training_clips(tmp_path):
    root = write_list_tree(tmp_path)
    samples = load_annotations(root).samples
    common = dict(num_frames=4, sampling="uniform", img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    train = VideoDataset(root, samples, train=True, **common)
    item = train[0]
    assert item["video"].shape == (3, 4, 32, 32) and item["label"] == 0 and not item["skipped"]
    assert torch.equal(train[0]["video"], train[0]["video"])  # same (seed, epoch, index): same clip
    train.set_epoch(1)
    assert not torch.equal(train[0]["video"], item["video"])
    test = VideoDataset(root, samples, train=False, test_clips=2, test_crops=3, **common)
    assert test[1]["video"].shape == (6, 3, 4, 32, 32)
    batch = collate([test[0], test[1]])
    assert batch["video"].shape == (2, 6, 3, 4, 32, 32) and batch["label"].tolist() == [0, 0]
    views = load_views(root / "a" / "0.mp4", num_frames=4, sampling="dense", frame_interval=2, img_size=32,
                       mean=(0.5,) * 3, std=(0.5,) * 3, test_clips=3, test_crops=1)
    assert views.shape == (3, 3, 4, 32, 32)


def test_training_keeps_frame_order(tmp_path):
    """Sampling + augmentation must never reorder frames: read the indices back from the clip."""
    path = write_index_video(tmp_path / "v.mp4", 64, height=64, width=64)
    ds = VideoDataset(tmp_path, [("v.mp4", 0)], num_frames=8, sampling="dense", frame_interval=4, train=True,
                      img_size=64, mean=(0, 0, 0), std=(1, 1, 1), rand_augment=False, flip=False, crop_scale=(1.0, 1.0))
    for epoch in range(3):
        ds.set_epoch(epoch)
        clip = (ds[0]["video"] * 255).round().clamp(0, 255).byte().permute(1, 2, 3, 0).numpy()
        indices = [read_index(f) for f in clip]
        assert np.all(np.diff(indices) == 4), indices
    del path


def test_broken_videos_are_skipped_and_named(tmp_path, caplog):
    root = write_list_tree(tmp_path)
    (root / "a" / "bad.mp4").write_text("garbage")
    samples = [("a/bad.mp4", 0), ("a/0.mp4", 0), ("a/missing.mp4", 0)]
    ds = VideoDataset(root, samples, num_frames=4, sampling="uniform", train=True, img_size=32,
                      mean=(0.5,) * 3, std=(0.5,) * 3)
    item = ds[0]
    assert item["video"].shape == (3, 4, 32, 32)
    assert any("bad.mp4" in p for p in item["skipped"])
    assert "bad.mp4" in caplog.text
    test = VideoDataset(root, samples, num_frames=4, sampling="uniform", train=False, img_size=32,
                        mean=(0.5,) * 3, std=(0.5,) * 3)
    assert test[2]["broken"] and not test[1]["broken"]


def test_transforms_apply_the_same_parameters_to_every_frame(tmp_path):
    frame = torch.randint(0, 255, (3, 40, 60), dtype=torch.uint8)
    video = frame.expand(6, 3, 40, 60).contiguous()
    from torchvision import tv_tensors
    from zeroi2v.data.transforms import train_transform
    torch.manual_seed(0)
    out = train_transform(32, (0.5,) * 3, (0.5,) * 3, random_erasing=1.0)(tv_tensors.Video(video))
    assert out.shape == (6, 3, 32, 32)
    assert all(torch.equal(out[0], out[t]) for t in range(6))
    three = eval_transform(32, (0.5,) * 3, (0.5,) * 3, crops=3)(video)
    assert three.shape == (3, 3, 6, 32, 32)
    assert not torch.equal(three[0], three[2])  # left and right crops differ
