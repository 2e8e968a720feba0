"""Synthetic motion videos: real files that decode to the rendered frames, valid list files, and
classes that only temporal order tells apart (each odd class is its even partner played backwards)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zeroi2v.cli import main as cli_main
from zeroi2v.data import load_annotations, num_frames, read_frames
from zeroi2v.data.synthetic import CLASSES, FAMILIES, make_motion_dataset, render
from zeroi2v.errors import UserError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return make_motion_dataset(root, train_per_class=2, val_per_class=1, num_frames=8, size=32, progress=False)


def test_list_files_and_classes(dataset):
    root = Path(dataset["root"])
    assert dataset["classes"] == CLASSES
    assert Path(dataset["classes_file"]).read_text().splitlines() == CLASSES
    for split, per_class in (("train", 2), ("val", 1)):
        lines = Path(dataset[f"{split}_list"]).read_text().splitlines()
        assert len(lines) == per_class * len(CLASSES)
        labels = []
        for line in lines:
            rel, label = line.split(" ")
            assert (root / rel).is_file() and rel.startswith(f"{split}/") and rel.endswith(".mp4")
            assert CLASSES[int(label)].replace(" ", "_") in rel
            labels.append(int(label))
        assert sorted(set(labels)) == list(range(len(CLASSES)))
    # the project's own annotation reader accepts them and finds the class names
    ann = load_annotations(str(root), dataset["train_list"], split="train")
    assert len(ann.samples) == 2 * len(CLASSES) and ann.classes == CLASSES


def test_videos_decode_to_the_rendered_frames(dataset):
    root = Path(dataset["root"])
    rel, label = Path(dataset["val_list"]).read_text().splitlines()[0].split(" ")
    assert num_frames(root / rel) == 8
    frames = read_frames(root / rel, range(8)).numpy()
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    # nothing degenerate: the object moves / changes, so consecutive frames differ
    assert all(np.abs(frames[i + 1].astype(int) - frames[i]).mean() > 0.5 for i in range(7))


def test_h264_round_trip_is_close(tmp_path):
    from zeroi2v.data.synthetic import write_video

    frames = render(0, 8, 32, np.random.default_rng(3))
    write_video(tmp_path / "clip.mp4", frames)
    decoded = read_frames(tmp_path / "clip.mp4", range(8)).numpy()
    assert np.abs(decoded.astype(int) - frames).mean() < 8  # lossy, but the same picture


@pytest.mark.parametrize("label", [0, 2, 4, 6])
def test_pairs_are_time_reversals(label):
    """Same random draws: the odd partner is exactly the even class backwards, so the bag of frames is equal."""
    forward = render(label, 8, 32, np.random.default_rng(11))
    backward = render(label + 1, 8, 32, np.random.default_rng(11))
    assert np.array_equal(forward[::-1], backward)
    assert not np.array_equal(forward, backward)
    assert np.array_equal(forward.mean(0), backward.mean(0))  # frame averaging sees the same thing


def _centroids(frames: np.ndarray, color) -> np.ndarray:
    """(T, 2) column, row of the pixels of the object's colour in each frame."""
    out = []
    for frame in frames.astype(int):
        rows, cols = np.nonzero(np.abs(frame - np.asarray(color, int)).sum(-1) < 3)
        out.append((cols.mean(), rows.mean()))
    return np.array(out)


def _object_color(label, family, seed):
    from zeroi2v.data.synthetic import scene

    return scene(np.random.default_rng(seed), 32)["color"]


@pytest.mark.parametrize(
    "family,label,d_col,d_row",
    [
        ("basic", 0, 0, -1),
        ("basic", 1, 0, 1),
        ("basic", 2, -1, 0),
        ("basic", 3, 1, 0),
        ("complex", 2, -1, -1),
        ("complex", 3, 1, 1),
        ("complex", 4, 1, -1),
        ("complex", 5, -1, 1),
    ],
)
def test_directions_are_screen_directions(family, label, d_col, d_row):
    """Image rows grow downward: "moving up" = the object's row decreases, "moving left" = its column
    decreases; what the class name says is what a user sees in the frame strip."""
    for seed in range(5):
        frames = render(label, 8, 32, np.random.default_rng(seed), family=family, noise=0)
        c = _centroids(frames, _object_color(label, family, seed))
        move = c[-1] - c[0]
        for axis, sign in enumerate((d_col, d_row)):
            if sign:
                assert np.sign(move[axis]) == sign and abs(move[axis]) > 4, (FAMILIES[family][label], seed, move)
            else:
                assert abs(move[axis]) < 1, (FAMILIES[family][label], seed, move)
    assert FAMILIES[family][label].startswith("moving")


def test_rotation_is_clockwise_on_screen():
    """Angle of the object's pixels around their centre, measured with rows down: clockwise on screen
    means the angle atan2(row, col) increases. Compare the principal axis motion frame to frame."""
    from zeroi2v.data.synthetic import scene

    for seed in range(5):
        frames = render(0, 16, 48, np.random.default_rng(seed), family="complex", noise=0)
        color = scene(np.random.default_rng(seed), 48)["color"]
        angles = []
        for frame in frames.astype(int):
            rows, cols = np.nonzero(np.abs(frame - color.astype(int)).sum(-1) < 3)
            r, c = rows - rows.mean(), cols - cols.mean()
            # the far tip of the shape (the point farthest from its centroid) sweeps around
            far = np.argmax(r**2 + c**2)
            angles.append(np.arctan2(r[far], c[far]))
        steps = np.angle(np.exp(1j * np.diff(angles)))  # wrapped to (-pi, pi]
        assert np.median(steps) > 0, (seed, steps)  # clockwise on screen
        ccw = render(1, 16, 48, np.random.default_rng(seed), family="complex", noise=0)
        assert np.array_equal(ccw, frames[::-1])


@pytest.mark.parametrize("label", range(8))
def test_complex_family_pairs_are_time_reversals(label):
    pair = label - label % 2
    forward = render(pair, 12, 40, np.random.default_rng(5), family="complex", noise=5)
    backward = render(pair + 1, 12, 40, np.random.default_rng(5), family="complex", noise=5)
    assert np.array_equal(forward[::-1], backward) and not np.array_equal(forward, backward)
    assert forward.shape == (12, 40, 40, 3)
    assert all(np.abs(forward[i + 1].astype(int) - forward[i]).mean() > 0.3 for i in range(11))


def test_complex_family_mixed_codecs_and_other_sizes(tmp_path):
    info = make_motion_dataset(
        tmp_path,
        family="complex",
        train_per_class=1,
        val_per_class=1,
        num_frames=10,
        size=40,
        codec="mixed",
        noise=6,
        speed=1.5,
        progress=False,
    )
    assert info["classes"] == FAMILIES["complex"]
    rels = [line.split()[0] for line in Path(info["train_list"]).read_text().splitlines()]
    assert {Path(r).suffix for r in rels} == {".mp4", ".avi"}
    assert read_frames(tmp_path / rels[1], range(10)).shape == (10, 40, 40, 3)
    ann = load_annotations(str(tmp_path), info["val_list"], split="val")
    assert ann.classes == FAMILIES["complex"]


def test_extra_shapes_and_noise():
    plain = render(0, 6, 32, np.random.default_rng(1), shapes="all")
    noisy = render(0, 6, 32, np.random.default_rng(1), shapes="all", noise=10)
    assert plain.shape == noisy.shape and np.abs(plain.astype(int) - noisy).mean() > 3


def test_appearance_is_random():
    a, b = (render(0, 4, 32, np.random.default_rng(seed)) for seed in (0, 1))
    assert not np.array_equal(a, b)


def test_same_seed_same_dataset(tmp_path):
    kwargs = dict(train_per_class=1, val_per_class=0, num_frames=4, size=16, num_classes=2, progress=False)
    make_motion_dataset(tmp_path / "a", **kwargs)
    make_motion_dataset(tmp_path / "b", **kwargs)
    for rel in ("train/moving_up_0000.mp4", "train/moving_down_0000.mp4"):
        assert np.array_equal(read_frames(tmp_path / "a" / rel, range(4)), read_frames(tmp_path / "b" / rel, range(4)))


def test_mjpeg_avi(tmp_path):
    info = make_motion_dataset(
        tmp_path,
        train_per_class=1,
        val_per_class=0,
        num_frames=4,
        size=16,
        num_classes=2,
        codec="mjpeg",
        progress=False,
    )
    rel = Path(info["train_list"]).read_text().split()[0]
    assert rel.endswith(".avi") and read_frames(tmp_path / rel, range(4)).shape == (4, 16, 16, 3)


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="even"):
        make_motion_dataset(tmp_path, num_classes=3, progress=False)
    with pytest.raises(UserError, match="codec"):
        make_motion_dataset(tmp_path, codec="divx", progress=False)
    with pytest.raises(UserError, match="family"):
        make_motion_dataset(tmp_path, family="spiral", progress=False)
    with pytest.raises(UserError, match="speed"):
        make_motion_dataset(tmp_path, speed=0, progress=False)


def test_cli(tmp_path, capsys):
    assert (
        cli_main(
            [
                "synth",
                str(tmp_path / "out"),
                "--train-per-class",
                "1",
                "--val-per-class",
                "1",
                "--classes",
                "2",
                "--frames",
                "4",
                "--size",
                "16",
            ]
        )
        == 0
    )
    assert "2 classes" in capsys.readouterr().out
    assert len((tmp_path / "out" / "val.txt").read_text().splitlines()) == 2
    assert cli_main(["synth", str(tmp_path / "bad"), "--classes", "5"]) == 2
    assert "even number" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "synth",
                str(tmp_path / "cx"),
                "--family",
                "complex",
                "--train-per-class",
                "1",
                "--val-per-class",
                "0",
                "--classes",
                "2",
                "--frames",
                "16",
                "--size",
                "24",
                "--codec",
                "mjpeg",
                "--noise",
                "3",
                "--speed",
                "0.7",
            ]
        )
        == 0
    )
    assert (tmp_path / "cx" / "classes.txt").read_text().splitlines() == FAMILIES["complex"][:2]


def test_never_overwrites_lists_it_did_not_write(tmp_path, capsys):
    small = ["--train-per-class", "1", "--val-per-class", "1", "--classes", "2", "--frames", "4", "--size", "16"]
    real = tmp_path / "my_dataset"  # a real dataset's folder, given by mistake
    real.mkdir()
    (real / "train.txt").write_text("clips/a.mp4 0\n")
    (real / "classes.txt").write_text("archery\n")
    assert cli_main(["synth", str(real), *small]) == 2
    err = capsys.readouterr().err
    assert "did not write" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert (real / "train.txt").read_text() == "clips/a.mp4 0\n" and not (real / "train").exists()
    assert cli_main(["synth", str(real), *small, "--force"]) == 0
    assert json.loads((real / "synth.json").read_text())["num_classes"] == 2
    again = tmp_path / "again"  # its own output: regenerated without --force
    assert cli_main(["synth", str(again), *small]) == 0 and cli_main(["synth", str(again), *small]) == 0
