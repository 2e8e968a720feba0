"""`zeroi2v bench`: cost and speed tables, measured side by side in one process.

    zeroi2v bench                                   # CPU: ViT-S/16 and ViT-B/16 at 8 frames
    zeroi2v bench --device cuda --dtype bf16 --batch 32 --frames 8 16 32 \\
        --backbone vit_base_patch16_clip_quickgelu_224 vit_large_patch14_clip_quickgelu_224
    zeroi2v bench --compile                         # torch.compile on/off: merged inference, training step
    zeroi2v bench --loader                          # will the GPU wait? loader CPU ms per clip, cores per GPU

Tables: inference (params, FLOPs, clips/s, latency, peak memory) of the plain timm image model on T
frames, ZeroI2V merged and unmerged, and the peer baselines (AIM, ST-Adapter, joint attention);
STDHA vs the same attention without temporal heads vs a reference-style implementation (full K/V
clone + manual softmax, as the paper's code); training step time and peak memory; with `--compile`,
eager vs `torch.compile`; with `--loader`, whether the GPU will wait for the training loader: its CPU
ms per clip (decode, augment, collate) on source and prepared data, with and without `gpu_augment` and
`repeat_clips`, the cores per GPU a model rate needs, and our frame sampler vs torchcodec and decord
(zeroi2v.loader_bench). Timings are
medians of interleaved rounds (every variant once per round, order rotated), so background load hits
all alike; compare ratios, and only within one run.

Output: `<section dir>/{cost,compile,loader}.{md,json}` + PNG charts (section dir: `<out dir>/bench`);
`<out>` (docs/benchmarks.md) is then assembled from the sections found beside it (`SECTIONS`).
Generated, never typed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from zeroi2v.bench_report import ASSEMBLED_MARK, assemble, charts, checks, compile_markdown, environment, markdown
from zeroi2v.cost_tables import (
    DEFAULT_BACKBONES,
    METHODS,
    TINY,
    compile_table,
    inference_table,
    is_toy,
    model_label,
    stdha_table,
    train_step_child,
    train_table,
)
from zeroi2v.errors import UserError
from zeroi2v.fileio import atomic_write_json, atomic_write_text
from zeroi2v.loader_bench import add_loader_args, loader_markdown, loader_table
from zeroi2v.model import create_model


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="zeroi2v bench", description="Cost and speed tables, side by side.")
    add = parser.add_argument
    add("--backbone", nargs="+", default=None, help=f"timm names (default: {' '.join(DEFAULT_BACKBONES)})")
    add("--frames", nargs="+", type=int, default=[8])
    add("--batch", type=int, default=1, help="clips per forward pass in the inference/STDHA/compile tables")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add(
        "--dtype",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="inference/STDHA dtype; the training step of --compile autocasts to it",
    )
    add(
        "--what",
        nargs="+",
        choices=["inference", "stdha", "train", "compile", "loader", "all"],
        default=None,
        help="tables to make (default: inference stdha train; all = those three)",
    )
    add("--compile", action="store_true", help="torch.compile on/off (section compile.md)")
    add("--loader", action="store_true", help="will the GPU wait for the training loader (section loader.md)")
    add("--methods", nargs="+", choices=METHODS, default=METHODS, help="models of the inference table")
    add(
        "--joint-frames",
        nargs="+",
        type=int,
        default=None,
        help="frame counts at which joint attention runs (its cost grows with T²; default: all)",
    )
    add("--repeats", type=int, default=11, help="interleaved timing rounds (median)")
    add("--train-batch", type=int, default=None, help="batch of the training tables (default max(2, --batch))")
    add("--train-backbone", default=None, help="backbone of the training tables (default: the last --backbone)")
    add("--train-steps", type=int, default=3)
    add("--img-size", type=int, default=None, help="input size (timm img_size): smaller = faster")
    add_loader_args(parser)
    add("--out", default="docs/benchmarks.md", help="assembled Markdown file; sections, JSON, PNGs go beside it")
    add("--section-dir", default=None, help="where the sections go (default: <out dir>/bench)")
    add("--name", default="cost", help="file name (without .md) of the inference/STDHA/training section")
    add("--tiny", action="store_true", help="toy-size models, a seconds-long loader run (smoke test)")
    add("--render", action="store_true", help="only rebuild the Markdown from the last run's JSON (<section dir>)")
    args = parser.parse_args(argv)
    args.argv = argv
    check_counts(args)
    what = set(args.what or ([] if (args.compile or args.loader) else ["all"]))
    what |= {"compile"} if args.compile else set()
    what |= {"loader"} if args.loader else set()
    args.what = (what - {"all"}) | ({"inference", "stdha", "train"} if "all" in what else set())
    return args


COUNTS = ("batch", "repeats", "train_batch", "train_steps", "img_size", "loader_videos", "loader_short_side",
          "loader_clips", "loader_rounds", "frames", "joint_frames", "cores_per_gpu")  # fmt: skip


def check_counts(args) -> None:
    """Every count >= 1 (one line naming each bad option)."""
    bad = []
    for name in COUNTS:
        value = getattr(args, name)
        if any(v is not None and v < 1 for v in (value if isinstance(value, list) else [value])):
            bad.append(f"--{name.replace('_', '-')} must be >= 1")
    bad += ["--loader-seconds must be > 0"] * (args.loader_seconds is not None and args.loader_seconds <= 0)
    bad += ["--model-rate must be > 0"] * any(r <= 0 for r in args.model_rate or [])
    if bad:
        raise UserError("; ".join(bad))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        print(json.dumps(train_step_child(json.loads(argv[1]))))
        return 0
    args = parse_args(argv)
    out = Path(args.out)
    section_dir = Path(args.section_dir) if args.section_dir else out.parent / "bench"
    if out.is_dir() or out.is_file() and ASSEMBLED_MARK not in out.read_text(encoding="utf-8", errors="replace")[:2000]:
        raise UserError(  # e.g. `zeroi2v bench` run in a project with its own docs/benchmarks.md
            f"--out {out} is {'a directory' if out.is_dir() else 'not a file zeroi2v bench wrote'}; "
            "refusing to overwrite it (give --out another Markdown file)"
        )
    if args.render:
        return render(out, section_dir)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no GPU is visible to PyTorch")
    backbones = args.backbone or (["vit_base_patch16_clip_quickgelu_224"] if args.tiny else DEFAULT_BACKBONES)
    timm_kwargs = dict(TINY) if args.tiny else {}
    if args.img_size:
        timm_kwargs["img_size"] = args.img_size
    for backbone in backbones + ([args.train_backbone] if args.train_backbone else []):  # one-line errors first
        for frames in args.frames:
            create_model(
                backbone, num_frames=frames, num_classes=1, head_offsets=(-1, 1), **{**timm_kwargs, "depth": 1}
            )
    section_dir.mkdir(parents=True, exist_ok=True)
    env = environment(args, device)
    tables = measure(args, backbones, device, timm_kwargs)
    env = {**env, **environment(args, device)}  # load average at the end
    written = write_sections(args, env, tables, out, section_dir)
    if "loader" in args.what:
        result = loader_table(args, device)
        env = {**env, **environment(args, device)}
        section = loader_markdown(env, result)
        atomic_write_text(section_dir / "loader.md", section)
        atomic_write_json(section_dir / "loader.json", {"environment": env, **result})
        written.append(section)
    assemble(out)
    print("\n".join(written))
    print(f"wrote {out} (sections in {section_dir})")
    return 0


def measure(args, backbones: list[str], device: torch.device, timm_kwargs: dict) -> dict[str, list]:
    """The inference, STDHA, compile and training tables that `args.what` asks for."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    what, train_batch = args.what, args.train_batch or max(2, args.batch)
    tables = {"inference": [], "stdha": [], "training": [], "compile": []}
    jobs = [(b, f) for b in backbones for f in args.frames] if what & {"inference", "stdha", "compile"} else []
    for backbone, frames in tqdm(jobs, desc="benchmarking", disable=os.environ.get("CI") == "true"):
        common = (device, dtype, args.repeats, timm_kwargs)
        if "inference" in what:
            joint = args.joint_frames is None or frames in args.joint_frames
            methods = [m for m in args.methods if m != "joint attention" or joint]
            tables["inference"].append(inference_table(backbone, frames, args.batch, *common, methods))
        if "stdha" in what:
            tables["stdha"].append(stdha_table(backbone, frames, max(args.batch, 2), *common))
        if "compile" in what:
            tables["compile"].append(compile_table(backbone, frames, args.batch, train_batch, *common))
    if "train" in what:
        backbone, frames = args.train_backbone or backbones[-1], args.frames[0]
        rows = train_table(backbone, frames, train_batch, device, args.train_steps, timm_kwargs)
        tables["training"].append(
            {"backbone": backbone, "model": model_label(backbone, timm_kwargs), "toy": is_toy(timm_kwargs),
             "frames": frames, "batch": train_batch, "rows": rows}
        )  # fmt: skip
    return tables


def write_sections(args, env: dict, tables: dict, out: Path, section_dir: Path) -> list[str]:
    """The cost section (inference, STDHA, training) and the compile section: Markdown + JSON."""
    written = []
    inference, stdha, training = tables["inference"], tables["stdha"], tables["training"]
    if args.what & {"inference", "stdha", "train"}:
        check_rows = checks(inference, stdha, training, str(env["device"]))
        chart_dir = os.path.relpath(section_dir, out.parent)
        pngs = charts(inference, training, section_dir)
        section = markdown(env, inference, stdha, training, check_rows, pngs, chart_dir)
        atomic_write_text(section_dir / f"{args.name}.md", section)
        atomic_write_json(
            section_dir / f"{args.name}.json",
            {"environment": env, "checks": check_rows, "inference": inference, "stdha": stdha, "training": training},
        )
        written.append(section)
    if tables["compile"]:
        section = compile_markdown(env, tables["compile"])
        atomic_write_text(section_dir / "compile.md", section)
        atomic_write_json(section_dir / "compile.json", {"environment": env, "tables": tables["compile"]})
        written.append(section)
    return written


def render(out: Path, section_dir: Path) -> int:
    """Rewrite the sections and the assembled doc from their JSON (after a change to the wording)."""
    chart_dir = os.path.relpath(section_dir, out.parent)
    for path in sorted(section_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if "inference" not in data:
            continue
        names = [f"inference_{t[0]['backbone']}_{t[0]['frames']}.png" for t in data["inference"]]
        names += [f"training_{t['backbone']}_{t['frames']}.png" for t in data["training"]]
        charts_ = [n for n in dict.fromkeys(names) if (section_dir / n).is_file()]  # in the order a run draws them
        check_rows = checks(data["inference"], data["stdha"], data["training"], data["environment"]["device"])
        atomic_write_text(
            path.with_suffix(".md"),
            markdown(
                data["environment"], data["inference"], data["stdha"], data["training"], check_rows, charts_, chart_dir
            ),
        )
    if (section_dir / "compile.json").is_file():
        data = json.loads((section_dir / "compile.json").read_text())
        atomic_write_text(section_dir / "compile.md", compile_markdown(data["environment"], data["tables"]))
    if (section_dir / "loader.json").is_file():
        data = json.loads((section_dir / "loader.json").read_text())
        atomic_write_text(section_dir / "loader.md", loader_markdown(data.pop("environment"), data))
    assemble(out)
    print(f"wrote {out} from the JSON in {section_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
