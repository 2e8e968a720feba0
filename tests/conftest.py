"""Shared test helpers: tiny generated datasets, run configs, the CLI in a subprocess."""

import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CI": "true", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


SLOW = (  # node ids (substrings) of the slow tier: subprocesses, torchrun, the demo
    "test_engine.py::test_train_eval_merge_predict_export",
    "test_engine.py::test_without_temporal_modelling",
    "test_engine.py::test_resume_after_sigkill",
    "test_engine.py::test_sigterm_mid_epoch",
    "test_engine.py::test_signal_to_the_whole_process_group",
    "test_engine.py::test_a_process_that_leaves_a_loader_open",
    "test_engine.py::test_torchrun",
    "test_engine.py::test_cli_errors_for_paths_and_help",
    "test_demo.py::test_demo_",
    "test_demo.py::test_ctrl_c",
    "test_demo.py::test_report_and_artifacts",
    "test_demo.py::test_summary_numbers",
    "test_demo.py::test_rerun_commands_work",
    "test_reliability.py",
    "test_bench.py::test_bench_smoke_as_a_command",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(s in item.nodeid for s in SLOW):
            item.add_marker(pytest.mark.slow)


def load_benchmark(name: str):
    """The study `benchmarks.<name>` (run as `python -m benchmarks.<name>`)."""
    import importlib

    return importlib.import_module(f"benchmarks.{name}")


def make_ramp_dataset(
    root: Path, train_per_class: int = 24, val_per_class: int = 10, frames: int = 8, size: int = 32, seed: int = 0
) -> dict:
    """Real H.264 videos of a tinted, noisy picture that brightens (class 0) or darkens (class 1).

    A darkening video is a brightening one played backwards, so the classes differ only in frame
    order: a model without temporal heads or temporal embedding is at chance (50%), and any shuffle
    of frames in the pipeline would make the task impossible. Small enough to learn from scratch in
    a few CPU seconds.
    """
    rng = np.random.default_rng(seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        lines = []
        for i in range(n):
            for label in (0, 1):
                low = rng.uniform(20, 120)
                levels = np.linspace(low, low + rng.uniform(80, 120), frames)[:: 1 if label == 0 else -1]
                tint = rng.uniform(0.5, 1.0, 3)
                noise = rng.normal(0, 8, (frames, size, size, 3))
                video = np.clip(levels[:, None, None, None] * tint + noise, 0, 255).astype(np.uint8)
                rel = f"videos/{split}_{i:03d}_{label}.mp4"
                with av.open(str(root / rel), "w") as container:
                    stream = container.add_stream("libx264", rate=8)
                    stream.width = stream.height = size
                    stream.pix_fmt, stream.options = "yuv420p", {"crf": "10"}
                    for frame in video:
                        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                    container.mux(stream.encode())
                lines.append(f"{rel} {label}\n")
        (root / f"{split}.txt").write_text("".join(lines))
    (root / "classes.txt").write_text("brightening\ndarkening\n")
    return {"root": str(root), "train_list": str(root / "train.txt"), "val_list": str(root / "val.txt")}


def junk_videos(directory: Path, count: int, list_name: str = "train.txt", absolute: bool = False) -> Path:
    """`count` files named .mp4 that are not videos, and a list file of them (labels alternate 0/1)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (directory / f"v{i}.mp4").write_text("not a video")
    prefix = f"{directory}/" if absolute else ""
    (directory / list_name).write_text("".join(f"{prefix}v{i}.mp4 {i % 2}\n" for i in range(count)))
    return directory / list_name


@pytest.fixture(scope="module")
def one_thread():
    """In-process runs use one thread, like the subprocesses (OMP_NUM_THREADS=1): on a busy 2-core
    machine, oversubscribed intra-op threads make tiny models many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ramps(tmp_path_factory):
    return make_ramp_dataset(tmp_path_factory.mktemp("ramps"))


def write_config(path, data, output, **changes):
    cfg = {
        "output": str(output),
        "model": {
            "backbone": "vit_tiny_patch16_224",
            "num_frames": 4,
            "head_offsets": [-1, 1],
            "head_dropout": 0.0,
            "freeze": False,
            "timm_kwargs": {"patch_size": 8, "depth": 2, "num_heads": 3, "embed_dim": 96},
        },
        "data": {
            "root": data["root"],
            "train_list": data["train_list"],
            "val_list": data["val_list"],
            "sampling": "uniform",
            "img_size": 32,
            "test_clips": 2,
            "rand_augment": False,
            "flip": False,
            "crop_scale": [0.7, 1.0],
        },
        "train": {"epochs": 3, "batch_size": 8, "lr": 3.0e-3, "warmup_epochs": 0.5, "num_workers": 0},
    }
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        cfg[section][key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "zeroi2v", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=kwargs.get("timeout", 300),
    )


def final_weights(directory):
    return load_file(str(Path(directory) / "model.safetensors"))


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def wait_for(predicate, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        if predicate():
            return True
        time.sleep(0.1)
    return False
