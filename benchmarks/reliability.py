"""Try every kind of mistake and fault through the real CLI and write what happened to docs/reliability.md.

    python benchmarks/reliability.py            # ~2 minutes on 2 CPU cores

Each scenario runs `python -m zeroi2v ...` in a subprocess on generated videos and records the exit
code, the first line the user sees, and whether a traceback leaked. The table is regenerated, never
typed by hand.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CI": "true", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "zeroi2v", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def first_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:150] if lines else ""


def main() -> int:
    from zeroi2v.data.synthetic import make_motion_dataset

    tmp = Path(tempfile.mkdtemp(prefix="zeroi2v_reliability_"))
    data = make_motion_dataset(tmp / "data", train_per_class=8, val_per_class=2, num_frames=8, size=32,
                               num_classes=4, progress=False)
    base = {"output": str(tmp / "run"),
            "model": {"backbone": "vit_tiny_patch16_224", "num_frames": 4, "head_dropout": 0.0, "freeze": False,
                      "timm_kwargs": {"patch_size": 8, "depth": 2, "num_heads": 3, "embed_dim": 96}},
            "data": {"root": data["root"], "train_list": data["train_list"], "val_list": data["val_list"],
                     "sampling": "uniform", "img_size": 32, "test_clips": 1, "rand_augment": False, "flip": False},
            "train": {"epochs": 3, "batch_size": 8, "lr": 1.0e-3, "warmup_epochs": 0.5, "num_workers": 0}}
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(base))

    # files for the scenarios
    (tmp / "bad_list.txt").write_text("train/a.mp4 0\ntrain/b.mp4\n")
    (tmp / "text.pth").write_text("not weights")
    good = Path(data["root"]) / Path(data["train_list"]).read_text().split()[0]
    (tmp / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    (tmp / "bad.yaml").write_text("model: [unclosed\n")
    (tmp / "empty_dir").mkdir()
    (tmp / "latin1.yaml").write_bytes("model:\n  backbone: vit_tiny_patch16_224  # r\xe9sum\xe9\n".encode("latin-1"))
    latin = tmp / "latin_list"
    latin.mkdir()
    (latin / "list.txt").write_text(Path(data["train_list"]).read_text())
    (latin / "classes.txt").write_bytes("caf\xe9\n".encode("latin-1") * 8)
    broken = Path(data["root"]) / "broken"
    broken.mkdir()
    (broken / "empty.mp4").write_bytes(b"")
    (broken / "text.mp4").write_text("hello\n")
    (broken / "truncated.mp4").write_bytes(good.read_bytes()[:300])
    with_broken = tmp / "with_broken.txt"
    with_broken.write_text(Path(data["train_list"]).read_text() + "broken/missing.mp4 0\nbroken/empty.mp4 1\n"
                           "broken/text.mp4 2\nbroken/truncated.mp4 3\n")
    junk = tmp / "junk"
    junk.mkdir()
    for i in range(8):
        (junk / f"v{i}.mp4").write_text("junk")
    (tmp / "junk.txt").write_text("".join(f"v{i}.mp4 {i % 2}\n" for i in range(8)))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'PWNED'}",))

    torch.save({"state_dict": {"x": torch.zeros(1)}, "meta": Evil()}, tmp / "evil.pth")

    rows = []

    def record(group, scenario, result, expectation, ok):
        rows.append((group, scenario, result.returncode if result else "-", first_line(result.stderr) if result else "",
                     "no" if not result or "Traceback" not in result.stderr else "YES", expectation, "pass" if ok else "FAIL"))

    user_errors = [
        ("unknown config key (typo)", ["train", cfg, "--set", "train.epoch=3"], "did you mean"),
        ("wrong value type", ["train", cfg, "--set", "train.epochs=two"], "expected int"),
        ("head offsets vs frames", ["train", cfg, "--set", "model.head_offsets=[-5]"], "must be <"),
        ("head offsets vs heads", ["train", cfg, "--set", "model.head_offsets=[1,1,1,1]"], "only 3 heads"),
        ("adapter ratio out of range", ["train", cfg, "--set", "model.adapter_ratio=-1"], "adapter_ratio"),
        ("image size vs patch size", ["train", cfg, "--set", "data.img_size=30"], "multiple of the patch"),
        ("invalid test views", ["train", cfg, "--set", "data.test_crops=2"], "must be one of"),
        ("config file missing", ["train", tmp / "nope.yaml"], "not found"),
        ("config is invalid YAML", ["train", tmp / "bad.yaml"], "invalid YAML"),
        ("list file missing", ["train", cfg, "--set", f"data.train_list={tmp / 'nope.txt'}"], "not found"),
        ("malformed list line", ["train", cfg, "--set", f"data.train_list={tmp / 'bad_list.txt'}"], "bad_list.txt:2"),
        ("label out of range", ["train", cfg, "--set", "model.num_classes=2"], "out of range"),
        ("data root missing (class folders)", ["train", cfg, "--set", "data.train_list=null", f"data.root={tmp / 'nowhere'}"], "not found"),
        ("not a ViT backbone", ["train", cfg, "--set", "model.backbone=resnet18"], "not a timm VisionTransformer"),
        ("weights file is text", ["train", cfg, "--set", f"model.pretrained={tmp / 'text.pth'}"], "cannot read"),
        ("weights file truncated", ["train", cfg, "--set", f"model.pretrained={tmp / 'truncated.safetensors'}"], "cannot read"),
        ("weights path is a directory", ["train", cfg, "--set", f"model.pretrained={tmp / 'empty_dir'}"], "is a directory"),
        ("config file not UTF-8", ["train", tmp / "latin1.yaml"], "not a UTF-8"),
        ("classes.txt not UTF-8", ["train", cfg, "--set", f"data.train_list={latin / 'list.txt'}"], "not a UTF-8"),
        ("backbone with non-standard attention", ["train", cfg, "--set", "model.backbone=vit_dwee_patch16_reg1_gap_256",
                                                  "model.timm_kwargs={depth: 1}"], "not timm's standard Attention"),
        ("not a model directory", ["eval", tmp / "empty_dir"], "not a zeroi2v model directory"),
        ("export of a non-model", ["export", tmp / "empty_dir", tmp / "x.onnx"], "not a zeroi2v model directory"),
        ("predict on a non-video file", None, "unreadable"),
    ]
    for name, args, expected in user_errors:
        if args is None:
            continue
        result = cli(*args)
        record("bad input", name, result, f"exit 2, one line containing '{expected}'",
               result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr
               and len(result.stderr.strip().splitlines()) == 1)

    # a pickle that would run code
    result = cli("train", cfg, "--set", f"model.pretrained={tmp / 'evil.pth'}", f"output={tmp / 'evil_run'}")
    record("safe loading", "weights pickle with code in it (os.system)", result, "refused or inert; the code never runs",
           not (tmp / "PWNED").exists() and "Traceback" not in result.stderr)

    # broken videos
    result = cli("train", cfg, "--set", f"data.train_list={with_broken}", f"output={tmp / 'broken_run'}",
                 "train.epochs=1", "data.max_broken_fraction=0.5")
    lines = (tmp / "broken_run" / "metrics.jsonl").read_text().splitlines() if result.returncode == 0 else []
    skipped = json.loads(lines[0])["skipped_videos"] if lines else None
    record("broken videos", "missing + empty + truncated + text-as-mp4 in the train list", result,
           f"trains; skipped and named once, counted in metrics.jsonl (skipped_videos={skipped})",
           result.returncode == 0 and skipped and "skipping unreadable video" in result.stderr)
    result = cli("train", cfg, "--set", f"data.root={junk}", f"data.train_list={tmp / 'junk.txt'}", "data.val_list=null",
                 f"output={tmp / 'junk_run'}")
    record("broken videos", "every video unreadable", result, "stops with one line, exit 2",
           result.returncode == 2 and "could not be decoded" in result.stderr)
    sample_video = Path(data["root"]) / Path(data["val_list"]).read_text().split()[0]

    # interruptions
    ref = cli("train", cfg, "--set", f"output={tmp / 'ref'}")
    out = tmp / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "zeroi2v", "train", str(cfg), "--set", f"output={out}"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").is_file():
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = cli("train", cfg, "--set", f"output={out}")
    diff = weight_diff(tmp / "ref", out) if result.returncode == 0 and ref.returncode == 0 else float("nan")
    record("interruption", "SIGKILL after epoch 1, same command again", result,
           f"resumes; final weights equal an uninterrupted run (max abs diff {diff:.1e})", diff <= 1e-5)
    out = tmp / "terminated"
    proc = subprocess.Popen([sys.executable, "-m", "zeroi2v", "train", str(cfg), "--set", f"output={out}"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while time.time() < deadline + 120 and not (out / "checkpoint" / "last.json").is_file():
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate()
    term = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    result = cli("train", cfg, "--set", f"output={out}")
    diff = weight_diff(tmp / "ref", out) if result.returncode == 0 else float("nan")
    record("interruption", "SIGTERM inside epoch 2 (preemption)", term,
           f"checkpoint at that step, exit 143; rerun resumes exactly (max abs diff {diff:.1e})",
           term.returncode == 143 and diff <= 1e-5)
    damaged = tmp / "damaged"  # a finished epoch's checkpoint whose resume state was then damaged
    proc = subprocess.Popen([sys.executable, "-m", "zeroi2v", "train", str(cfg), "--set", f"output={damaged}"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.time() < deadline + 240 and not (damaged / "metrics.jsonl").is_file():
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for state in (damaged / "checkpoint").glob("state-*.pt"):
        state.write_bytes(state.read_bytes()[:200])
    result = cli("train", cfg, "--set", f"output={damaged}")
    record("interruption", "resume state damaged after the kill (truncated state file)", result,
           "refuses to resume with one line naming the run, exit 2",
           result.returncode == 2 and "cannot resume" in result.stderr)
    out = tmp / "locked"
    proc = subprocess.Popen([sys.executable, "-m", "zeroi2v", "train", str(cfg), "--set", f"output={out}",
                             "train.epochs=50"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out / ".lock").is_file():
        time.sleep(0.1)
    result = cli("train", cfg, "--set", f"output={out}", "train.epochs=50")
    proc.kill()
    proc.wait()
    record("concurrency", "second run on the same output directory", result, "refused with one line, exit 2",
           result.returncode == 2 and "in use by another run" in result.stderr)
    result = cli("predict", tmp / "ref", tmp / "text.pth", sample_video)
    record("bad input", "predict on a non-video file among good ones", result,
           "names the bad file, predicts the others, exit 1", result.returncode == 1 and "unreadable" in result.stderr)

    header = ["group", "what was tried", "exit", "what the user sees (last stderr line)", "traceback", "expected", "result"]
    lines = ["# Reliability: what was tried and what happened", "",
             f"Generated by `python benchmarks/reliability.py` on {platform.platform()}, Python "
             f"{platform.python_version()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. Every row ran the real "
             "CLI in a subprocess on generated videos. The same behaviours are asserted in `tests/test_engine.py` and "
             "`tests/test_reliability.py` (plus a simulated full disk during a checkpoint write and non-finite losses, "
             "which need in-process fault injection).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    passed = sum(r[-1] == "pass" for r in rows)
    lines += ["", f"{passed} of {len(rows)} scenarios behaved as expected."]
    (REPO / "docs" / "reliability.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if passed == len(rows) else 1


def weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max((x[k] - y[k]).abs().max().item() for k in x)


if __name__ == "__main__":
    raise SystemExit(main())
