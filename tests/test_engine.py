"""Training engine end to end, on generated motion videos: train, eval, merge, predict, export;
exact resume after SIGKILL and SIGTERM; 2-process torchrun (gloo); configs and CLI errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from zeroi2v.cli import main
from zeroi2v.config import load_config
from zeroi2v.data.synthetic import make_motion_dataset

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CI": "true", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    info = make_motion_dataset(root, train_per_class=12, val_per_class=5, num_frames=8, size=32, num_classes=4,
                               progress=False)
    return info


def write_config(path, motion, output, **changes):
    cfg = {
        "output": str(output),
        "model": {"backbone": "vit_tiny_patch16_224", "num_frames": 4, "head_offsets": [-1, 1], "head_dropout": 0.0,
                  "freeze": False, "timm_kwargs": {"patch_size": 8, "depth": 2, "num_heads": 3, "embed_dim": 96}},
        "data": {"root": motion["root"], "train_list": motion["train_list"], "val_list": motion["val_list"],
                 "sampling": "uniform", "img_size": 32, "test_clips": 2, "rand_augment": False, "flip": False,
                 "crop_scale": [0.7, 1.0]},
        "train": {"epochs": 3, "batch_size": 8, "lr": 1.0e-3, "warmup_epochs": 0.5, "num_workers": 0},
    }
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        cfg[section][key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "zeroi2v", *args], env=ENV, capture_output=True, text=True,
                          timeout=kwargs.get("timeout", 300))


def final_weights(directory):
    return load_file(str(Path(directory) / "model.safetensors"))


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference_run(motion, tmp_path_factory):
    """An uninterrupted run: the yardstick for resume and DDP."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = write_config(tmp / "cfg.yaml", motion, tmp / "run")
    result = run_cli("train", str(cfg))  # a subprocess like the runs it is compared with (same threads)
    assert result.returncode == 0, result.stderr
    return tmp / "run"


def test_train_eval_merge_predict_export(reference_run, motion, tmp_path, capsys):
    run = reference_run
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    assert {"train_loss", "lr", "val_top1", "skipped_videos"} <= lines[-1].keys()
    for name in ("config.yaml", "model.safetensors", "model.json", "classes.txt", "training_curves.png"):
        assert (run / name).is_file(), name
    assert main(["eval", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"top1", "top5", "mean_class_accuracy"} <= metrics.keys()
    assert all(0 <= metrics[k] <= 1 for k in ("top1", "top5", "mean_class_accuracy"))
    assert metrics["num_videos"] == 20 and (run / "confusion_matrix.png").is_file()
    assert main(["merge", str(run), str(tmp_path / "merged")]) == 0
    out = capsys.readouterr().out
    assert "verified on a real validation clip: max abs error" in out
    merged_metrics = tmp_path / "merged"
    assert main(["eval", str(merged_metrics)]) == 0
    assert json.loads((merged_metrics / "metrics.json").read_text())["top1"] == metrics["top1"]
    videos = [str(Path(motion["root"]) / line.split()[0]) for line in Path(motion["val_list"]).read_text().splitlines()[:3]]
    capsys.readouterr()
    assert main(["predict", str(run), *videos, "--topk", "2"]) == 0
    unmerged_out = capsys.readouterr().out
    assert main(["predict", str(tmp_path / "merged"), *videos, "--topk", "2"]) == 0
    merged_out = capsys.readouterr().out
    assert unmerged_out == merged_out and "moving" in unmerged_out
    assert main(["export", str(tmp_path / "merged"), str(tmp_path / "m.onnx")]) == 0


def wait_for(predicate, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_resume_after_sigkill_is_exact(reference_run, motion, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "zeroi2v", "train", str(cfg)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert metrics.read_text().count("\n") < 3
    result = run_cli("train", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == [1, 2, 3]
    diff = max_diff(final_weights(reference_run), final_weights(tmp_path / "run"))
    print(f"SIGKILL + resume vs uninterrupted: max abs weight difference {diff:.2e}")
    assert diff <= 1e-5


def test_sigterm_mid_epoch_checkpoints_and_resumes_exactly(reference_run, motion, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "zeroi2v", "train", str(cfg)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


def test_torchrun_two_processes_match_single_process(reference_run, motion, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "zeroi2v", "train", str(cfg)], env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    assert lines[-1]["val_num_videos"] == 20  # sharded eval: every video exactly once
    diff = max_diff(final_weights(reference_run), final_weights(tmp_path / "run"))
    print(f"2-process DDP vs 1 process at the same global batch: max abs weight difference {diff:.2e}")
    assert diff <= 1e-4


def test_second_run_on_same_output_is_refused(motion, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run", train__epochs=30)
    proc = subprocess.Popen([sys.executable, "-m", "zeroi2v", "train", str(cfg)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for((tmp_path / "run" / ".lock").is_file)
        result = run_cli("train", str(cfg))
        assert result.returncode == 2 and "in use by another run" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        proc.kill()
        proc.wait()


def test_every_shipped_config_is_valid():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert len(configs) >= 18
    for path in configs:
        cfg = load_config(path)
        assert cfg["model"]["pretrained"] and cfg["data"]["train_list"], path


@pytest.mark.parametrize("args, message", [
    (["--set", "train.epoch=3"], "did you mean 'train.epochs'"),
    (["--set", "model.head_offsets=[-9]"], "must be < model.num_frames"),
    (["--set", "train.epochs=two"], "expected int"),
    (["--set", "data.img_size=30"], "not a multiple of the patch size"),
    (["--set", "data.test_crops=2"], "must be one of"),
    (["--set", "data.train_list=/no/such/list.txt"], "annotation file not found: /no/such/list.txt"),
    (["--set", "model.backbone=resnet18"], "not a timm VisionTransformer"),
    (["--set", "model.pretrained=/no/weights.pth"], "weights file not found"),
    (["--set", "model.num_classes=2"], "out of range for 2 classes"),
])
def test_user_mistakes_are_one_line_errors(motion, tmp_path, args, message, capsys):
    cfg = write_config(tmp_path / "cfg.yaml", motion, tmp_path / "run")
    assert main(["train", str(cfg), *args]) == 2  # in-process: the CLI catches it (a subprocess test is below)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_errors_for_paths_and_help(tmp_path):
    for args, message in ((["train", str(tmp_path / "none.yaml")], "config file not found"),
                          (["eval", str(tmp_path)], "not a zeroi2v model directory"),
                          (["export", str(tmp_path), str(tmp_path / "x.onnx")], "not a zeroi2v model directory")):
        result = run_cli(*args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    result = run_cli("train", str(bad))
    assert result.returncode == 2 and "invalid YAML" in result.stderr
    for verb in ("train", "eval", "merge", "export", "predict", "convert-official"):
        assert run_cli(verb, "--help").returncode == 0
    result = run_cli("--debug", "eval", str(tmp_path))
    assert result.returncode != 0 and "Traceback" in result.stderr
