"""Fault injection: broken videos, non-finite losses, failed writes, kills at random moments."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ENV, final_weights, max_diff, run_cli, wait_for, write_config
from zeroi2v.cli import main
from zeroi2v.data.synthetic import make_motion_dataset


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion_rel")
    return make_motion_dataset(
        root, train_per_class=8, val_per_class=3, num_frames=8, size=32, num_classes=4, progress=False
    )


def with_broken_videos(motion, tmp_path):
    """A copy of the train list with a missing, an empty, a truncated and a non-video file added."""
    root = Path(motion["root"])
    good = root / Path(motion["train_list"]).read_text().split()[0]
    (root / "broken").mkdir(exist_ok=True)
    (root / "broken" / "empty.mp4").write_bytes(b"")
    (root / "broken" / "text.mp4").write_text("this is not a video\n" * 20)
    data = good.read_bytes()
    (root / "broken" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    lines = Path(motion["train_list"]).read_text().splitlines()
    lines += ["broken/missing.mp4 0", "broken/empty.mp4 1", "broken/text.mp4 2", "broken/truncated.mp4 3"]
    path = tmp_path / "train_with_broken.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_broken_videos_are_skipped_counted_and_named(motion, tmp_path, caplog):
    train_list = with_broken_videos(motion, tmp_path)
    cfg = write_config(
        tmp_path / "cfg.yaml",
        motion,
        tmp_path / "run",
        data__train_list=str(train_list),
        train__epochs=1,
        data__max_broken_fraction=0.5,
    )
    assert main(["train", str(cfg)]) == 0
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert line["skipped_videos"] >= 1
    assert any(name in caplog.text for name in ("empty.mp4", "text.mp4", "missing.mp4", "truncated.mp4"))


def test_mostly_broken_data_stops_with_a_clear_message(motion, tmp_path, capsys):
    root = tmp_path / "junk"
    root.mkdir()
    for i in range(16):
        (root / f"v{i}.mp4").write_text("junk")
    listing = tmp_path / "train.txt"
    listing.write_text("".join(f"v{i}.mp4 {i % 2}\n" for i in range(16)))
    cfg = write_config(
        tmp_path / "cfg.yaml",
        motion,
        tmp_path / "run",
        data__root=str(root),
        data__train_list=str(listing),
        data__val_list=None,
    )
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "could not be decoded" in err and len(err.strip().splitlines()) == 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(motion, tmp_path, capsys, monkeypatch):
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run", train__epochs=2)
    import zeroi2v.train as train_mod

    real_ce = train_mod.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):  # finite for the first epoch, NaN afterwards
        calls["n"] += 1
        loss = real_ce(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 4 else loss

    monkeypatch.setattr(train_mod.F, "cross_entropy", poisoned)
    assert main(["train", str(cfg)]) == 2
    assert "non-finite loss" in capsys.readouterr().err
    pointer = json.loads((tmp_path / "run" / "checkpoint" / "last.json").read_text())
    state = final_state(tmp_path / "run", pointer)
    assert all(torch.isfinite(v).all() for v in state.values())


def final_state(run, pointer):
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoint" / pointer["model"]))


def test_failed_write_leaves_previous_checkpoint_loadable(motion, tmp_path, capsys, monkeypatch):
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run", train__epochs=2)
    import zeroi2v.train as train_mod

    real_save = torch.save
    saves = {"n": 0}

    def disk_full(obj, f, *args, **kwargs):  # the second checkpoint's state file hits a full disk
        saves["n"] += 1
        if saves["n"] == 2:
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(train_mod.torch, "save", disk_full)
    assert main(["train", str(cfg)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    ckpt = tmp_path / "run" / "checkpoint"
    pointer = json.loads((ckpt / "last.json").read_text())
    assert pointer["state"].startswith("state-e0001")  # still the first epoch's checkpoint
    resume = torch.load(ckpt / pointer["state"], weights_only=True)
    assert resume["epoch"] == 1
    assert not [p for p in ckpt.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind
    monkeypatch.undo()
    assert main(["train", str(cfg)]) == 0  # and the run resumes from it
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_stop_after_an_epochs_last_step_resumes_exactly(motion, tmp_path, monkeypatch):
    # SIGTERM during the last step of epoch 2: the checkpoint holds a finished step loop but an unfinished
    # epoch (no validation, no metrics yet); the resume must do only the epoch's end (it crashed before)
    assert main(["train", str(write_config(tmp_path / "ref.yaml", motion, tmp_path / "ref", train__epochs=3))]) == 0
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run", train__epochs=3)
    import zeroi2v.train as train_mod

    real_factor = train_mod.lr_factor

    def signal_at_last_step_of_epoch_2(step, steps_per_epoch, t):
        if step == 2 * steps_per_epoch - 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler turns it into a checkpoint after this step
        return real_factor(step, steps_per_epoch, t)

    monkeypatch.setattr(train_mod, "lr_factor", signal_at_last_step_of_epoch_2)
    assert main(["train", str(cfg)]) == 143
    monkeypatch.undo()
    resume = torch.load(
        tmp_path
        / "run"
        / "checkpoint"
        / json.loads((tmp_path / "run" / "checkpoint" / "last.json").read_text())["state"],
        weights_only=True,
    )
    assert resume["epoch"] == 1 and resume["step"] > 0  # epoch 2's step loop done, its end not
    assert main(["train", str(cfg)]) == 0
    assert max_diff(final_weights(tmp_path / "ref"), final_weights(tmp_path / "run")) <= 1e-5
    ref, run = (
        [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("ref", "run")
    )
    assert [m["epoch"] for m in run] == [1, 2, 3]
    assert [(m["lr"], round(m["train_loss"], 5)) for m in run] == [(m["lr"], round(m["train_loss"], 5)) for m in ref]


def test_stop_during_an_evaluation_keeps_the_epochs_steps_and_resumes_exactly(motion, tmp_path, monkeypatch, capsys):
    # SIGTERM while epoch 2 is evaluated: the evaluation stops at its next batch and the checkpoint keeps
    # epoch 2's steps; the resume only evaluates. (The signal used to wait for the whole evaluation:
    # minutes on a large validation set, longer than a scheduler waits before SIGKILL.)
    assert main(["train", str(write_config(tmp_path / "ref.yaml", motion, tmp_path / "ref", train__epochs=3))]) == 0
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run", train__epochs=3)
    import zeroi2v.train as train_mod

    real_evaluate, calls = train_mod.evaluate_dataset, []

    def signal_in_the_evaluation_of_epoch_2(*args, **kwargs):
        calls.append(len(calls) + 1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler: the evaluation stops at its next batch
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate_dataset", signal_in_the_evaluation_of_epoch_2)
    capsys.readouterr()
    assert main(["train", str(cfg)]) == 143
    assert "before its evaluation" in capsys.readouterr().out
    monkeypatch.undo()
    resume = torch.load(
        tmp_path
        / "run"
        / "checkpoint"
        / json.loads((tmp_path / "run" / "checkpoint" / "last.json").read_text())["state"],
        weights_only=True,
    )
    assert resume["epoch"] == 1 and resume["step"] > 0  # epoch 2's steps kept, its evaluation not done
    assert main(["train", str(cfg)]) == 0
    assert max_diff(final_weights(tmp_path / "ref"), final_weights(tmp_path / "run")) <= 1e-5
    ref, run = (
        [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("ref", "run")
    )
    drop = lambda m: {k: v for k, v in m.items() if k != "epoch_seconds"}  # noqa: E731
    assert [drop(m) for m in run] == [drop(m) for m in ref]


CTRL_C_IN_AN_IMPORT = """
import importlib.abc, os, signal, sys, time

class CtrlCWhileImportingTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            try:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while torch/torchvision load...
                time.sleep(0.2)
            except:  # ...inside a library's bare except (or C++ code): lost, or an abort
                pass
        return None

sys.meta_path.insert(0, CtrlCWhileImportingTorchvision())
from zeroi2v.cli import main
sys.exit(main(["merge", sys.argv[1], sys.argv[2]]))
"""


def test_ctrl_c_while_torch_and_torchvision_load_still_interrupts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_IN_AN_IMPORT, str(tmp_path / "none"), str(tmp_path / "out")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 130 and result.stderr.strip() == "zeroi2v: interrupted", result.stderr


def test_sigkill_at_random_moments_then_resume_is_exact(motion, tmp_path):
    cfg = write_config(tmp_path / "ref.yaml", motion, tmp_path / "ref", train__epochs=3)
    assert run_cli("train", str(cfg)).returncode == 0
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run", train__epochs=3)
    rng = random.Random(0)
    for _ in range(3):  # kill at random points (during training, validation or a checkpoint write)
        proc = subprocess.Popen(
            [sys.executable, "-m", "zeroi2v", "train", str(cfg)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(4.0, 9.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    result = run_cli("train", str(cfg))
    assert result.returncode == 0, result.stderr
    diff = max_diff(final_weights(tmp_path / "ref"), final_weights(tmp_path / "run"))
    print(f"3 random SIGKILLs + resume vs uninterrupted: max abs weight difference {diff:.2e}")
    assert diff <= 1e-5
    assert [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_stale_lock_of_a_dead_run_is_taken_over(motion, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run", train__epochs=1)
    (tmp_path / "run").mkdir()
    import socket

    (tmp_path / "run" / ".lock").write_text(f"{socket.gethostname()}:999999")  # no such process
    assert main(["train", str(cfg)]) == 0
    assert not (tmp_path / "run" / ".lock").exists()


def test_changed_config_on_unfinished_run_is_refused(motion, tmp_path, capsys):
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run", train__epochs=1)
    assert main(["train", str(cfg)]) == 0
    assert main(["train", str(cfg), "--set", "train.lr=0.5", "train.epochs=2"]) == 2
    assert "different config" in capsys.readouterr().err
    _ = wait_for


def test_damaged_resume_state_is_a_one_line_refusal(motion, tmp_path, capsys):
    """Checkpoints are written atomically, so only outside damage can break one: say so, never a traceback."""
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run", train__epochs=1)
    assert main(["train", str(cfg)]) == 0
    for state in (tmp_path / "run" / "checkpoint").glob("state-*.pt"):
        state.write_bytes(state.read_bytes()[:200])
    capsys.readouterr()
    assert main(["train", str(cfg)]) == 2  # rerunning reads the checkpoint first
    err = capsys.readouterr().err
    assert "cannot resume" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["config", "classes"])
def test_text_files_that_are_not_utf8_are_one_line_errors(motion, tmp_path, capsys, where):
    if where == "config":
        cfg = tmp_path / "latin1.yaml"
        cfg.write_bytes("model:\n  backbone: vit_tiny_patch16_224  # r\xe9sum\xe9\n".encode("latin-1"))
    else:
        (tmp_path / "list").mkdir()
        (tmp_path / "list" / "train.txt").write_text(Path(motion["train_list"]).read_text())
        (tmp_path / "list" / "classes.txt").write_bytes("caf\xe9\n".encode("latin-1") * 4)
        cfg = write_config(
            tmp_path / "cfg.yaml", motion, tmp_path / "run", data__train_list=str(tmp_path / "list" / "train.txt")
        )
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "not a UTF-8" in err and len(err.strip().splitlines()) == 1
