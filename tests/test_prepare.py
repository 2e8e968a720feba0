"""`zeroi2v prepare`: real videos converted to JPEG frames and short-GOP H.264, checked against the source."""

import json
import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from tests.conftest import ENV, REPO
from tests.videos import read_index, write_index_video
from zeroi2v.cli import main
from zeroi2v.data import load_annotations, num_frames, read_frames
from zeroi2v.errors import UserError
from zeroi2v.prepare import output_list_name, prepare


def _dataset(root, per_class=2, frames=30, vfr_class=1, size=(48, 64)):
    """root/videos/{a,b}/vN.mp4 (class b with jittered timestamps), root/train.txt, root/classes.txt."""
    lines = []
    for label, name in enumerate("ab"):
        (root / "videos" / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rel = f"videos/{name}/v{i}.mp4"
            write_index_video(root / rel, frames + i, height=size[0], width=size[1], vfr=label == vfr_class)
            lines.append(f"{rel} {label}\n")
    (root / "train.txt").write_text("".join(lines))
    (root / "classes.txt").write_text("a\nb\n")
    return root / "train.txt"


def _jpeg(path) -> torch.Tensor:
    """(3, H, W) uint8 pixels of a JPEG file (libjpeg-turbo, as torchvision's decode_jpeg)."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def _rawframes(list_path):
    """(frame_dir, total_frames, label) rows of a rawframe list."""
    rows = [line.split() for line in list_path.read_text().splitlines()]
    assert all(len(row) == 3 for row in rows)
    return [(d, int(n), int(label)) for d, n, label in rows]


def test_frames_are_the_source_frames_at_the_short_side(tmp_path):
    source = _dataset(tmp_path / "src")
    out = tmp_path / "fast"
    report = prepare(source, out, fmt="frames", short_side=32, workers=2, progress=False, log=lambda *a: None)
    assert report["written"] == 4 and report["kept"] == 0 and not report["unreadable"]
    rows = _rawframes(out / "train.txt")
    assert [(d, label) for d, _, label in rows] == [
        ("videos/a/v0", 0),
        ("videos/a/v1", 0),
        ("videos/b/v0", 1),
        ("videos/b/v1", 1),
    ]
    assert (out / "classes.txt").read_text() == "a\nb\n"
    for frame_dir, total, _ in rows:
        video = tmp_path / "src" / f"{frame_dir}.mp4"
        assert total == num_frames(video)
        names = sorted(os.listdir(out / frame_dir))
        assert names == [f"img_{i:05d}.jpg" for i in range(1, total + 1)]  # MMAction2's names, from 1
        frames = torch.stack([_jpeg(out / frame_dir / name) for name in names])
        source_frames = read_frames(video, np.arange(total)).permute(0, 3, 1, 2)
        expected = F.resize(source_frames, [32], antialias=True)  # as the loader resizes
        assert frames.shape == expected.shape == (total, 3, 32, 42)
        assert (frames.float() - expected.float()).abs().mean() < 3  # JPEG noise only (of 255)
        assert [read_index(f.permute(1, 2, 0).numpy()) for f in frames] == list(range(total))


def test_video_copy_of_a_class_tree_keeps_every_frame_with_short_keyframe_intervals(tmp_path):
    for label, name in enumerate(("brushing", "catch")):
        (tmp_path / "ds" / "train" / name).mkdir(parents=True)
        write_index_video(tmp_path / "ds" / "train" / name / "x.avi", 40 + label, codec="mjpeg", height=96, width=128)
    out = tmp_path / "fast"
    prepare(
        tmp_path / "ds" / "train",
        out,
        fmt="video",
        short_side=64,
        gop=4,
        workers=1,
        progress=False,
        log=lambda *a: None,
    )
    assert (out / "train.txt").read_text() == "brushing/x.mp4 0\ncatch/x.mp4 1\n"
    ann = load_annotations(out, out / "train.txt")  # what train reads: a plain list, the class names beside it
    assert ann.classes == ["brushing", "catch"]
    for rel, label in ann.samples:
        path = out / rel
        n = num_frames(path)
        assert n == 40 + label
        frames = read_frames(path, np.arange(n))
        assert frames.shape == (n, 64, 84, 3)  # short side 64, even sizes for H.264
        assert [read_index(f.numpy()) for f in frames] == list(range(n))
        with av.open(str(path)) as container:
            keys = [i for i, p in enumerate(container.demux(video=0)) if p.size and p.is_keyframe]
        assert keys[0] == 0 and max(np.diff(keys + [n])) <= 4  # at most 4 apart (x264 adds some at scene cuts)


def test_output_list_names_read_back_as_plain_lists():
    assert output_list_name("lists/train.txt", "train") == "train.txt"
    assert output_list_name("ds/train/", "train") == "train.txt"
    assert output_list_name("ssv2/something-something-v2-train.json", "train") == "something-something-v2-train.txt"
    assert output_list_name("ucf/trainlist01.txt", "train") == "ucf101_trainlist01.txt"
    assert output_list_name("splits/*_test_split1.txt", "val") == "hmdb51_split1_val.txt"
    assert output_list_name("splits/brush_hair_test_split2.txt", "train") == "hmdb51_split2_train.txt"


def test_ucf101_split_becomes_a_plain_list_with_the_class_names(tmp_path):
    src = tmp_path / "UCF-101"
    for name in ("ApplyLipstick", "Archery"):
        (src / name).mkdir(parents=True)
        write_index_video(src / name / f"v_{name}_g01_c01.avi", 20, codec="mjpeg")
    splits = tmp_path / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyLipstick\n2 Archery\n")
    (splits / "trainlist01.txt").write_text(
        "ApplyLipstick/v_ApplyLipstick_g01_c01.avi 1\nArchery/v_Archery_g01_c01.avi 2\n"
    )
    out = tmp_path / "fast"
    prepare(splits / "trainlist01.txt", out, root=src, short_side=0, workers=1, progress=False, log=lambda *a: None)
    rows = _rawframes(out / "ucf101_trainlist01.txt")
    assert rows == [("ApplyLipstick/v_ApplyLipstick_g01_c01", 20, 0), ("Archery/v_Archery_g01_c01", 20, 1)]
    assert (out / "classes.txt").read_text() == "ApplyLipstick\nArchery\n"
    assert _jpeg(out / rows[0][0] / "img_00001.jpg").shape == (3, 48, 64)  # 0: source size


def test_unreadable_inputs_are_skipped_and_named(tmp_path):
    source = _dataset(tmp_path / "src", per_class=1)
    (tmp_path / "src" / "videos" / "junk.mp4").write_text("not a video")
    with open(source, "a") as f:
        f.write("videos/junk.mp4 1\nvideos/missing.mp4 0\n")
    lines = []
    report = prepare(source, tmp_path / "fast", short_side=32, workers=2, progress=False, log=lines.append)
    assert sorted(os.path.basename(u["path"]) for u in report["unreadable"]) == ["junk.mp4", "missing.mp4"]
    assert json.loads((tmp_path / "fast" / "train.prepare.json").read_text())["unreadable"] == report["unreadable"]
    assert any("2 unreadable videos skipped" in line for line in lines)
    assert [d for d, _, _ in _rawframes(tmp_path / "fast" / "train.txt")] == ["videos/a/v0", "videos/b/v0"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_text("junk")
    (tmp_path / "bad" / "list.txt").write_text("x.mp4 0\n")
    with pytest.raises(UserError, match="none of the 1 videos"):
        prepare(tmp_path / "bad" / "list.txt", tmp_path / "fast2", workers=1, progress=False, log=lambda *a: None)


def _cli(capsys, *argv):
    code = main(["prepare", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    return code, err


def test_never_writes_into_the_source_and_checks_every_argument(tmp_path, capsys):
    source = _dataset(tmp_path / "src", per_class=1)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out in (tmp_path / "src", tmp_path / "src" / "fast", tmp_path / "src" / "videos"):
        code, err = _cli(capsys, source, out, "--format", "frames")
        assert code == 2 and "source folder" in err and len(err.splitlines()) == 1, err
    for args, message in (
        (["--quality", "0"], "--quality"),
        (["--short-side", "5"], "--short-side"),
        (["--workers", "0"], "--workers"),
        (["--gop", "0"], "--gop"),
        (["--root", tmp_path / "nowhere"], "--root"),
    ):
        code, err = _cli(capsys, source, tmp_path / "out", "--format", "video", *args)
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
    code, err = _cli(capsys, tmp_path / "nothing.txt", tmp_path / "out", "--format", "video")
    assert code == 2 and "not found" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "out" not in p.parts) == before
    prepare(source, tmp_path / "out", short_side=32, workers=1, progress=False, log=lambda *a: None)
    code, err = _cli(capsys, source, tmp_path / "out", "--format", "frames", "--short-side", "64")
    assert code == 2 and "other settings" in err and "short_side 32 (now 64)" in err


def test_killed_with_sigkill_and_rerun_completes_without_redoing_finished_items(tmp_path):
    src = tmp_path / "src"
    (src / "videos").mkdir(parents=True)
    count = 24
    for i in range(count):
        write_index_video(src / "videos" / f"v{i:02d}.mp4", 90, height=96, width=128)
    (src / "train.txt").write_text("".join(f"videos/v{i:02d}.mp4 {i % 2}\n" for i in range(count)))
    out = tmp_path / "fast"
    cmd = [sys.executable, "-m", "zeroi2v", "prepare", str(src / "train.txt"), str(out), "--format", "frames"]
    cmd += ["--short-side", "64", "--workers", "2"]
    proc = subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished = lambda: [d for d in (out / "videos").iterdir()] if (out / "videos").is_dir() else []  # noqa: E731
    deadline = time.time() + 120
    while len(finished()) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # the workers die with it
    done = {d.name: d.stat().st_mtime_ns for d in finished()}
    assert 3 <= len(done) < count, "the run ended before it could be killed mid-way"
    assert not (out / "train.txt").exists()
    for name in done:  # every item there is complete
        assert len(os.listdir(out / "videos" / name)) == 90
    result = subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "train.prepare.json").read_text())
    assert report["kept"] == len(done) and report["written"] == count - len(done)
    assert {name: (out / "videos" / name).stat().st_mtime_ns for name in done} == done  # not redone
    rows = _rawframes(out / "train.txt")
    assert len(rows) == count and all(n == 90 and len(os.listdir(out / d)) == 90 for d, n, _ in rows)
    assert not (out / ".partial").exists()  # the killed run's temporaries are gone
    assert f"{len(done)} kept from an earlier run" in result.stdout


def test_ssv2_json_becomes_a_plain_list_with_the_class_names(tmp_path):
    src = tmp_path / "20bn"
    src.mkdir()
    for i in (7, 9):
        write_index_video(src / f"{i}.webm", 12, codec="libvpx-vp9")
    labels = {"Pushing something from left to right": 0, "Pushing something from right to left": 1}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    entries = [
        {"id": "7", "template": "Pushing [something] from left to right", "placeholders": ["a"]},
        {"id": "9", "template": "Pushing [something] from right to left", "placeholders": ["b"]},
    ]
    (tmp_path / "train.json").write_text(json.dumps(entries))
    out = tmp_path / "fast"
    prepare(tmp_path / "train.json", out, root=src, fmt="video", workers=1, progress=False, log=lambda *a: None)
    assert (out / "train.txt").read_text() == "7.mp4 0\n9.mp4 1\n"
    assert load_annotations(out, out / "train.txt").classes == list(labels)  # SSv2 label flipping finds its pairs
    assert num_frames(out / "7.mp4") == 12


def test_two_sources_with_one_name_get_two_items(tmp_path):
    from zeroi2v.prepare import _items

    items = _items([("a/x.mp4", 0), ("a/x.avi", 1), ("a/x.mp4", 0), ("/elsewhere/y.mp4", 1)], tmp_path, "frames")
    assert [i.out for i in items] == ["a/x", "a/x_avi", "a/x", "elsewhere/y"]
    outside = _items([("../up/z.mkv", 0)], tmp_path / "root", "video")[0].out  # its own path, inside OUT_DIR
    assert outside == str(tmp_path / "up" / "z.mp4").lstrip("/") and ".." not in outside


def test_class_names_with_spaces_read_back(tmp_path):
    """Kinetics' class folders have spaces ('air drumming'): the rawframe list prepare writes reads back."""
    for name in ("air drumming", "abseiling"):
        (tmp_path / "src" / name).mkdir(parents=True)
        write_index_video(tmp_path / "src" / name / "clip 1.mp4", 12)
    out = tmp_path / "fast"
    prepare(tmp_path / "src", out, short_side=0, workers=1, progress=False, log=lambda *a: None)
    ann = load_annotations(out, out / "src.txt")
    assert ann.samples == [("abseiling/clip 1", 0), ("air drumming/clip 1", 1)]
    assert ann.lengths == {"abseiling/clip 1": 12, "air drumming/clip 1": 12}
