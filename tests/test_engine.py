"""Training engine end to end on generated videos: train, eval, merge, predict, export; exact resume
after SIGKILL and SIGTERM; 2-process torchrun (gloo); frame order reaching the model; CLI errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ENV, REPO, final_weights, junk_videos, max_diff, run_cli, wait_for, write_config
from zeroi2v.cli import main
from zeroi2v.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")
REFERENCE = {"train__epochs": 5, "train__batch_size": 4}  # 12 steps per epoch; learns the order task (~1.0)


@pytest.fixture(scope="module")
def reference_run(ramps, tmp_path_factory):
    """An uninterrupted run: the yardstick for resume and DDP."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = write_config(tmp / "cfg.yaml", ramps, tmp / "run", **REFERENCE)
    result = run_cli("train", str(cfg))  # a subprocess like the runs it is compared with (same threads)
    assert result.returncode == 0, result.stderr
    return tmp / "run"


def test_train_eval_merge_predict_export(reference_run, ramps, tmp_path, capsys):
    run = reference_run
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3, 4, 5]
    assert {"train_loss", "lr", "val_top1", "skipped_videos"} <= lines[-1].keys()
    for name in ("config.yaml", "model.safetensors", "model.json", "classes.txt", "training_curves.png"):
        assert (run / name).is_file(), name
    assert main(["eval", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"top1", "top5", "mean_class_accuracy"} <= metrics.keys()
    assert all(0 <= metrics[k] <= 1 for k in ("top1", "top5", "mean_class_accuracy"))
    assert metrics["num_videos"] == 20 and (run / "confusion_matrix.png").is_file()
    print(f"order task (chance 0.5): val top-1 {metrics['top1']:.2f}")
    assert metrics["top1"] >= 0.8  # the order of frames reached the model: sampling, batching, transforms
    bare = tmp_path / "bare"  # a model directory without config.yaml: data settings come from --set
    bare.mkdir()
    for name in ("model.json", "model.safetensors", "classes.txt"):
        (bare / name).write_bytes((run / name).read_bytes())
    assert (
        main(
            [
                "eval",
                str(bare),
                "--set",
                f"data.root={ramps['root']}",
                f"data.val_list={ramps['val_list']}",
                "data.sampling=uniform",
                "data.test_clips=2",
                "train.num_workers=0",
            ]
        )
        == 0
    )
    assert json.loads((bare / "metrics.json").read_text())["top1"] == metrics["top1"]
    assert main(["merge", str(run), str(tmp_path / "merged")]) == 0
    out = capsys.readouterr().out
    assert "verified on a real validation clip: max abs error" in out
    merged_metrics = tmp_path / "merged"
    assert main(["eval", str(merged_metrics)]) == 0
    assert json.loads((merged_metrics / "metrics.json").read_text())["top1"] == metrics["top1"]
    videos = [
        str(Path(ramps["root"]) / line.split()[0]) for line in Path(ramps["val_list"]).read_text().splitlines()[:3]
    ]
    capsys.readouterr()
    assert main(["predict", str(run), *videos, "--topk", "2"]) == 0
    unmerged_out = capsys.readouterr().out
    assert main(["predict", str(tmp_path / "merged"), *videos, "--topk", "2"]) == 0
    merged_out = capsys.readouterr().out
    assert unmerged_out == merged_out and "brightening" in unmerged_out
    folder = tmp_path / "to_predict"  # a folder stands for the videos under it, at any depth, in sorted order
    (folder / "more").mkdir(parents=True)
    shutil.copy(videos[0], folder / "b.mp4")
    shutil.copy(videos[1], folder / "more" / "a.mp4")
    (folder / "notes.txt").write_text("not a video")
    assert main(["predict", str(run), str(folder), "--topk", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [str(folder / "b.mp4"), str(folder / "more" / "a.mp4")]
    assert [line.split(":", 1)[1] for line in lines] == [
        line.split(":", 1)[1] for line in unmerged_out.splitlines()[:2]
    ]
    assert main(["export", str(tmp_path / "merged"), str(tmp_path / "m.onnx")]) == 0


def test_without_temporal_modelling_the_order_task_is_at_chance(reference_run, ramps, tmp_path):
    """Same run with no temporal heads and no temporal embedding (documented keys only): frames are
    then pooled without order, so it cannot tell brightening from darkening."""
    cfg = write_config(
        tmp_path / "cfg.yaml",
        ramps,
        tmp_path / "run",
        **REFERENCE,
        model__head_offsets=[],
        model__temporal_embedding=False,
    )
    assert main(["train", str(cfg)]) == 0
    without = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["val_top1"]
    with_stdha = json.loads((reference_run / "metrics.jsonl").read_text().splitlines()[-1])["val_top1"]
    print(f"order task: STDHA + temporal embedding {with_stdha:.2f}, neither {without:.2f}")
    assert without <= 0.7 and with_stdha - without >= 0.2


def test_resume_after_sigkill_is_exact(reference_run, ramps, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", ramps, tmp_path / "run", **REFERENCE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeroi2v", "train", str(cfg)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert metrics.read_text().count("\n") < 5
    result = run_cli("train", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5]
    diff = max_diff(final_weights(reference_run), final_weights(tmp_path / "run"))
    print(f"SIGKILL + resume vs uninterrupted: max abs weight difference {diff:.2e}")
    assert diff <= 1e-5


def test_sigterm_mid_epoch_checkpoints_and_resumes_exactly(reference_run, ramps, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", ramps, tmp_path / "run", **REFERENCE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeroi2v", "train", str(cfg)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pointer = tmp_path / "run" / "checkpoint" / "last.json"
    assert wait_for(pointer.is_file)  # first epoch done; now interrupt inside the second
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM: checkpoint saved" in out and "Traceback" not in err
    result = run_cli("train", str(cfg))
    assert result.returncode == 0, result.stderr
    diff = max_diff(final_weights(reference_run), final_weights(tmp_path / "run"))
    print(f"SIGTERM + resume vs uninterrupted: max abs weight difference {diff:.2e}")
    assert diff <= 1e-5
    ref_lines = (reference_run / "metrics.jsonl").read_text().splitlines()
    new_lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    drop = lambda line: {k: v for k, v in json.loads(line).items() if k != "epoch_seconds"}  # noqa: E731
    assert [drop(x) for x in ref_lines] == [drop(x) for x in new_lines]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_whole_process_group_with_workers_checkpoints(ramps, tmp_path, signum):
    """Preemption (SLURM, `timeout`) and Ctrl-C in a terminal signal every process of the group,
    DataLoader workers included: the run still checkpoints and exits cleanly. Without the fix, SIGTERM
    made torch raise "DataLoader worker ... is killed by signal" in the main process (a traceback, exit 1,
    no checkpoint); SIGINT is here so that ignoring it in the workers keeps working."""
    cfg = write_config(tmp_path / "cfg.yaml", ramps, tmp_path / "run", **REFERENCE, train__num_workers=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeroi2v", "train", str(cfg)],
        env=ENV,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pointer = tmp_path / "run" / "checkpoint" / "last.json"
    assert wait_for(pointer.is_file)  # first epoch done; now signal the group inside the second
    time.sleep(0.5)
    os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == (143 if signum == signal.SIGTERM else 130), err[-2000:]
    assert f"{name}: checkpoint saved" in out and "Traceback" not in err, err[-2000:]


def test_a_process_that_leaves_a_loader_open_still_exits():
    """Python's exit terminates daemonic DataLoader workers with SIGTERM and waits for them: the workers'
    SIGTERM handling (worker_init) must not make that wait forever (ignoring SIGTERM did)."""
    script = (
        "import torch\nfrom zeroi2v.data import worker_init\n"
        "data = torch.utils.data.TensorDataset(torch.arange(100.0))\n"
        "it = iter(torch.utils.data.DataLoader(data, batch_size=2, num_workers=2, worker_init_fn=worker_init))\n"
        "next(it)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_torchrun_two_processes_match_single_process(ramps, tmp_path):
    """Same global batch on 1 and 2 processes (gloo): the same run up to float rounding, which Adam
    amplifies over steps, so this compares a short run (2 epochs, 12 steps)."""
    runs = {}
    for name, launcher in (
        ("single", []),
        ("ddp", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]),
    ):
        cfg = write_config(tmp_path / f"{name}.yaml", ramps, tmp_path / name, train__epochs=2, train__lr=3.0e-4)
        result = subprocess.run(
            [sys.executable, *launcher, "-m", "zeroi2v", "train", str(cfg)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in runs["ddp"]] == [1, 2]  # one line per epoch, written by rank 0 only
    assert runs["ddp"][-1]["val_num_videos"] == 20  # sharded eval: every video exactly once
    assert abs(runs["ddp"][-1]["train_loss"] - runs["single"][-1]["train_loss"]) < 1e-4  # reduced over ranks
    diff = max_diff(final_weights(tmp_path / "single"), final_weights(tmp_path / "ddp"))
    print(f"2-process DDP vs 1 process at the same global batch: max abs weight difference {diff:.2e}")
    assert diff <= 1e-4


SIGNAL_ONE_RANK_IN_EPOCH_2_EVALUATION = """
import os, signal, sys
import zeroi2v.train as train_mod
from zeroi2v.cli import main

real_evaluate, calls = train_mod.evaluate_dataset, []

def evaluate(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2 and os.environ["RANK"] == "1":  # a signal that reached one rank only, mid-evaluation
        os.kill(os.getpid(), signal.SIGTERM)
    return real_evaluate(*args, **kwargs)

train_mod.evaluate_dataset = evaluate
sys.exit(main(["train", sys.argv[1]]))
"""


def test_torchrun_signal_during_an_evaluation_stops_every_rank_there_and_resumes_exactly(ramps, tmp_path):
    """Under torchrun a signal during training's evaluation stops it at the next batch on every rank (they
    agree per batch) and keeps the epoch's steps, as with one process; without the agreement, DDP runs
    finished the whole evaluation first (past a scheduler's grace before SIGKILL on a large validation set).
    The resumed run, metrics included (the interrupted epoch's loss sums come from both ranks), equals an
    uninterrupted one."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ref = write_config(tmp_path / "ref.yaml", ramps, tmp_path / "ref", train__epochs=3)
    result = subprocess.run(
        [*torchrun, "-m", "zeroi2v", "train", str(ref)], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = write_config(tmp_path / "cfg.yaml", ramps, tmp_path / "run", train__epochs=3)
    script = tmp_path / "signal_rank_1.py"
    script.write_text(SIGNAL_ONE_RANK_IN_EPOCH_2_EVALUATION)
    result = subprocess.run([*torchrun, str(script), str(cfg)], env=ENV, capture_output=True, text=True, timeout=600)
    assert "before its evaluation" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
    pointer = json.loads((tmp_path / "run" / "checkpoint" / "last.json").read_text())
    state = torch.load(tmp_path / "run" / "checkpoint" / pointer["state"], weights_only=True)
    assert state["epoch"] == 1 and state["step"] > 0  # epoch 2's steps kept, its evaluation not done
    result = subprocess.run(
        [*torchrun, "-m", "zeroi2v", "train", str(cfg)], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_diff(final_weights(tmp_path / "ref"), final_weights(tmp_path / "run")) <= 1e-5
    ref_lines, run_lines = (
        [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("ref", "run")
    )
    drop = lambda m: {k: v for k, v in m.items() if k != "epoch_seconds"}  # noqa: E731
    assert [drop(m) for m in run_lines] == [drop(m) for m in ref_lines]


@pytest.mark.parametrize("method", ["aim", "st_adapter", "joint"])
def test_a_peer_run_reruns_as_finished_and_predicts_evaluates_exports(method, ramps, tmp_path, capsys):
    """A peer is never a 'merged model': its finished run is a run; every verb works on it unmerged."""
    cfg = write_config(tmp_path / "cfg.yaml", ramps, tmp_path / "run", train__epochs=1, model__method=method)
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "run"
    assert json.loads((run / "model.json").read_text())["merged"] is False
    capsys.readouterr()
    assert main(["train", str(cfg)]) == 0
    assert "already finished" in capsys.readouterr().out
    assert main(["eval", str(run)]) == 0
    video = str(Path(ramps["root"]) / Path(ramps["val_list"]).read_text().split()[0])
    assert main(["predict", str(run), video, "--topk", "2"]) == 0
    assert main(["export", str(run), str(tmp_path / "m.onnx")]) == 0
    assert "max abs error vs PyTorch" in capsys.readouterr().out
    assert main(["merge", str(run), str(tmp_path / "merged")]) == 2
    assert "cannot be merged" in capsys.readouterr().err


def test_second_run_on_same_output_is_refused(ramps, tmp_path, capsys):
    cfg = write_config(tmp_path / "cfg.yaml", ramps, tmp_path / "run", train__epochs=30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeroi2v", "train", str(cfg)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for((tmp_path / "run" / ".lock").is_file)
        assert main(["train", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert "in use by another run" in err and len(err.strip().splitlines()) == 1
    finally:
        proc.kill()
        proc.wait()


def test_every_shipped_config_is_valid():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert len(configs) >= 18
    for path in configs:
        cfg = load_config(path)
        if path.stem == "demo":  # the small-data recipe: the user brings the data, the backbone is shipped
            assert cfg.model.pretrained == "builtin:demo_vit" and cfg.data.train_list is None
            continue
        assert cfg.model.pretrained and cfg.data.train_list, path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.epoch=3"], "did you mean 'train.epochs'"),
        (["--set", "model.head_offsets=[-9]"], "must be < model.num_frames"),
        (["--set", "train.epochs=two"], "expected int"),
        (["--set", "data.img_size=30"], "not a multiple of the patch size"),
        (["--set", "data.test_crops=2"], "must be one of"),
        (["--set", "data.train_list=/no/such/list.txt"], "annotation file not found: /no/such/list.txt"),
        (["--set", "model.backbone=resnet18"], "not a timm VisionTransformer"),
        (["--set", "model.pretrained=/no/weights.pth"], "weights file not found"),
        (["--set", "model.num_classes=1"], "model.num_classes=1 but the data names 2 classes"),
        (["--set", "data.root=/no/such/root"], "data.root not found: /no/such/root"),
        (["--set", f"data.root={__file__}"], f"data.root {__file__} is a file, not a folder"),
        (["--set", "train.accum_steps=3"], "train.batch_size=8 (global, in clips) must be a multiple of processes"),
        (["--set", "train.batch_size=1000"], "fewer than one batch of 1000; set train.batch_size to at most"),
    ],
)
def test_user_mistakes_are_one_line_errors(ramps, tmp_path, args, message, capsys):
    cfg = write_config(tmp_path / "cfg.yaml", ramps, tmp_path / "run")
    assert main(["train", str(cfg), *args]) == 2  # in-process: the CLI catches it (a subprocess test is below)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["project", "data_root", "merged_model"])
def test_train_never_writes_over_a_folder_that_is_not_a_run(ramps, tmp_path, kind, capsys):
    out = tmp_path / kind
    out.mkdir()
    mine = {
        "project": {"config.yaml": "# my own notes\n"},  # output: . in a project with its own config.yaml
        "data_root": {"classes.txt": "0 up\n1 down\n", "train.txt": "a.mp4 0\n"},
        "merged_model": {"model.json": '{"format": "zeroi2v", "merged": true}', "model.safetensors": "x"},
    }[kind]
    for name, text in mine.items():
        (out / name).write_text(text)
    cfg = write_config(tmp_path / "cfg.yaml", ramps, out)
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert ("merged model" if kind == "merged_model" else "is not a zeroi2v run") in err and "Traceback" not in err
    assert {p.name: p.read_text() for p in out.iterdir()} == mine  # untouched, nothing added


def test_cli_errors_for_paths_and_help(tmp_path, capsys):
    for args, message in (
        (["eval", str(tmp_path)], "not a zeroi2v model directory"),
        (["merge", str(tmp_path / "none"), str(tmp_path / "out")], "not a directory"),
        (["predict", str(tmp_path)], "the following arguments are required: videos"),
    ):
        try:
            code = main(args)
        except SystemExit as e:  # argparse usage errors
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["train", str(bad)]) == 2 and "invalid YAML" in capsys.readouterr().err
    for verb in ("train", "eval", "merge", "export", "predict", "convert-official"):
        with pytest.raises(SystemExit) as info:
            main([verb, "--help"])
        assert info.value.code == 0 and "usage: zeroi2v " + verb in capsys.readouterr().out
    # the real program: exit code 2 and one line; --debug shows the traceback instead
    result = run_cli("train", str(tmp_path / "none.yaml"))
    assert (
        result.returncode == 2 and result.stderr == f"zeroi2v: error: config file not found: {tmp_path / 'none.yaml'}\n"
    )
    result = run_cli("--debug", "eval", str(tmp_path))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_errors_raised_in_dataloader_workers_are_one_line(ramps, tmp_path, capsys):
    """A UserError in a worker process comes back wrapped in its traceback: the CLI still prints one line."""
    train_list = junk_videos(tmp_path / "junk", 16)
    cfg = write_config(
        tmp_path / "cfg.yaml",
        ramps,
        tmp_path / "run",
        data__root=str(train_list.parent),
        data__train_list=str(train_list),
        data__val_list=None,
        train__num_workers=2,
    )
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zeroi2v: error: ") and "could not be decoded" in err[0]


def test_train_state_round_trips_through_a_checkpoint():
    """What a checkpoint holds reads back as the same state; an interrupted epoch's sums go to rank 0 only."""
    from zeroi2v.train import TrainState, plural

    state = TrainState(epoch=2, step=5, history=[{"epoch": 1}, {"epoch": 2}], best_top1=0.5, bad_steps=1)
    state.sums["loss"] = 3.0
    saved = torch.load(_saved(state.to_checkpoint()), weights_only=True)
    assert TrainState.from_checkpoint(saved, rank=0) == state
    assert TrainState.from_checkpoint(saved, rank=1).sums["loss"] == 0.0
    assert plural(1, "epoch") == "1 epoch" and plural(3, "epoch") == "3 epochs"


def _saved(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_a_worker_killed_by_the_flagged_signal_is_the_same_stop():
    """killpg can reach a just-started DataLoader worker before worker_init sets its handler (torch then
    raises in the main process): with the signal flagged that is the stop, not a traceback."""
    from zeroi2v.train import SignalFlag

    def killed():
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")

    stop = SignalFlag()
    with pytest.raises(RuntimeError):  # no signal: a worker's death is an error
        stop.stopped(killed)
    stop.signum = signal.SIGTERM
    assert stop.stopped(killed) and stop.stopped(lambda: False) is False
    with pytest.raises(RuntimeError, match="other"):
        stop.stopped(lambda: (_ for _ in ()).throw(RuntimeError("other")))
