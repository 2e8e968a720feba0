"""Ablations of ZeroI2V on the frozen, image-pretrained demo backbone: which parts of the method and of
the demo recipe (configs/demo.yaml) matter, on two synthetic motion families, mean ± std over seeds.

Every run is `zeroi2v train configs/demo.yaml --set <one change>` (the recipe with exactly one thing
changed) on videos written by `zeroi2v synth`: the demo's `basic` family and the `complex` family
(rotation, diagonal motion, approach/recede, distractors, noise) that the recipe was not tuned on.
Tables: temporal heads (Δt sets), which blocks carry them, adapter positions, adapter ratio and
scale, temporal embedding, learning rate, epochs, linear vs GELU adapters (GELU cannot be folded
into the frozen weights: their inference cost is shown next to their accuracy).

Writes docs/research/ablations.md (generated; never edit by hand). Results are cached per run in
WORK/results.json, so an interrupted or partial study continues where it stopped, invocations for
different families can run side by side on one cache (one per core, OMP_NUM_THREADS=1), and
`--report-only` rewrites the document from the cache.

    python -m benchmarks.ablations                      # the full study: 3 seeds, both families
    python -m benchmarks.ablations --quick              # 1 seed, fewer epochs and videos (smoke-sized)
    python -m benchmarks.ablations --groups heads lr --seeds 0 1 --max-minutes 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import DOCS, ROOT, backbone_sha256, check_study_options, recipe_id, store
from benchmarks.common import RECIPE as COMMON_RECIPE
from zeroi2v.weights import builtin_weights_path

RECIPE = COMMON_RECIPE  # the recipe studied (--recipe: another file)

GROUPS = {  # name -> (title, [(row label, {config key: value}), ...]); {} is the recipe itself
    "heads": (
        "Temporal heads: Δt of heads 0, 1, ... (the backbone has 4 heads; heads not listed stay spatial)",
        [
            ("[] (no temporal heads)", {"model.head_offsets": []}),
            ("[1]", {"model.head_offsets": [1]}),
            ("[-1, 1]", {"model.head_offsets": [-1, 1]}),
            ("[-1, 1, -2, 2]", {"model.head_offsets": [-1, 1, -2, 2]}),
            ("[-1, -1, 1, 1]", {"model.head_offsets": [-1, -1, 1, 1]}),
            ("[-2, 2, -4, 4] (recipe)", {}),
        ],
    ),
    "blocks": (
        "Which blocks carry the temporal heads (4 blocks)",
        [
            ("all (recipe)", {}),
            ("early: blocks 0, 1", {"model.stdha_blocks": [0, 1]}),
            ("late: blocks 2, 3", {"model.stdha_blocks": [2, 3]}),
        ],
    ),
    "positions": (
        "Adapter positions (linear adapters; all four are folded after training)",
        [
            ("attn_in only", {"model.adapter_positions": ["attn_in"]}),
            ("attn_out only", {"model.adapter_positions": ["attn_out"]}),
            ("mlp_in only", {"model.adapter_positions": ["mlp_in"]}),
            ("mlp_out only", {"model.adapter_positions": ["mlp_out"]}),
            ("all four (recipe)", {}),
        ],
    ),
    "ratio": (
        "Adapter bottleneck ratio",
        [
            ("0.125", {"model.adapter_ratio": 0.125}),
            ("0.25 (recipe)", {}),
            ("0.5", {"model.adapter_ratio": 0.5}),
        ],
    ),
    "scale": (
        "Adapter scale s",
        [
            ("0.25", {"model.adapter_scale": 0.25}),
            ("0.5 (recipe)", {}),
            ("1.0", {"model.adapter_scale": 1.0}),
        ],
    ),
    "stability": (
        "Stability at high lr: what diverges, and where (adapter gains and residual stream of the trained run)",
        [
            ("recipe (s 0.5, warm-up 3 epochs, lr 4e-3)", {}),
            ("lr 8e-3", {"train.lr": 8e-3}),
            ("warm-up 1 epoch, lr 8e-3", {"train.lr": 8e-3, "train.warmup_epochs": 1}),
            (
                "warm-up 1 epoch, no q/k/v-input adapter, lr 8e-3",
                {
                    "train.lr": 8e-3,
                    "train.warmup_epochs": 1,
                    "model.adapter_positions": ["attn_out", "mlp_in", "mlp_out"],
                },
            ),
            (
                "s 1.0, warm-up 1 epoch, lr 8e-3",
                {"train.lr": 8e-3, "train.warmup_epochs": 1, "model.adapter_scale": 1.0},
            ),
            ("lr 1.6e-2", {"train.lr": 1.6e-2}),
            (
                "lr 8e-3, q/k/v-input adapters at 0.25× lr",
                {"train.lr": 8e-3, "train.lr_mult": {"*.attn.qkv.adapter_in": 0.25}},
            ),
            (
                "lr 1.6e-2, q/k/v-input adapters at 0.25× lr",
                {"train.lr": 1.6e-2, "train.lr_mult": {"*.attn.qkv.adapter_in": 0.25}},
            ),
        ],
    ),
    "temporal_embedding": (
        "Temporal embedding",
        [
            ("on (recipe)", {}),
            ("off", {"model.temporal_embedding": False}),
        ],
    ),
    "lr": (
        "Learning rate (batch 16, AdamW, the recipe's warm-up, cosine)",
        [
            ("1e-3", {"train.lr": 1e-3}),
            ("2e-3", {"train.lr": 2e-3}),
            ("4e-3 (recipe)", {}),
            ("8e-3", {"train.lr": 8e-3}),
        ],
    ),
    "epochs": (
        "Epochs",
        [
            ("5", {"train.epochs": 5}),
            ("10", {"train.epochs": 10}),
            ("20 (recipe)", {"train.epochs": 20}),
        ],
    ),
    "adapter_kind": (
        "Linear vs GELU adapters (GELU between down and up: cannot be merged)",
        [
            ("linear (recipe; merged at deployment)", {}),
            ("GELU (stays at inference)", {"_gelu": True}),
        ],
    ),
}
FAMILY_DATA = {"basic": ["--family", "basic", "--seed", "101"], "complex": ["--family", "complex", "--seed", "202"]}
FULL = {"seeds": [0, 1, 2], "train_per_class": 60, "val_per_class": 25, "epochs": None}
QUICK = {"seeds": [0], "train_per_class": 40, "val_per_class": 20, "epochs": 8}


def backbone_file() -> str:
    from zeroi2v.pretrain import cached_backbone

    return str(cached_backbone())


def recipe_value(dotted: str):
    from zeroi2v.config import load_config

    section, key = dotted.split(".")
    return getattr(getattr(load_config(RECIPE, [f"model.pretrained={backbone_file()}"]), section), key)


def make_data(work: Path, family: str, size: dict) -> Path:
    out = work / "data" / f"{family}_{size['train_per_class']}_{size['val_per_class']}"
    if not (out / "val.txt").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "zeroi2v",
                "synth",
                str(out),
                *FAMILY_DATA[family],
                "--train-per-class",
                str(size["train_per_class"]),
                "--val-per-class",
                str(size["val_per_class"]),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return out


def run_key(family: str, changes: dict, seed: int, size: dict) -> str:
    return json.dumps(
        {
            "family": family,
            "changes": changes,
            "seed": seed,
            "epochs": size["epochs"],
            "train_per_class": size["train_per_class"],
            "val_per_class": size["val_per_class"],
            "recipe": recipe_id(recipe=RECIPE),
        },
        sort_keys=True,
    )


def train_once(work: Path, data: Path, changes: dict, seed: int, size: dict, name: str) -> dict:
    """One `zeroi2v train configs/demo.yaml --set ...` run in a subprocess; its last val top-1."""
    changes = dict(changes)
    gelu = changes.pop("_gelu", False)
    sets = {
        "output": str(work / "runs" / name),
        "model.pretrained": backbone_file(),
        "data.root": str(data),
        "data.train_list": str(data / "train.txt"),
        "data.val_list": str(data / "val.txt"),
        "train.seed": seed,
        **({"train.epochs": size["epochs"]} if size["epochs"] else {}),
        **changes,
    }
    args = ["train", str(RECIPE), "--set", *[f"{k}={json.dumps(v)}" for k, v in sets.items()]]
    cmd = [sys.executable, "-m", "benchmarks.gelu_adapters" if gelu else "zeroi2v", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.time() - start
    metrics = Path(sets["output"]) / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    last = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or "val_top1" not in last:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"], "seconds": seconds}
    return {
        "top1": last["val_top1"],
        "train_loss": last["train_loss"],
        "seconds": round(seconds, 1),
        "epochs": last["epoch"],
        **(health(sets["output"]) if not gelu else {}),
    }


def health(run_dir: str) -> dict:
    """What a trained run's adapters do to the frozen network, on 16 validation clips: the largest gain
    of one adapter map ‖I + s·U·D‖₂ and the RMS of the residual stream after each block (a healthy
    run keeps it near the image model's; a diverged one grows it block after block)."""
    import torch

    from zeroi2v.adapters import LinearAdapter
    from zeroi2v.build import load_pretrained
    from zeroi2v.config import load_config
    from zeroi2v.data.build import make_dataset

    model = load_pretrained(run_dir).eval()
    gains = []
    for module in model.modules():
        if isinstance(module, LinearAdapter):
            m, _ = module.affine()
            gains.append(torch.linalg.matrix_norm(m.float(), 2).item())
    data = make_dataset(load_config(Path(run_dir) / "config.yaml"), model, "val")
    clips = torch.stack([data[i]["video"][0] for i in range(0, len(data), max(1, len(data) // 16))][:16])
    rms = []
    hooks = [
        b.register_forward_hook(lambda _m, _i, out: rms.append(out.pow(2).mean().sqrt().item()))
        for b in model.backbone.blocks
    ]
    with torch.no_grad():
        model(clips)
    for h in hooks:
        h.remove()
    return {"max_adapter_gain": round(max(gains, default=1.0), 2), "residual_rms": [round(r, 2) for r in rms]}


def inference_cost() -> dict:
    """Params, FLOPs and paired CPU speed of the deployed models: linear adapters are folded (the plain
    image model's cost), GELU adapters stay (the cost of the adapters in every block)."""
    import torch

    from benchmarks.gelu_adapters import with_gelu_adapters
    from zeroi2v.model import count_flops, count_params, create_model
    from zeroi2v.pretrain import BACKBONE, TIMM_KWARGS
    from zeroi2v.reparam import reparameterize
    from zeroi2v.timing import relative_speeds

    torch.manual_seed(0)
    frames, offsets = recipe_value("model.num_frames"), recipe_value("model.head_offsets")
    model = create_model(BACKBONE, num_frames=frames, num_classes=8, head_offsets=offsets, **TIMM_KWARGS).eval()
    for p in model.parameters():  # trained-like adapters (zero-initialised ones would fold to nothing)
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    merged = reparameterize(model)
    gelu = with_gelu_adapters(model)
    plain = create_model(
        BACKBONE,
        num_frames=frames,
        num_classes=8,
        head_offsets=(),
        adapter_ratio=0.0,
        temporal_embedding=False,
        **TIMM_KWARGS,
    ).eval()
    clip = torch.randn(16, 3, frames, TIMM_KWARGS["img_size"], TIMM_KWARGS["img_size"])
    speeds = relative_speeds({"plain": plain, "linear": merged, "gelu": gelu}, clip, rounds=15, repeats=5)
    return {
        name: {
            "params": count_params(m),
            "flops": count_flops(m),
            "speed_ratio": speeds[name]["ratio"],
            "speed_range": [speeds[name]["ratio_min"], speeds[name]["ratio_max"]],
        }
        for name, m in (("plain", plain), ("linear", merged), ("gelu", gelu))
    }


def recipe_differences(a: Path, b: Path) -> str:
    """'section.key A (now B)' for every setting recipe files a and b disagree on."""
    import yaml

    from zeroi2v.config import flatten

    flat = [flatten(yaml.safe_load(path.read_text())) for path in (a, b)]
    keys = sorted(k for k in set(flat[0]) | set(flat[1]) if flat[0].get(k) != flat[1].get(k))
    return "; ".join(f"{k} {flat[0].get(k)} (now {flat[1].get(k)})" for k in keys) or "nothing"


def fmt(values: list[float], wanted: int = 0) -> str:
    """Mean ± std in %; a cell resting on fewer seeds than the study asked for says how many."""
    if not values:
        return "not run"
    mean = 100 * statistics.mean(values)
    text = f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"
    if len(values) < wanted:
        return f"{text} ({len(values)} of {wanted} seeds)"
    return f"{text} (1 seed)" if len(values) == 1 else text


def write_doc(
    path: Path,
    results: dict,
    groups: list[str],
    families: list[str],
    size: dict,
    seeds: list[int],
    skipped: dict,
    cost: dict | None,
    command: str,
    recipe_epochs: int,
) -> str:
    import torch

    epochs = size["epochs"] or recipe_epochs
    lines = [
        "# Ablations (generated)",
        "",
        f"Generated by `{command}` on {platform.platform()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}; do not edit by hand.",
        "",
        f"Every row is `{RECIPE.name}` (the demo's recipe: frozen image-pretrained demo backbone "
        f"`{builtin_weights_path().name}` sha256 {backbone_sha256()[:12]}, 8 frames, "
        f"Δt {recipe_value('model.head_offsets')}, adapter scale {recipe_value('model.adapter_scale'):g}, "
        f"lr {recipe_value('train.lr'):g}, warm-up {recipe_value('train.warmup_epochs'):g} epochs, batch "
        f"{recipe_value('train.batch_size')}) with exactly the change in its first column, trained with "
        "`zeroi2v train` and scored by its final validation top-1 (%, one centre view). Two synthetic "
        "motion families from `zeroi2v synth`, 8 classes in time-reversed pairs each (frame averaging "
        "cannot tell a pair apart: at most 50%): `basic` (the demo's motions) and `complex` (rotation cw/ccw, "
        "diagonal motion, approach/recede zoom, distractors, pixel noise), which the recipe was not "
        "tuned on.",
        "",
        f"**What was run:** seeds {', '.join(map(str, seeds))} (mean ± std over the seeds that finished), "
        f"{size['train_per_class']} training and {size['val_per_class']} validation videos per class, "
        f"{epochs} epochs unless the row changes them. Cells read `not run` where this invocation had no "
        "time for them, and `(n of m seeds)` where it finished only some seeds.",
        "",
    ]
    shipped = ROOT / "configs" / "demo.yaml"
    if RECIPE.resolve() != shipped.resolve():
        lines += [
            f"**Recipe:** not the current `configs/demo.yaml` but another file (`--recipe`; here an earlier "
            f"version), which differs from it in: {recipe_differences(RECIPE, shipped)}. The numbers below "
            "are for that recipe.",
            "",
        ]
    left_out = [GROUPS[g][0].split(" (")[0].split(":")[0] for g in GROUPS if g not in groups]
    if left_out:
        lines += [
            f"**Not in this document** (groups of the full study this invocation did not run): "
            f"{'; '.join(left_out)}. `python -m benchmarks.ablations` runs them all.",
            "",
        ]
    for name in groups:
        title, rows = GROUPS[name]
        lines += [f"## {title}", ""]
        if name in skipped:
            lines += [f"_Not run: {skipped[name]}_", ""]
            continue
        head = "| change | " + " | ".join(f"{f} top-1 %" for f in families) + " |"
        sep = "|---|" + "---:|" * len(families)
        if name == "adapter_kind" and cost:
            head += " deployed params | deployed MFLOPs / clip | CPU speed vs plain image model (paired rounds) |"
            sep += "---:|---:|---|"
        if name == "stability":
            head += (
                f" largest adapter gain ‖I + s·U·D‖₂ ({families[0]}, seed {seeds[0]}) | residual RMS after each block |"
            )
            sep += "---:|---|"
        lines += [head, sep]
        for label, changes in rows:
            cells = []
            for family in families:
                vals = [
                    r["top1"]
                    for seed in seeds
                    if "top1" in (r := results.get(run_key(family, changes, seed, size), {}))
                ]
                cells.append(fmt(vals, len(seeds)))
            row = f"| {label} | " + " | ".join(cells) + " |"
            if name == "stability":
                h = results.get(run_key(families[0], changes, seeds[0], size), {})
                row += (
                    f" {h['max_adapter_gain']:.1f} | {', '.join(f'{r:.1f}' for r in h['residual_rms'])} |"
                    if "residual_rms" in h
                    else " not run | not run |"
                )
            if name == "adapter_kind" and cost:
                c = cost["gelu" if changes.get("_gelu") else "linear"]
                row += (
                    f" {c['params']:,} | {c['flops'] / 1e6:.1f} | {c['speed_ratio']:.2f}× "
                    f"({c['speed_range'][0]:.2f}–{c['speed_range'][1]:.2f}) |"
                )
            lines.append(row)
        lines.append("")
        if name == "adapter_kind" and cost:
            p = cost["plain"]
            lines += [
                f"Plain image model on the same 8 frames: {p['params']:,} params, {p['flops'] / 1e6:.1f} MFLOPs. "
                "Linear adapters fold into the frozen weights (`zeroi2v merge`), so the deployed model is the "
                "image model plus the T×D temporal embedding; GELU adapters must stay.",
                "",
            ]
    failures = [(json.loads(k), v["error"]) for k, v in results.items() if "error" in v]
    if failures:
        lines += ["## Runs that failed", ""]
        lines += [f"- {k['family']} {k['changes']} seed {k['seed']}: `{' '.join(e)}`" for k, e in failures]
        lines.append("")
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"smaller study: {QUICK}")
    parser.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(GROUPS))
    parser.add_argument("--families", nargs="+", choices=list(FAMILY_DATA), default=list(FAMILY_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every row (default: the recipe's)")
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--val-per-class", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=None, help="start no new run after this long")
    parser.add_argument("--work", default="/tmp/zeroi2v_ablations", help="scratch folder: videos, runs, results.json")
    parser.add_argument("--out", default=str(DOCS / "research" / "ablations.md"))
    parser.add_argument("--report-only", action="store_true", help="rewrite the document from the cache")
    parser.add_argument("--recipe", default=None, help="another recipe file to study (default: configs/demo.yaml)")
    args = parser.parse_args(argv)
    check_study_options(parser, args)
    if args.recipe and not Path(args.recipe).is_file():
        parser.error(f"--recipe {args.recipe}: no such file")
    return args


def study_size(args) -> tuple[dict, list[int]]:
    """Videos per class and epochs of every run, and the seeds (--quick or the full study, then the options)."""
    size = dict(QUICK if args.quick else FULL)
    for key in ("epochs", "train_per_class", "val_per_class"):
        if getattr(args, key):
            size[key] = getattr(args, key)
    seeds = size.pop("seeds")
    return size, args.seeds if args.seeds is not None else seeds


def run_study(args, work: Path, size: dict, seeds: list[int], skipped: dict) -> dict:
    """Every run not in the cache yet (until --max-minutes); the cache, with them."""
    cache = work / "results.json"
    results = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = []  # seed-major, then row by row with every family: a partial study has whole rows for seed 0
    for seed in seeds:
        for name in (g for g in args.groups if g not in skipped):
            for _, changes in GROUPS[name][1]:
                for family in args.families:
                    key = run_key(family, changes, seed, size)
                    if key not in results and all(t[0] != key for t in todo):
                        todo.append((key, family, changes, seed))
    print(f"{len(todo)} runs to do ({len(results)} cached)", flush=True)
    start = time.time()
    for i, (key, family, changes, seed) in enumerate(todo):
        if args.max_minutes and time.time() - start > 60 * args.max_minutes:
            print(f"--max-minutes reached: {len(todo) - i} runs left for a later invocation", flush=True)
            break
        data = make_data(work, family, size)
        name = f"{family}_s{seed}_{abs(hash(key)) % 10**8}"
        results = store(cache, key, train_once(work, data, changes, seed, size, name))
        print(f"[{i + 1}/{len(todo)}] {family} seed {seed} {changes}: {results[key]}", flush=True)
    return results


def shown_command(argv: list[str]) -> str:
    """The study's command: without the options that only say where and how long (--recipe: the document says it)."""
    shown, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
        elif a in ("--out", "--work", "--max-minutes", "--recipe"):
            skip = 1
        elif a != "--report-only":
            shown.append(a)
    return "python -m benchmarks.ablations" + (" " + " ".join(shown) if shown else "")


def main(argv=None) -> int:
    global RECIPE
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.recipe:
        RECIPE = Path(args.recipe).resolve()
    size, seeds = study_size(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    skipped = {}  # group -> why it was not run (write_doc says so)
    if args.report_only:
        cache = work / "results.json"
        results = json.loads(cache.read_text()) if cache.is_file() else {}
    else:
        results = run_study(args, work, size, seeds, skipped)
    cost = inference_cost() if "adapter_kind" in args.groups else None
    text = write_doc(
        Path(args.out),
        results,
        args.groups,
        args.families,
        size,
        seeds,
        skipped,
        cost,
        shown_command(argv),
        recipe_value("train.epochs"),
    )
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    raise SystemExit(main())
