"""What users expect from the CLI: every --set applies, TensorBoard logs, nothing damages a run or hides a
failure, every mistake is one line (no traceback), files are readable by colleagues, and the start of a run
says what will happen."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ENV, REPO, junk_videos, run_cli, write_config
from zeroi2v.cli import main
from zeroi2v.config import config_markdown

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = {"train__epochs": 1, "train__batch_size": 8}


@pytest.fixture(scope="module")
def run(ramps, tmp_path_factory):
    """A finished one-epoch run, trained in-process."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = write_config(tmp / "cfg.yaml", ramps, tmp / "run", **QUICK)
    old = os.umask(0o022)  # a shared cluster's usual umask
    try:
        assert main(["train", str(cfg)]) == 0
    finally:
        os.umask(old)
    return tmp / "run"


def one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# --- issue: repeated --set, TensorBoard ---------------------------------------------------------------
def test_every_set_applies_in_order_and_the_last_value_wins(ramps, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", ramps, tmp_path / "ignored", **QUICK)
    out = tmp_path / "a"
    assert (
        main(
            [
                "train",
                str(cfg),
                "--set",
                f"output={out}",
                "--set",
                "train.epochs=2",
                "train.lr=1e-3",
                "--set",
                "train.lr=2e-3",
            ]
        )
        == 0
    )
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["train"]["lr"] == 2e-3
    assert not (tmp_path / "ignored").exists()
    # the resolved config is absolute: it works from any directory
    assert all(os.path.isabs(saved["data"][k]) for k in ("root", "train_list", "val_list"))


def test_tensorboard_event_file_has_the_scalars_at_the_steps(ramps, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = write_config(
        tmp_path / "cfg.yaml", ramps, tmp_path / "run", train__epochs=2, train__batch_size=8, train__tensorboard=True
    )
    assert main(["train", str(cfg)]) == 0
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    steps_per_epoch = 48 // 8
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 2 * steps_per_epoch + 1))
    assert [e.step for e in events.Scalars("train/lr")] == [e.step for e in loss]
    assert [e.step for e in events.Scalars("val/top1")] == [steps_per_epoch, 2 * steps_per_epoch]
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [round(e.value, 5) for e in events.Scalars("val/top1")] == [round(m["val_top1"], 5) for m in metrics]


# --- damage and silent failure -------------------------------------------------------------------------
def test_merge_never_damages_the_source_and_refuses_before_work(run, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code = main(["merge", str(run), str(run)])
    one_line_error(capsys, code, "own directory")
    code = main(["merge", str(run), str(run / "merged")])
    one_line_error(capsys, code, "inside the source")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code = main(["merge", str(run), str(existing)])
    err = one_line_error(capsys, code, "--force")
    assert "verified" not in capsys.readouterr().out + err  # refused before the work
    afile = tmp_path / "file"
    afile.write_text("x")
    one_line_error(capsys, main(["merge", str(run), str(afile)]), "not a directory")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main(["merge", str(run), str(existing), "--force"]) == 0
    assert json.loads((existing / "model.json").read_text())["merged"] is True


def test_written_files_are_readable_by_group_and_others(run):
    """Trained under umask 022: every file is 0644 as the umask gives (not mkstemp's private 0600)."""
    files = [p for p in [*run.iterdir(), *(run / "checkpoint").iterdir(), *(run / "best").iterdir()] if p.is_file()]
    assert {"model.safetensors", "config.yaml", "metrics.jsonl", "last.json"} <= {p.name for p in files}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, (path, oct(stat.S_IMODE(path.stat().st_mode)))


def test_separate_train_and_val_class_folder_trees(ramps, tmp_path):
    """Folder trees resolve their own paths: data.root does not have to hold both."""
    tree = tmp_path / "ds"
    for split in ("train", "val"):
        for line in Path(ramps[f"{split}_list"]).read_text().splitlines():
            rel, label = line.split()
            target = tree / split / ("brightening", "darkening")[int(label)] / Path(rel).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(ramps["root"]) / rel, target)
    cfg = write_config(
        tmp_path / "cfg.yaml",
        ramps,
        tmp_path / "run",
        **QUICK,
        data__root=None,
        data__train_list=str(tree / "train"),
        data__val_list=str(tree / "val"),
    )
    assert main(["train", str(cfg)]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["val_num_videos"] == 20 and metrics["val_broken_videos"] == 0


def test_parent_of_split_folders_is_named_as_such(ramps, tmp_path, capsys):
    for split in ("train", "val"):
        (tmp_path / "ds" / split / "a").mkdir(parents=True)
    cfg = write_config(
        tmp_path / "cfg.yaml", ramps, tmp_path / "run", data__root=None, data__train_list=str(tmp_path / "ds")
    )
    one_line_error(capsys, main(["train", str(cfg)]), "split folders", "not class folders")
    assert not (tmp_path / "run").exists()  # a run that fails at start-up leaves nothing behind


def test_failed_start_removes_the_folders_it_created_and_nothing_else(ramps, tmp_path, capsys):
    """output runs/a/b where runs/ did not exist: a start-up failure leaves no empty runs/a behind, and
    never removes a folder another run put beside it meanwhile."""
    for split in ("train", "val"):
        (tmp_path / "ds" / split / "a").mkdir(parents=True)
    cfg = write_config(
        tmp_path / "cfg.yaml",
        ramps,
        tmp_path / "runs" / "a" / "b",
        data__root=None,
        data__train_list=str(tmp_path / "ds"),
    )
    one_line_error(capsys, main(["train", str(cfg)]), "split folders")
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs" / "other").mkdir(parents=True)
    one_line_error(capsys, main(["train", str(cfg)]), "split folders")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["other"]


def test_unreadable_validation_stops_the_run(ramps, tmp_path, capsys):
    val_list = junk_videos(tmp_path / "junk", 4, "val.txt", absolute=True)
    cfg = write_config(tmp_path / "cfg.yaml", ramps, tmp_path / "run", **QUICK, data__val_list=str(val_list))
    one_line_error(capsys, main(["train", str(cfg)]), "none of the 4 validation videos could be read")
    assert not (tmp_path / "run" / "best").exists()


@pytest.mark.parametrize("override", ["model.num_frames=32", "model.backbone=resnet18", "train.lr=1"])
def test_keys_that_cannot_apply_to_a_trained_model_are_refused(run, override, capsys):
    for verb in (["eval", str(run)], ["predict", str(run), str(run / "config.yaml")]):
        one_line_error(capsys, main([*verb, "--set", override]), override.split("=")[0], "cannot apply")


# --- one line, never a traceback ---------------------------------------------------------------------------
def test_listed_mistakes_are_one_line(run, ramps, tmp_path, capsys):
    video = str(Path(ramps["root"]) / Path(ramps["val_list"]).read_text().split()[0])
    cases = [
        (["predict", str(run), video, "--set", "data.img_size=16"], "trained at 32 px"),
        (["predict", str(run), video, "--topk", "0"], "--topk must be >= 1"),
        (["predict", str(run), video, "--topk", "-1"], "--topk must be >= 1"),
        (["train", str(tmp_path)], "is a directory, not a config file"),
        (["export", str(run), str(tmp_path)], "is a directory"),
        (["predict", str(run), video, "--timeline", "--stride", "0"], "stride"),
    ]
    if not __import__("torch").cuda.is_available():
        cases.append((["eval", str(run), "--device", "cuda"], "no CUDA GPU"))
    for args, needle in cases:
        one_line_error(capsys, main(args), needle)
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(run), str(tmp_path / "empty")]) == 1
    assert "no videos (.mp4, .avi, .webm, ...) in this folder" in capsys.readouterr().err


def test_unfinished_run_says_so_and_offers_its_checkpoint(run, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "model.safetensors").unlink()
    for verb in (["eval", str(unfinished)], ["merge", str(unfinished), str(tmp_path / "m")]):
        one_line_error(capsys, main(verb), "unfinished run", "resume")
    assert main(["eval", str(unfinished), "--checkpoint"]) == 0


def test_rerunning_a_finished_run_says_so(run, capsys):
    capsys.readouterr()
    assert main(["train", str(run / "config.yaml")]) == 0
    assert "already finished" in capsys.readouterr().out


def test_start_up_says_what_will_happen(ramps, tmp_path, capsys):
    cfg = write_config(
        tmp_path / "cfg.yaml",
        ramps,
        tmp_path / "run",
        train__epochs=1,
        train__batch_size=8,
        train__warmup_epochs=2.5,
        model__freeze=True,
    )
    assert main(["train", str(cfg)]) == 0
    captured = capsys.readouterr()
    assert "48 training videos, 20 validation, 2 classes (brightening, darkening)" in captured.out
    assert "parameters trained" in captured.out and "warm-up capped at 1 epoch" in captured.out
    assert "model.pretrained is null and the backbone is frozen" in captured.err


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys; from zeroi2v.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("zeroi2v ")


def test_shipped_configs_are_found_by_name(capsys):
    assert main(["train", "--list-configs"]) == 0
    assert "k400_vitb16_8x16x1" in capsys.readouterr().out


def test_config_reference_is_generated_from_the_definitions():
    assert (REPO / "docs" / "config.md").read_text(encoding="utf-8") == config_markdown(), (
        "docs/config.md is stale: python -m zeroi2v.config docs/config.md"
    )


def test_bare_model_directory_is_tested_with_its_own_architecture(ramps, tmp_path):
    """No config.yaml: the test config comes from the model (a patch-8 ViT at 40 px is valid)."""
    import zeroi2v

    model = zeroi2v.create_model(
        "vit_tiny_patch16_224",
        num_frames=4,
        num_classes=2,
        img_size=40,
        patch_size=8,
        depth=1,
        embed_dim=64,
        num_heads=4,
    )
    zeroi2v.save_pretrained(model, tmp_path / "bare")
    assert (
        main(
            [
                "eval",
                str(tmp_path / "bare"),
                "--set",
                f"data.root={ramps['root']}",
                f"data.val_list={ramps['val_list']}",
                "data.sampling=uniform",
                "train.num_workers=0",
            ]
        )
        == 0
    )


def test_unknown_option_names_the_verb_and_its_usage(capsys):
    """`zeroi2v merge RUN --out DIR` (merge takes OUT_DIR positionally): the error is merge's, with its usage."""
    with pytest.raises(SystemExit) as exit_:
        main(["merge", "run", "--out", "merged"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "usage: zeroi2v merge" in err
    assert "zeroi2v merge: error: unrecognized arguments: --out" in err


# --- newcomer round 3: paths, outputs inside the data ---------------------------------------------------
def test_relative_paths_in_a_config_file_start_at_its_folder(ramps, tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    shutil.copytree(ramps["root"], project / "data")
    cfg = write_config(
        project / "my.yaml",
        {"root": "data", "train_list": "data/train.txt", "val_list": "data/val.txt"},
        "runs/x",
        **QUICK,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", str(cfg)]) == 0
    assert not (elsewhere / "runs").exists()
    saved = yaml.safe_load((project / "runs" / "x" / "config.yaml").read_text())
    assert saved["output"] == str(project / "runs" / "x")  # fully absolute
    assert saved["data"]["root"] == str(project / "data")
    # --set values are relative to the current directory
    from zeroi2v.config import load_config

    assert load_config(cfg, ["output=here"]).output == str(elsewhere / "here")


def test_a_runs_config_resumes_it_from_any_directory(run, tmp_path, monkeypatch, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "model.safetensors").unlink()
    saved = yaml.safe_load((unfinished / "config.yaml").read_text())
    saved["output"] = "runs/unfinished"  # as 0.2 wrote it: relative to where train was started
    (unfinished / "config.yaml").write_text(yaml.safe_dump(saved))
    monkeypatch.chdir(tmp_path)
    from zeroi2v.config import load_config

    assert load_config(unfinished / "config.yaml").output == str(unfinished)
    capsys.readouterr()
    assert main(["train", str(unfinished / "config.yaml")]) == 0
    assert (unfinished / "model.safetensors").is_file() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("where", ["root", "inside_tree", "list_folder"])
def test_output_inside_the_data_is_refused_before_anything_is_written(ramps, tmp_path, capsys, where):
    data = tmp_path / "data"
    shutil.copytree(ramps["root"], data)
    paths = {"root": str(data), "train_list": str(data / "train.txt"), "val_list": str(data / "val.txt")}
    output = {"root": data, "inside_tree": data / "videos" / "run", "list_folder": data}[where]
    if where == "inside_tree":
        paths = {"root": None, "train_list": str(data / "videos"), "val_list": str(data / "val.txt")}
    before = sorted(p for p in data.rglob("*"))
    cfg = write_config(tmp_path / "cfg.yaml", paths, output, **QUICK)
    one_line_error(capsys, main(["train", str(cfg)]), "output", "choose an output")
    assert sorted(p for p in data.rglob("*")) == before


# --- newcomer round 3: inputs that are not what they seem -------------------------------------------------
def write_faststart_video(path, frames=100, size=32):
    import av
    import numpy as np

    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:  # the index before the data
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt, stream.options = "yuv420p", {"g": "10"}
        for i in range(frames):
            frame = np.full((size, size, 3), (i * 2) % 255, np.uint8)
            frame[:, : i % size] = 255 - frame[:, : i % size]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_predict_warns_about_a_truncated_video_and_refuses_images(run, tmp_path, capsys):
    from PIL import Image

    full = write_faststart_video(tmp_path / "full.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    png, jpeg = tmp_path / "still.mp4", tmp_path / "photo.mp4"
    Image.new("RGB", (32, 32)).save(png, format="PNG")
    Image.new("RGB", (32, 32)).save(jpeg, format="JPEG")
    capsys.readouterr()
    assert main(["predict", str(run), str(full), str(cut)]) == 0
    captured = capsys.readouterr()
    assert f"{cut}: warning: decoded " in captured.err and " of 100 frames" in captured.err
    assert str(full) not in captured.err and captured.out.count("brightening") == 2
    assert main(["predict", str(run), str(png), str(jpeg)]) == 1
    err = capsys.readouterr().err
    assert f"{png}: unreadable (not a video: a single PNG image)" in err
    assert f"{jpeg}: unreadable (not a video: a single JPEG image)" in err


# --- newcomer round 3: --help -----------------------------------------------------------------------------
def test_help_texts_describe_arguments_and_defaults(capsys):
    from zeroi2v.cli import build_parser

    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    texts = {
        name: " ".join(verbs[name].format_help().split()) for name in ("train", "eval", "predict", "export", "merge")
    }
    assert "--list-configs" in texts["train"] and "from the file's folder" in texts["train"]
    for name in ("eval", "predict", "export", "merge"):
        assert "a run directory (output of train)" in texts[name], name
    assert "(default: 5)" in texts["predict"] and "(default: from OUT's extension)" in texts["export"]
    assert main(["train", "--list-configs"]) == 0 and "demo" in capsys.readouterr().out


@pytest.mark.parametrize("verb", ["synth", "demo", "bench"])
def test_passthrough_help_does_not_import_torch_and_is_current(verb, monkeypatch):
    from zeroi2v.cli import live_help, stored_help_path

    code = (
        "import sys; from zeroi2v.cli import main\n"
        f"assert main([{verb!r}, '--help']) == 0\n"
        "assert 'torch' not in sys.modules, 'imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert result.returncode == 0 and f"zeroi2v {verb}" in result.stdout, result.stderr
    assert stored_help_path(verb).read_text(encoding="utf-8") == live_help(verb), (
        f"zeroi2v/assets/help_{verb}.txt is stale: python -m zeroi2v.cli --write-help"
    )
    if verb == "synth":
        assert "(default: 100)" in result.stdout and "(default: libx264)" in result.stdout


def test_merge_force_replaces_only_a_model_directorys_files(run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own config\n")
    (mine / "classes.txt").write_text("my classes\n")
    err = one_line_error(capsys, main(["merge", str(run), str(mine)]), "classes.txt, config.yaml", "--force")
    assert "holds" in err
    one_line_error(capsys, main(["merge", str(run), str(mine), "--force"]), "not a zeroi2v model directory")
    assert (mine / "config.yaml").read_text() == "my own config\n" and not (mine / "model.json").exists()
    merged = tmp_path / "merged"
    assert main(["merge", str(run), str(merged)]) == 0
    assert main(["merge", str(run), str(merged), "--force"]) == 0  # an earlier model directory: replaced


# --- newcomer round 3: figures ----------------------------------------------------------------------------
@pytest.fixture
def kept_figures(monkeypatch):
    """The figures the plotting functions draw, kept open for inspection (they close them after saving)."""
    from zeroi2v import plots

    kept = []
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    monkeypatch.undo()
    for fig in kept:
        plots.plt.close(fig)


def test_training_curves_show_points_at_one_and_whole_epochs(tmp_path, kept_figures):
    from zeroi2v.plots import training_curves

    history = [{"epoch": e, "train_loss": 1.0 / e, "val_top1": 1.0} for e in range(1, 11)]
    training_curves(history, tmp_path / "curves.png")
    fig = kept_figures[-1]
    loss_ax, val_ax = fig.axes
    assert val_ax.get_ylim()[1] > 1.0  # a point at 1.0 is not on the frame's edge
    assert all(
        float(t).is_integer() for t in loss_ax.get_xticks() if loss_ax.get_xlim()[0] <= t <= loss_ax.get_xlim()[1]
    )
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    assert not legend.overlaps(val_ax.get_window_extent(renderer))  # the legend is outside the axes


def test_accuracy_label_and_colour_bar(tmp_path, kept_figures):
    from zeroi2v.plots import accuracy_bars, confusion_matrix

    names = ["ZeroI2V merged (this package)", "frame averaging (no temporal heads)", "linear probe", "full fine-tuning"]
    accuracy_bars(names, [1.0, 0.44, 0.5, 0.97], tmp_path / "accuracy.png")
    fig = kept_figures[-1]
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    label = next(t for t in ax.texts if t.get_text() == "100.0%").get_window_extent(renderer)
    assert label.x1 <= frame.x1  # inside the axes' frame
    confusion_matrix(np.array([[3, 0], [1, 2]]), ["a", "b"], tmp_path / "cm.png")
    bar_ax = kept_figures[-1].axes[1]
    ticks = [t for t in bar_ax.get_yticks() if 0 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)
