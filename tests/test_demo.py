"""`zeroi2v demo --tiny`: the whole pipeline (videos, backbone, three trainings through the engine,
eval, merge, cost, ONNX, predict, report) at toy size, so CI catches any broken step; and the image
pretraining that produces the shipped backbone."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import ENV, wait_for
from zeroi2v.cli import main as cli_main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    (out / ".zeroi2v-demo").write_text("")  # a previous demo's folder: its runs start over
    for run in ("mine", "zeroi2v"):  # a user's run beside the demo's, and a stale demo run
        (out / "runs" / run).mkdir(parents=True)
        (out / "runs" / run / "old.txt").write_text("x")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        assert cli_main(["demo", "--tiny", "--probe", "--out", str(out)]) == 0
    (out.parent / f"{out.name}.log").write_text(log.getvalue())
    return out


def test_demo_log_says_each_step_once_in_plain_words(demo):
    log = (demo.parent / f"{demo.name}.log").read_text()
    assert log.count("[3/5]") == 1 and "3 rows, 1 epoch each" in log and "1 epochs" not in log
    averaging = next(line for line in log.splitlines() if line.startswith("model ") and "frame averaging" in line)
    assert "(zeroi2v)" not in averaging


def test_demo_without_onnxruntime_helps_and_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as on an install without the onnx extra
    assert cli_main(["demo", "--help"]) == 0 and "--tiny" in capsys.readouterr().out  # the stored help text
    assert cli_main(["demo", "--tiny", "--out", str(tmp_path / "d")]) == 2
    assert "pip install 'zeroi2v[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # said before any work


def test_demo_starts_its_own_runs_over_and_leaves_other_runs_alone(demo):
    assert (demo / "runs" / "mine" / "old.txt").is_file()
    assert not (demo / "runs" / "zeroi2v" / "old.txt").exists()
    assert (demo / "runs" / "zeroi2v" / "model.safetensors").is_file()


def test_demo_never_writes_over_a_folder_no_demo_wrote(tmp_path, capsys):
    # `zeroi2v demo --out .` in a project: its own run named like a demo row, its own export
    (tmp_path / "runs" / "zeroi2v").mkdir(parents=True)
    (tmp_path / "runs" / "zeroi2v" / "model.safetensors").write_text("my weights")
    (tmp_path / "model.onnx").write_text("my export")
    assert cli_main(["demo", "--tiny", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "that no demo wrote; refusing to overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "runs" / "zeroi2v" / "model.safetensors").read_text() == "my weights"
    assert (tmp_path / "model.onnx").read_text() == "my export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "runs"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "{tmp}/file.txt"], "is a file"),
        (["--out", "{tmp}/file.txt/sub"], "cannot create --out"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--train-per-class", "0"], "--train-per-class >= 2"),
    ],
)
def test_demo_rejects_bad_arguments_in_one_line(tmp_path, capsys, args, message):
    (tmp_path / "file.txt").write_text("not a folder")
    code = cli_main(["demo", "--tiny", "--out", str(tmp_path / "d"), *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "d" / "runs").exists()


def test_ctrl_c_in_a_row_stops_the_whole_demo(tmp_path):
    """Ctrl-C while a row trains stops the demo (exit 130, the line saying a rerun starts over), not only
    that row: the demo used to go on and fail with "... is an unfinished run" (exit 2)."""
    out = tmp_path / "d"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeroi2v", "demo", "--tiny", "--epochs", "300", "--out", str(out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert wait_for((out / "runs" / "zeroi2v" / "checkpoint" / "last.json").is_file, timeout=300)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "a rerun of the demo starts over" in stdout and "Traceback" not in stderr, stderr[-2000:]
    assert not (out / "runs" / "averaging").exists()  # the next row never started


def test_report_and_artifacts(demo):
    report = (demo / "report.md").read_text()
    for section in ("## Accuracy", "## Deployment", "## Rerun each step"):
        assert section in report
    for verb in (
        "zeroi2v synth",
        "zeroi2v train",
        "zeroi2v eval",
        "zeroi2v merge",
        "zeroi2v export",
        "zeroi2v predict",
    ):
        assert verb in report
    for png in (
        "accuracy.png",
        "frame_strip.png",
        "confusion_matrix.png",
        "curves_zeroi2v.png",
        "curves_averaging.png",
        "curves_linear_probe.png",
    ):
        assert (demo / png).read_bytes()[:4] == b"\x89PNG", png
        assert f"]({png})" in report
    assert (demo / "model.onnx").stat().st_size > 0
    assert (demo / "merged" / "model.safetensors").is_file() and (demo / "merged" / "classes.txt").is_file()


def test_summary_numbers(demo):
    summary = json.loads((demo / "summary.json").read_text())
    assert set(summary["rows"]) == {"zeroi2v", "averaging", "linear_probe"}
    for row in summary["rows"].values():
        assert 0 <= row["top1"] <= 1 and row["trainable"] > 0
    rows = summary["rows"]
    assert rows["linear_probe"]["trainable"] < rows["averaging"]["trainable"] < rows["zeroi2v"]["trainable"]
    assert summary["merge_error"] < 1e-4 and summary["onnx_error"] < 1e-4
    assert summary["predictions_identical"] is True
    cost = summary["cost"]
    plain = next(v for k, v in cost.items() if k.startswith("plain"))
    for row in cost.values():  # speeds from paired rounds, as a ratio to the plain image model with its range
        lo, hi = row["speed_ratio_range"]
        assert 0 < lo <= row["speed_ratio"] <= hi
    assert plain["speed_ratio"] == 1.0
    assert summary["recipe"].endswith("demo.yaml")
    merged = cost["ZeroI2V merged (deployed)"]
    unmerged = cost["ZeroI2V unmerged (training)"]
    assert merged["flops"] == plain["flops"] < unmerged["flops"]  # zero extra inference cost
    assert merged["params"] == plain["params"] + 8 * 128  # + the T x D temporal embedding only
    assert unmerged["params"] > merged["params"]


def test_demo_trains_the_recipe_file(demo):
    """Every row is configs/demo.yaml with only data paths, output, backbone file (and the row's change)."""
    import yaml

    from zeroi2v.config import load_config
    from zeroi2v.demo import RECIPE

    recipe = yaml.safe_load(RECIPE.read_text())
    run = yaml.safe_load((demo / "runs" / "zeroi2v" / "config.yaml").read_text())
    assert run["model"]["head_offsets"] == recipe["model"]["head_offsets"]
    assert run["train"]["lr"] == recipe["train"]["lr"] and run["model"]["timm_kwargs"] == recipe["model"]["timm_kwargs"]
    assert run["data"]["flip"] == recipe["data"]["flip"] and run["data"]["sampling"] == recipe["data"]["sampling"]
    averaging = yaml.safe_load((demo / "runs" / "averaging" / "config.yaml").read_text())
    assert averaging["model"]["head_offsets"] == [] and averaging["train"]["lr"] == recipe["train"]["lr"]
    cfg = load_config(RECIPE, ["model.pretrained=x.safetensors"])
    assert cfg.model.head_offsets == recipe["model"]["head_offsets"]


def test_recipe_names_the_shipped_backbone():
    """configs/demo.yaml leaves model.pretrained at the value that means the shipped image backbone, and
    a user changes only data paths, class count and output."""
    import yaml

    from zeroi2v.demo import RECIPE

    recipe = yaml.safe_load(RECIPE.read_text())
    assert recipe["model"]["pretrained"] == "builtin:demo_vit" and recipe["model"]["freeze"] is True
    assert recipe["data"]["root"] is None and recipe["data"]["train_list"] is None
    assert recipe["model"]["num_classes"] is None


def test_accuracy_chart_is_not_clipped(tmp_path):
    """The title and the longest bar label lie inside the saved picture."""
    from PIL import Image

    from zeroi2v.plots import accuracy_bars

    names = ["ZeroI2V (STDHA + adapters + temporal emb.)", "frame averaging (adapters, no temporal heads)", "probe"]
    accuracy_bars(names, [0.97, 0.5, 0.4], tmp_path / "a.png", title="val top-1, motion task (frozen image backbone)")
    image = Image.open(tmp_path / "a.png").convert("L")
    width, height = image.size
    assert width > 600
    edge = [image.getpixel((x, y)) for x in (0, width - 1) for y in range(height)]
    assert min(edge) > 200  # nothing drawn on the left/right border: text is not cut off


def test_rerun_commands_work(demo, capsys):
    """The report's commands are real: re-evaluate the merged model with its own config."""
    assert cli_main(["eval", str(demo / "merged")]) == 0
    assert "top1=" in capsys.readouterr().out


def test_pretraining_saves_a_timm_checkpoint(tmp_path):
    import timm
    from safetensors.torch import load_file

    from zeroi2v import create_model
    from zeroi2v.pretrain import BACKBONE, TIMM_KWARGS, pretrain

    info = pretrain(tmp_path / "vit.safetensors", steps=2, batch=8, progress=False)
    assert info["steps"] == 2 and set(info["held_out_accuracy"]) >= {"shape", "x", "y", "cells_iou"}
    assert json.loads((tmp_path / "vit.json").read_text())["timm_kwargs"] == TIMM_KWARGS
    state = load_file(tmp_path / "vit.safetensors")
    timm.create_model(BACKBONE, num_classes=state["head.weight"].shape[0], **TIMM_KWARGS).load_state_dict(state)
    model = create_model(
        BACKBONE, num_frames=4, num_classes=3, pretrained=str(tmp_path / "vit.safetensors"), **TIMM_KWARGS
    )
    vit = model.backbone.state_dict()
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token", "norm.weight"):
        assert torch.equal(vit[key], state[key]), key


def test_pretraining_stills_label_the_heading_of_pointers_only():
    """The heading target is the direction the pointer points on screen (rows down, angle clockwise from
    +x), in 8 bins; symmetric shapes have none. Checked on the arrow: its tip is its farthest pixel
    from the centre, at `radius` along the heading."""
    import numpy as np

    from zeroi2v.data.synthetic import SHAPES, heading_mask
    from zeroi2v.pretrain import IGNORE, SHAPE_NAMES, random_images

    _, labels, _ = random_images(200, 32, np.random.default_rng(0))
    pointer = labels[:, 0] >= len(SHAPES)
    assert pointer.any() and (~pointer).any() and labels[:, 0].max() == len(SHAPE_NAMES) - 1
    assert (labels[~pointer, 5] == IGNORE).all() and set(labels[pointer, 5]) == set(range(8))
    for bin_ in range(8):
        angle = (bin_ + 0.5) * np.pi / 4
        rows, cols = np.nonzero(heading_mask(64, 0, 32.0, 32.0, 20.0, angle))
        tip = np.argmax((cols + 0.5 - 32) * np.cos(angle) + (rows + 0.5 - 32) * np.sin(angle))
        assert np.hypot(cols[tip] + 0.5 - 32 - 20 * np.cos(angle), rows[tip] + 0.5 - 32 - 20 * np.sin(angle)) < 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "-1"], "--steps and --batch must be >= 1"),
        (["--batch", "0"], "--steps and --batch must be >= 1"),
        (["--out", "{tmp}"], "is a folder"),
        (["--out", "{tmp}/file.txt/vit.safetensors"], "cannot create the folder of --out"),
        (["--blank-patches", "1.5"], "--blank-patches must be in [0, 1)"),
        (["--blank-patches", "0.3"], "give --out, so the shipped one stays"),
    ],
)
def test_pretraining_cli_rejects_bad_arguments_before_training(tmp_path, capsys, args, message):
    from zeroi2v.pretrain import main

    (tmp_path / "file.txt").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(tmp=tmp_path) for a in args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.glob("**/*.safetensors"))


def test_blanked_patches_only_in_the_second_half_of_a_batch(tmp_path):
    from zeroi2v.pretrain import blank_patch_mask, pretrain

    torch.manual_seed(0)
    blank = blank_patch_mask(64, 4, 0.3)
    assert blank.shape == (64, 4, 4) and set(blank.unique().tolist()) <= {0.0, 1.0}
    assert blank[:32].sum() == 0 and 0.2 < blank[32:].mean() < 0.4
    info = pretrain(tmp_path / "vit.safetensors", steps=2, batch=8, blank_patches=0.5, progress=False)
    assert info["blank_patches"] == 0.5 and (tmp_path / "vit.safetensors").is_file()


def test_shipped_backbone_is_small_and_documented():
    from zeroi2v.pretrain import SHIPPED

    if not SHIPPED.is_file():
        pytest.skip("no shipped backbone in this checkout")
    assert SHIPPED.stat().st_size <= 5 * 2**20
    info = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert info["held_out_accuracy"]["cells_iou"] > 0.8  # the features know where things are
