"""Try every kind of mistake and fault through the real CLI and write what happened to docs/reliability.md.

    python -m benchmarks.reliability            # a few minutes on 2 CPU cores

Each scenario runs `python -m zeroi2v ...` in a subprocess on generated videos and records the exit
code, the last line the user sees, and whether a traceback leaked. The table is regenerated, never
typed by hand. Most scenarios are data (a command and what must happen); the interruptions share one
helper, `interrupted_run` (start training, wait for a file, send a signal, run the same command again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CI": "true", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
ZEROI2V = [sys.executable, "-m", "zeroi2v"]


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*ZEROI2V, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:150] if lines else ""


# --- scenarios as data ----------------------------------------------------------------------------------
@dataclass
class Case:
    group: str
    name: str
    args: list
    expected: str
    check: Callable  # CompletedProcess -> bool, or (bool, a measured detail for the table)


def clean(r) -> bool:
    return "Traceback" not in r.stderr


def one_line(r, text="", code=2) -> bool:
    """Exit `code`, a single stderr line containing `text`, no traceback."""
    return r.returncode == code and text in r.stderr and clean(r) and len(r.stderr.strip().splitlines()) == 1


def refused(group, name, args, text, code=2, also=lambda r: True, more="") -> Case:
    return Case(
        group,
        name,
        args,
        f"exit {code}, one line containing '{text}'{more}",
        lambda r: one_line(r, text, code) and also(r),
    )


def stops(group, name, args, text, also=lambda r: True, more="") -> Case:
    """A run that stops once it sees the data: per-video skip notes, then one error line, exit 2."""
    return Case(
        group,
        name,
        args,
        f"exit 2, stops with one error line containing '{text}'{more}",
        lambda r: (
            r.returncode == 2
            and clean(r)
            and text in last_line(r.stderr)
            and last_line(r.stderr).startswith("zeroi2v: error:")
            and sum(x.startswith("zeroi2v: error:") for x in r.stderr.splitlines()) == 1
            and also(r)
        ),
    )


def bad_input_cases(fx) -> list[Case]:
    """Config and data mistakes, refused before training starts."""
    cfg, tmp = fx.cfg, fx.tmp
    return [
        refused("bad input", name, args, text)
        for name, args, text in [
            ("unknown config key (typo)", ["train", cfg, "--set", "train.epoch=3"], "did you mean"),
            ("wrong value type", ["train", cfg, "--set", "train.epochs=two"], "expected int"),
            ("head offsets vs frames", ["train", cfg, "--set", "model.head_offsets=[-5]"], "must be <"),
            ("head offsets vs heads", ["train", cfg, "--set", "model.head_offsets=[1,1,1,1]"], "only 3 heads"),
            ("adapter ratio out of range", ["train", cfg, "--set", "model.adapter_ratio=-1"], "adapter_ratio"),
            ("image size vs patch size", ["train", cfg, "--set", "data.img_size=30"], "multiple of the patch"),
            ("invalid test views", ["train", cfg, "--set", "data.test_crops=2"], "must be one of"),
            ("config file missing", ["train", tmp / "nope.yaml"], "not found"),
            ("config is invalid YAML", ["train", tmp / "bad.yaml"], "invalid YAML"),
            ("config is a folder (`train DIR`)", ["train", tmp / "empty_dir"], "is a directory"),
            ("list file missing", ["train", cfg, "--set", f"data.train_list={tmp / 'nope.txt'}"], "not found"),
            (
                "malformed list line",
                ["train", cfg, "--set", f"data.train_list={tmp / 'bad_list.txt'}"],
                "bad_list.txt:2",
            ),
            (
                "label out of range (list without classes.txt)",
                [
                    "train",
                    cfg,
                    "--set",
                    "model.num_classes=2",
                    f"data.train_list={fx.no_classes_list}",
                    "data.val_list=null",
                ],
                "out of range",
            ),
            (
                "model.num_classes vs classes.txt",
                ["train", cfg, "--set", "model.num_classes=2"],
                "the data names 4 classes",
            ),
            (
                "data root missing (class folders)",
                ["train", cfg, "--set", "data.train_list=null", f"data.root={tmp / 'nowhere'}"],
                "not found",
            ),
            ("not a ViT backbone", ["train", cfg, "--set", "model.backbone=resnet18"], "not a timm VisionTransformer"),
            ("weights file is text", ["train", cfg, "--set", f"model.pretrained={tmp / 'text.pth'}"], "cannot read"),
            (
                "weights file truncated",
                ["train", cfg, "--set", f"model.pretrained={tmp / 'truncated.safetensors'}"],
                "cannot read",
            ),
            (
                "weights path is a directory",
                ["train", cfg, "--set", f"model.pretrained={tmp / 'empty_dir'}"],
                "is a directory",
            ),
            ("config file not UTF-8", ["train", tmp / "latin1.yaml"], "not a UTF-8"),
            ("classes.txt not UTF-8", ["train", cfg, "--set", f"data.train_list={fx.latin_list}"], "not a UTF-8"),
            (
                "backbone with non-standard attention",
                ["train", cfg, "--set", "model.backbone=vit_dwee_patch16_reg1_gap_256", "model.timm_kwargs={depth: 1}"],
                "not timm's standard Attention",
            ),
            (
                "output is the data root (holds classes.txt)",
                ["train", cfg, "--set", f"output={fx.data_root}"],
                "inside the data",
            ),
            (
                "output is a project folder with its own config.yaml",
                ["train", cfg, "--set", f"output={tmp / 'project'}"],
                "is not a zeroi2v run",
            ),
            ("synth into a dataset's folder (its own train.txt)", ["synth", tmp / "dataset"], "did not write"),
            (
                "demo --out a project folder (its own report.md)",
                ["demo", "--tiny", "--out", tmp / "project_docs"],
                "that no demo wrote",
            ),
            (
                "bench --out a project's own docs/benchmarks.md",
                ["bench", "--tiny", "--out", tmp / "project_docs" / "benchmarks.md"],
                "not a file zeroi2v bench wrote",
            ),
            ("not a model directory", ["eval", tmp / "empty_dir"], "not a zeroi2v model directory"),
            ("export of a non-model", ["export", tmp / "empty_dir", tmp / "x.onnx"], "not a zeroi2v model directory"),
        ]
    ]


def training_cases(fx) -> list[Case]:
    """Runs that train (a little), or must stop with one line once they see the data."""
    cfg, tmp = fx.cfg, fx.tmp

    def metrics(run):
        path = tmp / run / "metrics.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []

    def broken_trains(r):
        skipped = metrics("broken_run")[0]["skipped_videos"] if metrics("broken_run") else None
        ok = r.returncode == 0 and bool(skipped) and "skipping unreadable video" in r.stderr
        return ok, f"skipped_videos={skipped}"

    def trees_validate(r):
        last = (metrics("trees_run") or [{}])[-1]
        seen, broken = last.get("val_num_videos"), last.get("val_broken_videos")
        return r.returncode == 0 and seen == fx.num_val and broken == 0, f"val_num_videos={seen}, broken={broken}"

    def both_sets_and_capped(r):
        text = r.stdout + r.stderr
        return (
            r.returncode == 0
            and (tmp / "repeated" / "model.safetensors").is_file()
            and len(metrics("repeated")) == 1
            and text.count("warm-up capped") == 1
            and clean(r)
        )

    return [
        Case(
            "safe loading",
            "weights pickle with code in it (os.system)",
            ["train", cfg, "--set", f"model.pretrained={fx.evil}", f"output={tmp / 'evil_run'}"],
            "refused or inert; the code never runs",
            lambda r: not (tmp / "PWNED").exists() and clean(r),
        ),
        Case(
            "broken videos",
            "missing + empty + truncated + text-as-mp4 in the train list",
            [
                "train",
                cfg,
                "--set",
                f"data.train_list={fx.with_broken}",
                f"output={tmp / 'broken_run'}",
                "train.epochs=1",
                "data.max_broken_fraction=0.5",
            ],
            "trains; skipped and named once, counted in metrics.jsonl",
            broken_trains,
        ),
        stops(
            "broken videos",
            "every training video unreadable",
            [
                "train",
                cfg,
                "--set",
                f"data.root={fx.junk}",
                f"data.train_list={tmp / 'junk.txt'}",
                "data.val_list=null",
                f"output={tmp / 'junk_run'}",
            ],
            "could not be decoded",
        ),
        stops(
            "broken videos",
            "every validation video unreadable",
            ["train", cfg, "--set", f"data.val_list={fx.bad_val}", "train.epochs=1", f"output={tmp / 'bad_val_run'}"],
            f"none of the {fx.num_bad_val} validation videos could be read",
            also=lambda r: not (tmp / "bad_val_run" / "best").exists(),
            more="; no best/",
        ),
        refused(
            "data layout",
            "data.train_list = parent of train/ and val/ class-folder trees",
            ["train", cfg, "--set", f"data.train_list={fx.trees}", "data.val_list=null", f"output={tmp / 'split_run'}"],
            "split folders",
            also=lambda r: not (tmp / "split_run").exists(),
            more="; no run directory left",
        ),
        Case(
            "data layout",
            "separate train/ and val/ class-folder trees",
            [
                "train",
                cfg,
                "--set",
                f"data.train_list={fx.trees / 'train'}",
                f"data.val_list={fx.trees / 'val'}",
                "train.epochs=1",
                f"output={tmp / 'trees_run'}",
            ],
            f"trains and validates all {fx.num_val} val videos",
            trees_validate,
        ),
        Case(
            "config",
            "repeated --set + `epochs: 1` with the default warm-up (2.5)",
            ["train", fx.cfg_default_warmup, "--set", f"output={tmp / 'repeated'}", "--set", "train.epochs=1"],
            "both overrides applied (1 epoch, that output); warm-up capped, said once",
            both_sets_and_capped,
        ),
        Case(
            "config",
            "model.pretrained: null with a frozen backbone",
            [
                "train",
                cfg,
                "--set",
                "model.pretrained=null",
                "model.freeze=true",
                "train.epochs=1",
                f"output={tmp / 'frozen_random'}",
            ],
            "a WARNING at start (once), then trains",
            lambda r: r.returncode == 0 and r.stderr.count("WARNING: model.pretrained is null") == 1 and clean(r),
        ),
    ]


def trained_model_cases(fx) -> list[Case]:
    """Mistakes with a finished run (`ref`) and a run stopped in epoch 2 (`unfinished`)."""
    ref, tmp, video = fx.ref, fx.tmp, fx.video
    cuda = torch.cuda.is_available()
    before = snapshot(ref)

    def untouched(r):
        return snapshot(ref) == before

    cases = [
        refused(
            "trained model",
            "eval --set model.num_frames=32",
            ["eval", ref, "--set", "model.num_frames=32"],
            "model.num_frames",
        ),
        refused(
            "trained model",
            "predict --set model.backbone=resnet18",
            ["predict", ref, video, "--set", "model.backbone=resnet18"],
            "model.backbone",
        ),
        refused(
            "trained model",
            "predict --set data.img_size=16 (model trained at 32)",
            ["predict", ref, video, "--set", "data.img_size=16"],
            "img_size",
        ),
        refused("trained model", "predict --topk 0", ["predict", ref, video, "--topk", "0"], "--topk"),
        refused("trained model", "predict --topk -1", ["predict", ref, video, "--topk", "-1"], "--topk"),
        refused(
            "trained model", "export RUN to an existing folder", ["export", ref, fx.tmp / "empty_dir"], "is a directory"
        ),
        refused(
            "trained model",
            "export RUN RUN/model.safetensors (the run's own weights)",
            ["export", ref, ref / "model.safetensors"],
            "refusing to overwrite",
            also=untouched,
            more="; the run's bytes unchanged",
        ),
        refused(
            "trained model",
            "features RUN VIDEO --out RUN/model.safetensors",
            ["features", ref, video, "--out", ref / "model.safetensors"],
            "refusing to overwrite",
            also=untouched,
            more="; the run's bytes unchanged",
        ),
        refused(
            "trained model",
            "features RUN VIDEO --out other.safetensors (someone's weights)",
            ["features", ref, video, "--out", tmp / "truncated.safetensors"],
            "not a zeroi2v features file",
        ),
        refused(
            "trained model",
            "predict --timeline --out RUN/model (would write RUN/model.json)",
            ["predict", ref, video, "--timeline", "--out", ref / "model"],
            "refusing to overwrite",
            also=untouched,
            more="; the run's bytes unchanged",
        ),
        Case(
            "trained model",
            "predict on a non-video file among good ones",
            ["predict", ref, tmp / "text.pth", video],
            "names the bad file, predicts the others, exit 1",
            lambda r: r.returncode == 1 and "unreadable" in r.stderr and str(video) in r.stdout and clean(r),
        ),
        Case(
            "trained model",
            "predict on a folder among good ones",
            ["predict", ref, tmp / "empty_dir", video],
            "'no videos ... in this folder', predicts the others, exit 1",
            lambda r: r.returncode == 1 and "no videos" in r.stderr and str(video) in r.stdout and clean(r),
        ),
        Case(
            "trained model",
            "rerun `train` on a finished run",
            ["train", fx.cfg, "--set", f"output={ref}"],
            "exit 0, says 'already finished'",
            lambda r: r.returncode == 0 and "already finished" in r.stdout,
        ),
        refused(
            "unfinished run",
            "eval of a run stopped in epoch 2",
            ["eval", fx.unfinished],
            "unfinished run",
            also=lambda r: "resume" in r.stderr,
            more=" and 'resume'",
        ),
        Case(
            "unfinished run",
            "eval --checkpoint of a run stopped in epoch 2",
            ["eval", fx.unfinished, "--checkpoint"],
            "exit 0, evaluates the last checkpoint",
            lambda r: r.returncode == 0 and "top1=" in r.stdout and clean(r),
        ),
    ]
    if not cuda:
        cases.append(
            refused(
                "trained model", "eval --device cuda without a GPU", ["eval", ref, "--device", "cuda"], "no CUDA GPU"
            )
        )
    return cases


def merge_cases(fx) -> list[Case]:
    """`merge` must never touch its source: refused before any work, source bytes compared before/after."""
    ref, tmp = fx.ref, fx.tmp
    full = tmp / "full_dir"
    full.mkdir()
    (full / "notes.txt").write_text("keep me\n")
    before = snapshot(ref)

    def untouched(r):
        return snapshot(ref) == before and "verified" not in r.stdout

    return [
        refused(
            "merge",
            "merge RUN RUN",
            ["merge", ref, ref],
            "own directory",
            also=untouched,
            more="; no work done, source bytes unchanged",
        ),
        refused(
            "merge",
            "merge RUN RUN/sub",
            ["merge", ref, ref / "sub"],
            "inside the source",
            also=lambda r: untouched(r) and not (ref / "sub").exists(),
            more="; nothing created, source unchanged",
        ),
        refused(
            "merge",
            "merge RUN existing_nonempty_dir",
            ["merge", ref, full],
            "--force",
            also=lambda r: (full / "notes.txt").read_text() == "keep me\n" and untouched(r),
            more="; the folder untouched",
        ),
        Case(
            "merge",
            "merge RUN existing_nonempty_dir --force",
            ["merge", ref, full, "--force"],
            "exit 0, merged model written, source unchanged",
            lambda r: r.returncode == 0 and (full / "model.safetensors").is_file() and snapshot(ref) == before,
        ),
    ]


def newcomer_files(fx) -> SimpleNamespace:
    """The newcomer scenarios' files, made from the fixtures' class-folder trees and reference run."""
    import av
    import numpy as np

    tmp, video, trees = fx.tmp, fx.video, fx.trees
    names = sorted(p.name for p in (trees / "train").iterdir())
    made = tmp / "newcomer"

    def tree_copy(name, drop=(), rename=None):
        target = made / name
        shutil.copytree(trees / "val", target)
        for cls in drop:
            shutil.rmtree(target / cls)
        if rename:
            (target / rename[0]).rename(target / rename[1])
        return target

    zebra = tree_copy("val_zebra")
    shutil.copytree(trees / "val" / names[0], zebra / "zebra")
    upper = tree_copy("val_upper", rename=(names[1], names[1].capitalize()))
    missing = tree_copy("val_missing", drop=(names[0],))
    empty = made / "train_empty"
    shutil.copytree(trees / "train", empty)
    (empty / "ghost").mkdir()
    dup = made / "dup"
    dup.mkdir()
    (dup / "list.txt").write_text(f"{fx.data_root}/{Path(video).name} 0\n")
    (dup / "classes.txt").write_text("a\nb\na\n")
    far = made / "far"
    far.mkdir()
    (far / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    (far / "list.txt").write_text(f"{video} 0\n{video} 1\n{video} 7\n")
    spaced = made / "my clips"
    spaced.mkdir()
    lines = []
    for i, rel in enumerate((trees / "train").rglob("*.mp4")):
        shutil.copyfile(rel, spaced / f"clip {i}.mp4")
        lines.append(f"my clips/clip {i}.mp4 {names.index(rel.parent.name)}\n")
    (made / "spaces.txt").write_text("".join(lines))
    (made / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    full = made / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt, stream.options = "yuv420p", {"g": "10"}
        for i in range(100):
            frame = np.full((32, 32, 3), (i * 2) % 255, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    cut = made / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    from PIL import Image

    Image.new("RGB", (32, 32)).save(made / "still.mp4", format="PNG")
    (made / "notes.json").write_text('{"my": "notes"}\n')
    user_video = made / "fast.mp4"
    shutil.copyfile(video, user_video)
    user_bytes = user_video.read_bytes()
    mine = made / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("# my config\n")
    (mine / "classes.txt").write_text("mine\n")
    junk = tmp / "text.pth"
    from zeroi2v.build import build_model, save_pretrained
    from zeroi2v.model import model_config

    joint = made / "joint_model"
    save_pretrained(
        build_model(
            model_config(
                "vit_tiny_patch16_224",
                method="joint",
                num_frames=4,
                num_classes=4,
                img_size=32,
                patch_size=8,
                depth=1,
                embed_dim=64,
                num_heads=4,
            )
        ),
        joint,
    )

    return SimpleNamespace(
        names=names,
        made=made,
        zebra=zebra,
        upper=upper,
        missing=missing,
        empty=empty,
        dup=dup,
        far=far,
        cut=cut,
        user_video=user_video,
        user_bytes=user_bytes,
        mine=mine,
        junk=junk,
        joint=joint,
    )


def newcomer_cases(fx) -> list[Case]:
    """A newcomer's mistakes with class folders, list files, outputs and inputs that are not what they seem."""
    ref, tmp, video, trees = fx.ref, fx.tmp, fx.video, fx.trees
    n = newcomer_files(fx)
    names, made, zebra, upper, missing, empty = n.names, n.made, n.zebra, n.upper, n.missing, n.empty
    dup, far, cut, user_video, user_bytes, mine, junk, joint = (
        n.dup,
        n.far,
        n.cut,
        n.user_video,
        n.user_bytes,
        n.mine,
        n.junk,
        n.joint,
    )

    def trees_run(val):
        return ["eval", tmp / "trees_run", "--set", f"data.val_list={val}"]

    def scored_by_name(r):
        per_class = json.loads((tmp / "trees_run" / "per_class_accuracy.json").read_text())
        return r.returncode == 0 and per_class[names[0]] is None and clean(r), f"{names[0]}: {per_class[names[0]]}"

    def no_run(where):
        return lambda r: not where.exists()

    cases = [
        refused("newcomer", "val tree with a class unknown to training", trees_run(zebra), "'zebra'"),
        refused("newcomer", "val class differs from training only in case", trees_run(upper), "case-sensitive"),
        Case(
            "newcomer",
            "val tree lacking a training class (eval of the trees run)",
            trees_run(missing),
            "exit 0, the missing class unscored (null), the others keep their training ids",
            scored_by_name,
        ),
        refused(
            "newcomer",
            "output inside a class-folder tree",
            [
                "train",
                fx.cfg,
                "--set",
                f"data.train_list={trees / 'train'}",
                f"data.val_list={trees / 'val'}",
                f"output={trees / 'train' / 'run'}",
            ],
            "inside the data",
            also=no_run(trees / "train" / "run"),
            more="; nothing written",
        ),
        refused(
            "newcomer",
            "an empty class folder",
            ["train", fx.cfg, "--set", f"data.train_list={empty}", "data.val_list=null", f"output={made / 'r1'}"],
            "ghost holds no videos",
        ),
        refused(
            "newcomer",
            "data.train_list = a single class folder",
            [
                "train",
                fx.cfg,
                "--set",
                f"data.train_list={trees / 'train' / names[0]}",
                "data.val_list=null",
                f"output={made / 'r2'}",
            ],
            "point at its parent",
        ),
        refused(
            "newcomer",
            "data.train_list = a video file",
            ["train", fx.cfg, "--set", f"data.train_list={video}", f"output={made / 'r3'}"],
            "is a video, not an annotation file",
        ),
        refused(
            "newcomer",
            "a class named twice in classes.txt",
            ["train", fx.cfg, "--set", f"data.train_list={dup / 'list.txt'}", f"output={made / 'r4'}"],
            "listed twice",
        ),
        refused(
            "newcomer",
            "label out of range (list with classes.txt)",
            ["train", fx.cfg, "--set", f"data.train_list={far / 'list.txt'}", f"output={made / 'r5'}"],
            "line 3: label 7",
        ),
        Case(
            "newcomer",
            "list file with spaces in the paths",
            [
                "train",
                fx.cfg,
                "--set",
                f"data.root={made}",
                f"data.train_list={made / 'spaces.txt'}",
                "data.val_list=null",
                "train.epochs=1",
                f"output={tmp / 'spaces_run'}",
            ],
            "exit 0, trains",
            lambda r: r.returncode == 0 and (tmp / "spaces_run" / "model.safetensors").is_file() and clean(r),
        ),
        Case(
            "newcomer",
            "predict a truncated MP4 (60% of the bytes)",
            ["predict", ref, cut],
            "exit 0, a warning naming the file: 'decoded N of 100 frames'",
            lambda r: r.returncode == 0 and f"{cut}: warning: decoded" in r.stderr and "of 100 frames" in r.stderr,
        ),
        Case(
            "newcomer",
            "predict a PNG renamed .mp4",
            ["predict", ref, made / "still.mp4", video],
            "'not a video', predicts the others, exit 1",
            lambda r: r.returncode == 1 and "not a video" in r.stderr and str(video) in r.stdout and clean(r),
        ),
        refused(
            "newcomer",
            "predict --timeline --out notes (the user's notes.json)",
            ["predict", ref, video, "--timeline", "--out", made / "notes"],
            "not an earlier timeline output",
            also=lambda r: (made / "notes.json").read_text() == '{"my": "notes"}\n',
            more="; notes.json unchanged",
        ),
        refused(
            "newcomer",
            "predict --timeline --annotate an existing video of the user's",
            ["predict", ref, video, "--timeline", "--out", made / "t", "--annotate", user_video],
            "not an earlier timeline output",
            also=lambda r: user_video.read_bytes() == user_bytes,
            more="; the video unchanged",
        ),
        refused(
            "newcomer",
            "predict --timeline --window 1",
            ["predict", ref, video, "--timeline", "--out", made / "t", "--window", "1"],
            "at least",
        ),
        refused(
            "newcomer",
            "merge RUN DIR --force, DIR holding the user's config.yaml",
            ["merge", ref, mine, "--force"],
            "not a zeroi2v model directory",
            also=lambda r: (mine / "config.yaml").read_text() == "# my config\n",
            more="; config.yaml unchanged",
        ),
        Case(
            "newcomer",
            "features: an unreadable video among good ones",
            ["features", ref, video, junk, "--out", made / "f.safetensors"],
            "exit 0, the bad file skipped and named, rows for the others",
            lambda r: r.returncode == 0 and "skipped, unreadable" in r.stderr and "Errno" not in r.stderr and clean(r),
        ),
        refused(
            "newcomer",
            "features: every video unreadable",
            ["features", ref, junk, "--out", made / "g.safetensors"],
            "none of the 1 videos could be read",
            also=no_run(made / "g.safetensors"),
            more="; nothing written",
        ),
        Case(
            "newcomer",
            "features of a joint-attention model",
            ["features", joint, video, "--out", made / "joint.safetensors"],
            "exit 0, 'cannot be merged' note",
            lambda r: r.returncode == 0 and "joint cannot be merged" in r.stdout and clean(r),
        ),
    ]
    for verb in (["predict", ref, video], ["eval", ref], ["features", ref, video, "--out", made / "d.safetensors"]):
        for device in ("mps", "meta"):
            cases.append(refused("newcomer", f"{verb[0]} --device {device}", [*verb, "--device", device], "--device"))
    return cases


def snapshot(directory: Path) -> dict:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# --- interruptions --------------------------------------------------------------------------------------
@dataclass
class Interrupted:
    stopped: subprocess.CompletedProcess  # the run that got the signal
    during: object  # what `during()` returned while that run was alive
    rerun: subprocess.CompletedProcess | None  # the same command again


def interrupted_run(
    cfg,
    out: Path,
    wait_for: str | None,
    sig: int,
    extra_args=(),
    delay: float = 0.0,
    during: Callable | None = None,
    before_rerun: Callable | None = None,
    rerun: bool = True,
    timeout: float = 300,
    group: bool = False,
) -> Interrupted:
    """`zeroi2v train CFG --set output=OUT EXTRA...`, sent `sig` once OUT/wait_for exists (then `delay` seconds;
    wait_for=None: `delay` seconds after the start); `during()` runs just before the signal, `before_rerun()`
    after the run stopped; then the same command runs again (unless rerun=False). group=True: the run gets
    its own process group and the signal goes to all of it (its DataLoader workers too), as a scheduler's
    preemption or a terminal's Ctrl-C does."""
    args = ["train", cfg, "--set", f"output={out}", *extra_args]
    proc = subprocess.Popen(
        [*ZEROI2V, *map(str, args)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )
    deadline = time.time() + timeout
    while wait_for and not (out / wait_for).is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    seen = during() if during else None
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=timeout)
    stopped = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if before_rerun:
        before_rerun()
    return Interrupted(stopped, seen, cli(*args) if rerun else None)


def interruptions(fx, table) -> None:
    cfg, tmp = fx.cfg, fx.tmp

    def same_as_ref(result, out):
        return weight_diff(fx.ref, out) if result.returncode == 0 else float("nan")

    run = interrupted_run(cfg, tmp / "killed", "metrics.jsonl", signal.SIGKILL)
    diff = same_as_ref(run.rerun, tmp / "killed")
    table.add(
        "interruption",
        "SIGKILL after epoch 1, same command again",
        run.rerun,
        f"resumes; final weights equal an uninterrupted run (max abs diff {diff:.1e})",
        diff <= 1e-5,
    )

    run = interrupted_run(
        cfg,
        tmp / "terminated",
        "checkpoint/last.json",
        signal.SIGTERM,
        delay=0.3,
        before_rerun=lambda: shutil.copytree(tmp / "terminated", fx.unfinished),
    )
    diff = same_as_ref(run.rerun, tmp / "terminated")
    table.add(
        "interruption",
        "SIGTERM inside epoch 2 (preemption)",
        run.stopped,
        f"checkpoint at that step, exit 143; rerun resumes exactly (max abs diff {diff:.1e})",
        run.stopped.returncode == 143 and diff <= 1e-5,
    )

    run = interrupted_run(
        cfg,
        tmp / "group_terminated",
        "checkpoint/last.json",
        signal.SIGTERM,
        ["train.num_workers=2"],
        delay=0.3,
        group=True,
    )
    diff = same_as_ref(run.rerun, tmp / "group_terminated")
    table.add(
        "interruption",
        "SIGTERM to the whole process group inside epoch 2, 2 DataLoader workers (SLURM, `timeout`)",
        run.stopped,
        f"checkpoint at that step, exit 143, no traceback; rerun resumes exactly (max abs diff {diff:.1e})",
        run.stopped.returncode == 143 and clean(run.stopped) and diff <= 1e-5,
    )

    def damage():  # a finished epoch's checkpoint whose resume state was then damaged
        for state in (tmp / "damaged" / "checkpoint").glob("state-*.pt"):
            state.write_bytes(state.read_bytes()[:200])

    run = interrupted_run(cfg, tmp / "damaged", "metrics.jsonl", signal.SIGKILL, before_rerun=damage)
    table.add(
        "interruption",
        "resume state damaged after the kill (truncated state file)",
        run.rerun,
        "refuses to resume with one line naming the run, exit 2",
        one_line(run.rerun, "cannot resume"),
    )

    run = interrupted_run(cfg, tmp / "sigint", None, signal.SIGINT, delay=0.5, rerun=False)
    r = run.stopped
    table.add(
        "interruption",
        "Ctrl-C (SIGINT) 0.5 s after `train` started",
        r,
        "exit 130, 'zeroi2v: interrupted', no traceback",
        r.returncode == 130 and last_line(r.stderr) == "zeroi2v: interrupted" and clean(r),
    )

    demo_out = tmp / "demo_interrupted"  # Ctrl-C in a terminal: SIGINT to the group, while the first row trains
    proc = subprocess.Popen(
        [*ZEROI2V, "demo", "--tiny", "--epochs", "300", "--out", str(demo_out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    pointer, deadline = demo_out / "runs" / "zeroi2v" / "checkpoint" / "last.json", time.time() + 300
    while not pointer.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    table.add(
        "interruption",
        "Ctrl-C while `demo` trains its first row",
        r,
        "exit 130; says a rerun of the demo starts over; the next row never starts; no traceback",
        r.returncode == 130
        and "a rerun of the demo starts over" in stdout
        and clean(r)
        and not (demo_out / "runs" / "averaging").exists(),
    )

    out = tmp / "locked"
    run = interrupted_run(
        cfg,
        out,
        ".lock",
        signal.SIGKILL,
        ["train.epochs=50"],
        rerun=False,
        during=lambda: cli("train", cfg, "--set", f"output={out}", "train.epochs=50"),
    )
    table.add(
        "concurrency",
        "second run on the same output directory",
        run.during,
        "refused with one line, exit 2",
        one_line(run.during, "in use by another run"),
    )


def weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max((x[k] - y[k]).abs().max().item() for k in x)


# --- checks that are not one command --------------------------------------------------------------------
def file_modes(fx, table, ref_result) -> None:
    """Under umask 022 everything a run writes must be readable by group and others (shared clusters)."""
    files = [
        p for p in [*fx.ref.rglob("*"), *(fx.unfinished / "checkpoint").glob("*")] if p.is_file() and p.name != ".lock"
    ]
    private = sorted(str(p.relative_to(fx.tmp)) for p in files if p.stat().st_mode & 0o044 != 0o044)
    names = {p.name for p in files}
    needed = {"model.safetensors", "config.yaml", "metrics.jsonl", "last.json"}
    checkpoint_files = [p for p in files if p.parent.name == "checkpoint"]
    table.add(
        "shared files",
        "modes of a run's files under umask 022 (model, config, metrics, checkpoints)",
        ref_result,
        f"all {len(files)} files readable by group/other" + (f"; private: {', '.join(private[:3])}" if private else ""),
        not private and needed <= names and bool(checkpoint_files),
    )


def startup(fx, table) -> None:
    """`--help` and `--version` must be quick and import neither torch nor timm."""
    probe = (
        "import sys\nfrom zeroi2v.cli import main\ntry:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'timm') if m in sys.modules), file=sys.stderr)"
    )
    for flag in ("--help", "--version"):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            r = cli(flag)
            times.append(time.perf_counter() - start)
        imported = subprocess.run(
            [sys.executable, "-c", probe.format(flag=flag)], env=ENV, capture_output=True, text=True
        ).stderr
        loaded = imported.split("IMPORTED", 1)[-1].strip()
        table.add(
            "start-up",
            f"`zeroi2v {flag}`",
            r,
            f"< 1 s (best of 3: {min(times):.2f} s), torch/timm not imported (imported: {loaded})",
            r.returncode == 0 and min(times) < 1.0 and loaded == "[]",
        )


# --- the table ------------------------------------------------------------------------------------------
class Table:
    def __init__(self, tmp: Path):
        self.tmp, self.rows, self.failures = tmp, [], []

    def add(self, group, name, result, expected, ok, args=None):
        seen = (last_line(result.stderr) or last_line(result.stdout)) if result else ""
        traceback = "no" if not result or "Traceback" not in result.stderr else "YES"
        self.rows.append(
            [group, name, result.returncode if result else "-", seen, traceback, expected, "pass" if ok else "FAIL"]
        )
        if not ok:
            command = " ".join(map(str, args if args is not None else (result.args if result else [])))
            self.failures.append(
                f"{name}\n  $ {command}\n  exit {result.returncode if result else '-'}\n"
                f"  stdout: {result.stdout[-600:] if result else ''}\n"
                f"  stderr: {result.stderr[-1200:] if result else ''}"
            )

    def run(self, cases: list[Case]) -> None:
        for case in cases:
            result = cli(*case.args)
            verdict = case.check(result)
            ok, detail = verdict if isinstance(verdict, tuple) else (verdict, "")
            self.add(
                case.group,
                case.name,
                result,
                case.expected + (f" ({detail})" if detail else ""),
                bool(ok),
                ["zeroi2v", *case.args],
            )

    def markdown(self, seconds: float) -> str:
        header = [
            "group",
            "what was tried",
            "exit",
            "what the user sees (last stderr line)",
            "traceback",
            "expected",
            "result",
        ]
        lines = [
            "# Reliability: what was tried and what happened",
            "",
            f"Generated by `python -m benchmarks.reliability` on {platform.platform()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, in "
            f"{seconds / 60:.1f} minutes, under umask 022. Every row ran the real CLI in a subprocess on "
            "generated videos (TMP is the scratch folder). The same behaviours are asserted in "
            "`tests/test_engine.py` and `tests/test_reliability.py` (plus a simulated full disk during a "
            "checkpoint write and non-finite losses, which need in-process fault injection).",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for row in self.rows:
            cells = (str(c).replace(str(self.tmp), "TMP").replace("|", "\\|") for c in row)
            lines.append("| " + " | ".join(cells) + " |")
        passed = sum(r[-1] == "pass" for r in self.rows)
        return "\n".join(lines + ["", f"{passed} of {len(self.rows)} scenarios behaved as expected."]) + "\n"


# --- files for the scenarios ----------------------------------------------------------------------------
def fixtures(tmp: Path) -> SimpleNamespace:
    from zeroi2v.data.synthetic import make_motion_dataset

    data = make_motion_dataset(
        tmp / "data", train_per_class=8, val_per_class=2, num_frames=8, size=32, num_classes=4, progress=False
    )
    root = Path(data["root"])
    (tmp / "project").mkdir()
    (tmp / "project" / "config.yaml").write_text("# a project's own config\n")
    (tmp / "dataset").mkdir()
    (tmp / "project_docs").mkdir()
    (tmp / "project_docs" / "report.md").write_text("# our report\n")
    (tmp / "project_docs" / "benchmarks.md").write_text("# our numbers\n")
    (tmp / "dataset" / "train.txt").write_text("clips/a.mp4 0\n")
    base = {
        "output": str(tmp / "run"),  # never created: every run below names its own output
        "model": {
            "backbone": "vit_tiny_patch16_224",
            "num_frames": 4,
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
            "test_clips": 1,
            "rand_augment": False,
            "flip": False,
        },
        "train": {"epochs": 3, "batch_size": 8, "lr": 1.0e-3, "warmup_epochs": 0.5, "num_workers": 0},
    }
    fx = SimpleNamespace(
        tmp=tmp,
        cfg=tmp / "cfg.yaml",
        cfg_default_warmup=tmp / "cfg_default_warmup.yaml",
        ref=tmp / "ref",
        unfinished=tmp / "unfinished",
        evil=tmp / "evil.pth",
        junk=tmp / "junk",
        latin_list=tmp / "latin_list" / "list.txt",
        no_classes_list=tmp / "no_classes" / "list.txt",
        with_broken=tmp / "with_broken.txt",
        bad_val=tmp / "bad_val.txt",
        trees=tmp / "trees",
        data_root=root,
    )
    fx.cfg.write_text(yaml.safe_dump(base))
    del base["train"]["warmup_epochs"]
    fx.cfg_default_warmup.write_text(yaml.safe_dump(base))
    train_lines, val_lines = Path(data["train_list"]).read_text(), Path(data["val_list"]).read_text()
    good = root / train_lines.split()[0]
    fx.video = root / val_lines.split()[0]
    fx.num_val = len(val_lines.split()) // 2

    (tmp / "bad_list.txt").write_text("train/a.mp4 0\ntrain/b.mp4\n")
    (tmp / "text.pth").write_text("not weights")
    (tmp / "truncated.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    (tmp / "bad.yaml").write_text("model: [unclosed\n")
    (tmp / "empty_dir").mkdir()
    (tmp / "latin1.yaml").write_bytes("model:\n  backbone: vit_tiny_patch16_224  # r\xe9sum\xe9\n".encode("latin-1"))
    fx.latin_list.parent.mkdir()
    fx.latin_list.write_text(train_lines)
    fx.no_classes_list.parent.mkdir()
    fx.no_classes_list.write_text(train_lines)
    (fx.latin_list.parent / "classes.txt").write_bytes("caf\xe9\n".encode("latin-1") * 8)
    broken = root / "broken"
    broken.mkdir()
    (broken / "empty.mp4").write_bytes(b"")
    (broken / "text.mp4").write_text("hello\n")
    (broken / "truncated.mp4").write_bytes(good.read_bytes()[:300])
    fx.with_broken.write_text(
        train_lines + "broken/missing.mp4 0\nbroken/empty.mp4 1\nbroken/text.mp4 2\nbroken/truncated.mp4 3\n"
    )
    fx.bad_val.write_text("broken/empty.mp4 0\nbroken/text.mp4 1\nbroken/truncated.mp4 2\n")
    fx.num_bad_val = 3
    fx.junk.mkdir()
    for i in range(8):
        (fx.junk / f"v{i}.mp4").write_text("junk")
    (tmp / "junk.txt").write_text("".join(f"v{i}.mp4 {i % 2}\n" for i in range(8)))
    for split, lines in (("train", train_lines), ("val", val_lines)):  # class-folder trees, one per split
        for rel, label in (line.split() for line in lines.splitlines() if line.strip()):
            target = fx.trees / split / data["classes"][int(label)].replace(" ", "_") / Path(rel).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, target)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'PWNED'}",))

    torch.save({"state_dict": {"x": torch.zeros(1)}, "meta": Evil()}, fx.evil)
    return fx


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])  # --help answers, not a 5-minute run
    parser.add_argument("--out", default=str(REPO / "docs" / "reliability.md"), help="the report to write")
    args = parser.parse_args(argv)
    if not os.access(Path(args.out).resolve().parent, os.W_OK):
        parser.error(f"cannot write {args.out} (--out): its folder is missing or read-only")
    os.umask(0o022)  # a shared cluster's usual umask; every run below inherits it
    start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="zeroi2v_reliability_"))
    fx, table = fixtures(tmp), Table(tmp)
    ref = cli("train", fx.cfg, "--set", f"output={fx.ref}")  # the reference weights; the model later rows use
    startup(fx, table)
    table.run(bad_input_cases(fx))
    table.run(training_cases(fx))
    interruptions(fx, table)  # also leaves fx.unfinished, a copy of a run stopped in epoch 2
    file_modes(fx, table, ref)
    table.run(trained_model_cases(fx))
    table.run(merge_cases(fx))
    table.run(newcomer_cases(fx))

    report = table.markdown(time.time() - start)
    Path(args.out).write_text(report)
    print(report)
    for failure in table.failures:
        print("FAILED:", failure.replace(str(tmp), "TMP"), file=sys.stderr)
    return 0 if not table.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
