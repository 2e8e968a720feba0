"""`zeroi2v features`: one row per video = forward_features averaged over the run's test views, merged
by default (equal to the unmerged model's within float rounding), list files, safetensors metadata,
bad input as one-line errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open

import zeroi2v
from tests.videos import write_index_video
from zeroi2v.data import read_frames, sample_indices, transforms
from zeroi2v.errors import UserError
from zeroi2v.features import extract_features, load_features

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_FRAMES, INTERVAL, CLIPS, CROPS = 4, 3, 2, 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny random model whose adapters and temporal embedding are not zero (so merging matters)."""
    directory = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = zeroi2v.create_model(
        "vit_tiny_patch16_224",
        num_frames=NUM_FRAMES,
        num_classes=5,
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=64,
        num_heads=4,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".up." in name or name == "temporal_embed":
                p.normal_(0, 0.05)
    zeroi2v.save_pretrained(model, directory)
    cfg = {
        "model": {
            "backbone": "vit_tiny_patch16_224",
            "num_frames": NUM_FRAMES,
            "num_classes": 5,
            "timm_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 4},
        },
        "data": {
            "sampling": "dense",
            "frame_interval": INTERVAL,
            "img_size": 32,
            "test_clips": CLIPS,
            "test_crops": CROPS,
        },
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(cfg))
    return directory


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return [
        Path(write_index_video(folder / f"v{i}.mp4", n, height=40, width=56, fps=8)) for i, n in enumerate((30, 17, 9))
    ]  # the last is shorter than a clip (frames loop)


def expected_feature(model, path, frames_in_video):
    """forward_features of each test view built by hand (sampler + decoder + transform), averaged."""
    indices = sample_indices(frames_in_video, NUM_FRAMES, "dense", INTERVAL, CLIPS, train=False)
    transform = transforms.test_transform(32, model.data_config["mean"], model.data_config["std"], crops=CROPS)
    views = torch.cat([transform(read_frames(path, clip).permute(0, 3, 1, 2)) for clip in indices])
    assert views.shape == (CLIPS * CROPS, 3, NUM_FRAMES, 32, 32)
    with torch.no_grad():
        return model.forward_features(views).mean(0)


def test_features_match_forward_features(run, videos, tmp_path):
    unmerged = extract_features(
        run, [str(v) for v in videos], tmp_path / "unmerged.safetensors", merged=False, progress=False
    )
    merged = extract_features(run, [str(v) for v in videos], tmp_path / "merged.safetensors", progress=False)
    assert not unmerged["merged"] and merged["merged"] and merged["views"] == f"{CLIPS}x{CROPS}"
    model = zeroi2v.load_pretrained(run)
    for row, (video, n) in enumerate(zip(videos, (30, 17, 9), strict=False)):
        want = expected_feature(model, video, n)
        assert torch.allclose(unmerged["features"][row], want, atol=1e-5), row
    assert (merged["features"] - unmerged["features"]).abs().max() < 1e-4
    assert not torch.allclose(merged["features"][0], merged["features"][1], atol=1e-3)  # rows are per video

    saved = load_features(tmp_path / "merged.safetensors")
    assert saved["videos"] == [str(v) for v in videos] and saved["labels"] is None
    assert torch.equal(saved["features"], merged["features"]) and saved["features"].shape == (3, 64)
    assert saved["features"].dtype == torch.float32
    with safe_open(str(tmp_path / "merged.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["videos"]) == [str(v) for v in videos] and meta["merged"] == "true"
    assert meta["views"] == f"{CLIPS}x{CROPS}" and meta["feature_dim"] == "64"


def test_a_folder_stands_for_the_videos_under_it(run, videos, tmp_path):
    folder = tmp_path / "folder"
    (folder / "more").mkdir(parents=True)
    shutil.copy(videos[1], folder / "b.mp4")
    shutil.copy(videos[0], folder / "more" / "a.mp4")
    (folder / "notes.txt").write_text("not a video")
    result = extract_features(run, [str(folder)], tmp_path / "f.safetensors", merged=False, progress=False)
    assert result["videos"] == [str(folder / "b.mp4"), str(folder / "more" / "a.mp4")]
    each = extract_features(
        run, [str(videos[1]), str(videos[0])], tmp_path / "e.safetensors", merged=False, progress=False
    )
    assert torch.equal(result["features"], each["features"])


def test_list_file(run, videos, tmp_path):
    folder = videos[0].parent
    listing = folder / "list.txt"
    listing.write_text(f"# a comment\n{videos[2].name} 1\n\n{videos[0].name} 0\n")  # relative to the list file
    result = extract_features(run, [str(listing)], tmp_path / "f.safetensors", merged=False, progress=False)
    assert result["videos"] == [videos[2].name, videos[0].name] and result["labels"] == [1, 0]
    saved = load_features(tmp_path / "f.safetensors")
    assert saved["labels"].tolist() == [1, 0]
    single = extract_features(run, [str(videos[0])], tmp_path / "one.safetensors", merged=False, progress=False)
    assert torch.allclose(saved["features"][1], single["features"][0], atol=1e-6)
    plain = folder / "plain.lst"  # paths only (no labels), mixed with a video argument; root given explicitly
    plain.write_text(f"{videos[1].name}\n")
    mixed = extract_features(
        run, [str(videos[0]), str(plain)], tmp_path / "m.safetensors", root=folder, merged=False, progress=False
    )
    assert mixed["videos"] == [str(videos[0]), videos[1].name] and mixed["labels"] is None
    assert load_features(tmp_path / "m.safetensors")["labels"] is None


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_bad_input(run, videos, tmp_path):
    cases = [
        (([str(videos[0])], tmp_path / "out.npy"), ".safetensors"),
        (([str(tmp_path / "missing.mp4")], tmp_path / "out.safetensors"), "no such video"),
        (([str(tmp_path / "empty")], tmp_path / "out.safetensors"), "no videos (.mp4, .avi, .webm, ...) in folder"),
        (([str(videos[0])], tmp_path / "a_file" / "out.safetensors"), "not a directory"),
        (([str(tmp_path / "missing.txt")], tmp_path / "out.safetensors"), "not found"),
        (([], tmp_path / "out.safetensors"), "no videos"),
    ]
    (tmp_path / "a_file").write_text("")
    (tmp_path / "empty").mkdir()
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("nowhere.mp4 3\n")
    cases.append((([str(bad_list)], tmp_path / "out.safetensors"), "bad.txt:1"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 20)
    cases.append((([str(junk)], tmp_path / "out.safetensors"), "none of the 1 videos could be read (e.g. "))
    for (inputs, out), words in cases:
        with pytest.raises(UserError) as excinfo:
            extract_features(run, inputs, out, progress=False)
        assert words in one_line_error(excinfo), one_line_error(excinfo)
    assert not (tmp_path / "out.safetensors").exists()
    assert np.all([not p.name.endswith(".tmp") for p in tmp_path.iterdir()])


def test_out_never_overwrites_the_models_own_files(run, videos):
    weights = Path(run) / "model.safetensors"
    before = weights.read_bytes()
    with pytest.raises(UserError) as excinfo:
        extract_features(run, [str(videos[0])], weights, progress=False)
    assert "refusing to overwrite" in one_line_error(excinfo)
    assert weights.read_bytes() == before


def test_out_replaces_only_an_earlier_features_file(run, videos, tmp_path):
    other = tmp_path / "vit.safetensors"  # someone's weights, named by a typo in --out
    other.write_bytes((Path(run) / "model.safetensors").read_bytes())
    with pytest.raises(UserError) as excinfo:
        extract_features(run, [str(videos[0])], other, progress=False)
    assert "not a zeroi2v features file; refusing to overwrite" in one_line_error(excinfo)
    assert other.read_bytes() == (Path(run) / "model.safetensors").read_bytes()
    out = tmp_path / "feats.safetensors"
    extract_features(run, [str(videos[0])], out, progress=False)
    extract_features(run, [str(videos[0]), str(videos[1])], out, progress=False)  # an earlier one is replaced
    assert load_features(out)["features"].shape[0] == 2


# --- newcomer round 3 ---------------------------------------------------------------------------------
def test_unreadable_videos_are_skipped_named_and_counted(run, videos, tmp_path, capsys):
    from zeroi2v.cli import main

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 20)
    picture = tmp_path / "picture.mp4"  # a PNG under a video name is not a 1-frame video
    from PIL import Image

    Image.new("RGB", (32, 32)).save(picture, format="PNG")
    out = tmp_path / "f.safetensors"
    assert main(["features", str(run), str(videos[0]), str(junk), str(picture), str(videos[1]), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "2 unreadable skipped" in captured.out
    assert f"{junk}: skipped, unreadable (cannot open: Invalid data found when processing input)" in captured.err
    assert f"{picture}: skipped, unreadable (not a video: a single PNG image)" in captured.err
    assert "Errno" not in captured.err and captured.err.count(str(junk)) == 1
    assert load_features(out)["videos"] == [str(videos[0]), str(videos[1])]


def test_features_of_a_joint_attention_model(tmp_path, videos):
    from zeroi2v.build import build_model
    from zeroi2v.model import model_config

    model = build_model(
        model_config(
            "vit_tiny_patch16_224",
            method="joint",
            num_frames=NUM_FRAMES,
            num_classes=3,
            img_size=32,
            patch_size=8,
            depth=1,
            embed_dim=64,
            num_heads=4,
        )
    )
    zeroi2v.save_pretrained(model, tmp_path / "joint")
    result = extract_features(tmp_path / "joint", [str(videos[0])], tmp_path / "f.safetensors", progress=False)
    assert "joint cannot be merged" in result["note"] and result["features"].shape == (1, 64)


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", "garbage", "cuda:x"])
def test_every_device_string_is_one_line(run, videos, tmp_path, device, capsys):
    from zeroi2v.cli import main

    for verb in (
        ["features", str(run), str(videos[0]), "--out", str(tmp_path / "f.safetensors")],
        ["predict", str(run), str(videos[0])],
        ["eval", str(run), "--set", f"data.val_list={tmp_path}"],
    ):
        code = main([*verb, "--device", device])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "--device" in err, (verb, err)
