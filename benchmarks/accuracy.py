"""Accuracy at equal budget, each method at its best learning rate from the same sweep: ZeroI2V vs
the peer baselines (AIM, ST-Adapter, joint space-time attention with a temporal position embedding)
vs frame averaging, on the frozen image-pretrained demo backbone and two synthetic motion families.

Every run is configs/demo.yaml (the demo's recipe) with only `model.method` (and the method's own
settings), `train.lr` and `train.seed` changed: same data, epochs, batch, schedule and augmentation.
Each method gets every lr of the sweep; its row reports the lr with the best mean top-1 over seeds
(chosen on the validation set, for every method alike) and the whole lr curve, so a method that
collapses somewhere in the range shows it. Each row also gives the deployed inference cost
(GFLOPs per clip: ZeroI2V merged).

Writes docs/bench/accuracy.{md,json,png} and re-assembles docs/benchmarks.md (generated).
Results are cached per run in WORK/results.json (an interrupted sweep continues; invocations for
different families may run side by side on one cache, e.g. one per core with OMP_NUM_THREADS=1,
and a last invocation with every family writes the tables from the cache).

    python -m benchmarks.accuracy [--lrs 2e-3 4e-3 8e-3 1.6e-2 3.2e-2] [--seeds 0 1 2] [--families basic complex]
    python -m benchmarks.accuracy --quick     # 1 seed, 2 lrs, fewer videos and epochs
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import DOCS, backbone_sha256, check_study_options, recipe_id, store
from zeroi2v.bench_report import assemble
from zeroi2v.build import load_pretrained
from zeroi2v.config import load_config
from zeroi2v.data.synthetic import make_motion_dataset
from zeroi2v.demo import RECIPE, run_config
from zeroi2v.fileio import atomic_write_json, atomic_write_text
from zeroi2v.model import count_flops
from zeroi2v.pretrain import cached_backbone
from zeroi2v.reparam import reparameterize
from zeroi2v.train import train

ROWS = {  # name -> config changes on top of configs/demo.yaml
    "ZeroI2V (STDHA + linear adapters + temporal emb.)": {},
    # the peers have no STDHA heads (their builders clear head_offsets; said here so the cache knows).
    # Each peer runs as its official code runs on motion data (Something-Something v2): AIM with T-Adapter-in
    # and adapter scale 1 (adapt-image-models' SSv2 config), ST-Adapter with two adapters per block at 0.5·D
    # (st-adapter's SSv2 script). The one-adapter placement (model.st_adapter_positions: [attn]) is in the cost table.
    "AIM (temporal attention pass + GELU adapters; official SSv2 setting) [baseline]": {
        "model.method": "aim",
        "model.adapter_scale": 1.0,
        "model.head_offsets": [],
    },
    "ST-Adapter ×2 (temporal conv adapters before attention and MLP, 0.5·D; official SSv2 setting) [baseline]": {
        "model.method": "st_adapter",
        "model.st_adapter_positions": ["attn", "mlp"],
        "model.adapter_ratio": 0.5,
        "model.head_offsets": [],
    },
    "joint space-time attention + temporal pos. emb. + linear adapters [baseline]": {
        "model.method": "joint",
        "model.head_offsets": [],
    },
    "frame averaging (linear adapters only)": {"model.head_offsets": [], "model.temporal_embedding": False},
}
FAMILIES = {"basic": {"family": "basic", "seed": 101}, "complex": {"family": "complex", "seed": 202}}
# 150 runs of ~1.5 minutes on 2 CPU cores (side-by-side invocations, e.g. one per family: ~2 hours).
# The lrs bracket every method's best: each has a lower and a higher neighbour (the Markdown says if not).
FULL = {
    "lrs": [2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2],
    "seeds": [0, 1, 2],
    "train_per_class": 40,
    "val_per_class": 20,
    "epochs": 10,
}
QUICK = {"lrs": [2e-3, 4e-3], "seeds": [0], "train_per_class": 40, "val_per_class": 20, "epochs": 8}


def deployed_gflops(run_dir: str) -> float:
    model = load_pretrained(run_dir)
    if model.config.method == "zeroi2v":
        model = reparameterize(model, atol=1e-3)
    return count_flops(model) / 1e9


def lr_chart(results: list[dict], families: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 3.8), squeeze=False)
    for ax, family in zip(axes[0], families, strict=False):
        for r in results:
            curve = r["families"].get(family, {}).get("curve", {})
            if curve:
                lrs = sorted(curve, key=float)
                ax.plot([float(lr) for lr in lrs], [100 * curve[lr] for lr in lrs], "o-", label=r["short"])
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("val top-1 % (mean over seeds)")
        ax.set_ylim(0, 102)
        ax.set_title(f"{family} family")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("accuracy vs learning rate, frozen demo backbone, equal epochs")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# Published Something-Something v2 top-1 % at equal backbone (CLIP): (backbone, frames) -> ZeroI2V, ST-Adapter, AIM
PUBLISHED_SSV2 = {
    ("ViT-B/16", 8): ("67.7", "67.1", "66.4"),
    ("ViT-L/14", 8): ("≈70.1", "≈70.0", "≈67.6"),
    ("ViT-L/14", 32): ("72.2", "72.3", "–"),
}


def published_section() -> list[str]:
    """The peers' published SSv2 numbers, next to our toy table."""
    lines = [
        "",
        "### Published numbers at equal backbone (Something-Something v2, CLIP)",
        "",
        "| backbone, frames | ZeroI2V | ST-Adapter | AIM |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {net}, {t} | {' | '.join(tops)} |" for (net, t), tops in PUBLISHED_SSV2.items()]
    return lines + [
        "",
        'Top-1 % on the SSv2 validation set as published: the ZeroI2V paper ("ZeroI2V: Zero-Cost Adaptation of '
        'Pre-trained Transformers from Image to Video", ECCV 2024) and its SSv2 comparison figure (values '
        "marked ≈ are read off that figure), and the peers' own papers and repositories (\"AIM: Adapting Image "
        'Models for Efficient Video Action Recognition", ICLR 2023, repository adapt-image-models; '
        '"ST-Adapter: Parameter-Efficient Image-to-Video Transfer Learning", NeurIPS 2022, repository '
        "st-adapter). At equal backbone ZeroI2V is level with ST-Adapter (0.6 points ahead at ViT-B/16, "
        "0.1 behind at ViT-L/14 with 32 frames) and ahead of AIM, and it alone adds no inference cost.",
    ]


def toy_section(recipe_cfg) -> list[str]:
    """What the synthetic comparison can and cannot show, from the recipe's own numbers."""
    m = recipe_cfg.model
    kw = m.timm_kwargs
    grid = recipe_cfg.data.img_size // kw["patch_size"]
    temporal = len(m.head_offsets)
    heads = "every head" if temporal == kw["num_heads"] else f"{temporal} of {kw['num_heads']} heads"
    offsets = ", ".join(f"{o:+d}" for o in m.head_offsets)
    return [
        "",
        "### What this toy setting can and cannot show",
        "",
        f"The backbone is a {kw['depth']}-block ViT, {kw['embed_dim']} wide with {kw['num_heads']} heads, on "
        f"{recipe_cfg.data.img_size}-pixel frames cut into a {grid}×{grid} grid of {kw['patch_size']}-pixel patches "
        f"({grid * grid} patch tokens and a class token), image-pretrained on procedural stills "
        "(`python -m zeroi2v.pretrain`), not CLIP; the recipe makes "
        f"{heads} of every block temporal (Δt {offsets}), where the published ViT-B/16 and ViT-L/14 settings "
        "make 2 to 7 of 12 or 16 heads temporal and keep the rest spatial. So the table can show which designs "
        "model time at all (the two classes of a pair differ only in the order of their frames), how each "
        "method's accuracy moves with the learning rate, and what each costs at inference. It cannot show "
        "the ranking on real video at CLIP scale, and it does not reproduce the published numbers above: it "
        "is a property of this setting, not a measurement of the methods on SSv2. On the complex family the "
        "pair that separates ZeroI2V from ST-Adapter is the sense of rotation, clockwise against "
        "counter-clockwise (per-class counts in `docs/research/stability.md`). A temporal head keeps the image "
        "model's attention pattern and only takes its keys and values from another frame. This backbone's "
        "heads attend by content, not by position (they put about as much attention on a patch's own place "
        "as uniform attention would, `docs/bench/attention_locality.md`), so a temporal head reads a summary "
        "of the neighbouring frame. The sense of a turn is a small change of heading at the same place, "
        "which ST-Adapter's depth-wise temporal convolution sees directly: it compares each patch with the "
        "same patch one frame away. Image ViTs trained on natural images, CLIP among them, have local heads "
        "in their early blocks; for how the methods compare there, the published numbers are the evidence.",
    ]


def bracket_line(results: list[dict], families: list[str], lrs: list[float]) -> str:
    """Whether every method's best lr has a lower and a higher neighbour in the sweep."""
    edges = {f"{min(lrs):g}", f"{max(lrs):g}"}
    outside = [
        f"{r['short']} on {f} ({r['families'][f]['best_lr']})"
        for r in results
        for f in families
        if f in r["families"] and r["families"][f]["best_lr"] in edges
    ]
    if not outside:
        return "Every method's best lr has a lower and a higher neighbour in the sweep."
    return f"Best lr at the edge of the sweep, so the best may lie outside it (widen `--lrs`): {'; '.join(outside)}."


def main() -> int:  # noqa: C901 (to split once the sweep's rows and lrs settle)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"smaller sweep: {QUICK}")
    parser.add_argument("--lrs", type=float, nargs="+", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: configs/demo.yaml's)")
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--val-per-class", type=int, default=None)
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--max-minutes", type=float, default=None, help="start no new run after this long")
    parser.add_argument("--out", default="/tmp/zeroi2v_accuracy", help="scratch folder for videos, runs, cache")
    parser.add_argument("--backbone", default=None, help="pretrained demo backbone file (default: the shipped one)")
    parser.add_argument("--docs", default=str(DOCS), help="folder of benchmarks.md (its bench/ gets the section)")
    args = parser.parse_args()
    check_study_options(parser, args)  # and, below, what only this sweep has
    if any(lr <= 0 for lr in args.lrs or []):
        parser.error(f"--lrs must all be > 0, got {args.lrs}")
    if args.backbone and not Path(args.backbone).is_file():
        parser.error(f"--backbone {args.backbone}: no such file")
    size = dict(QUICK if args.quick else FULL)
    for key in ("lrs", "seeds", "epochs", "train_per_class", "val_per_class"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    out, docs = Path(args.out), Path(args.docs)
    backbone = Path(args.backbone) if args.backbone else cached_backbone()
    # a row's runs are keyed by the recipe settings it uses: a change to a setting the row overrides
    # (e.g. the recipe's head_offsets, for the peers) keeps its runs
    recipes = {
        name: [recipe_id(ignore=("train.lr", "train.seed", *changes), backbone=backbone), changes]
        for name, changes in ROWS.items()
    }
    cache_file = out / "results.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    datasets = {
        family: make_motion_dataset(
            out / "data" / f"{family}_{size['train_per_class']}_{size['val_per_class']}",
            family=FAMILIES[family]["family"],
            seed=FAMILIES[family]["seed"],
            train_per_class=size["train_per_class"],
            val_per_class=size["val_per_class"],
            progress=False,
        )
        for family in args.families
    }

    def key(name, family, lr, seed):
        return json.dumps(
            [name, family, lr, seed, size["epochs"], size["train_per_class"], size["val_per_class"], recipes[name]]
        )

    # seed-major: a sweep stopped early (--max-minutes) has every method and lr for the first seeds
    began = time.time()
    rows = list(ROWS.items())
    for seed, (i, (name, changes)), family, lr in itertools.product(
        size["seeds"], enumerate(rows), args.families, size["lrs"]
    ):
        if key(name, family, lr, seed) in cache:
            continue
        if args.max_minutes and time.time() - began > 60 * args.max_minutes:
            print("--max-minutes reached: the tables show the runs done so far", flush=True)
            break
        run_name = f"row{i}_{family}_lr{lr:g}_s{seed}_{recipes[name][0]}"  # a new recipe: a new run
        cfg = run_config(
            out, datasets[family], backbone, run_name, {**changes, "train.lr": lr, "train.seed": seed}, size["epochs"]
        )
        start = time.time()
        metrics = train(cfg, progress=False)
        cache = store(
            cache_file,
            key(name, family, lr, seed),
            {"top1": metrics.get("val_top1", 0.0), "seconds": round(time.time() - start, 1), "dir": str(cfg.output)},
        )
        print(f"{name} | {family} | lr {lr:g} | seed {seed}: {100 * metrics.get('val_top1', 0.0):.1f}", flush=True)
    results = []
    for name, changes in ROWS.items():
        row = {"method": name, "short": name.split(" (")[0].split(" [")[0], "changes": changes, "families": {}}
        for family in args.families:
            per_seed = {
                f"{lr:g}": [cache[k]["top1"] for seed in size["seeds"] if (k := key(name, family, lr, seed)) in cache]
                for lr in size["lrs"]
            }
            curve = {lr: statistics.mean(tops) for lr, tops in per_seed.items() if tops}
            if not curve:
                continue
            best = max(curve, key=curve.get)
            row["families"][family] = {
                "curve": curve,
                "per_seed": per_seed,
                "best_lr": best,
                "top1": curve[best],
                "std": statistics.stdev(per_seed[best]) if len(per_seed[best]) > 1 else None,
                "seeds": len(per_seed[best]),
            }
            dirs = [cache[k]["dir"] for seed in size["seeds"] if (k := key(name, family, float(best), seed)) in cache]
            dirs = [d for d in dirs if Path(d, "config.yaml").is_file()]
            if "gflops" not in row and dirs:
                row["gflops"] = deployed_gflops(dirs[0])
        results.append(row)
    zero = results[0].get("gflops")
    recipe_cfg = load_config(RECIPE, [f"model.pretrained={backbone}"])
    lrs = ", ".join(f"{lr:g}" for lr in size["lrs"])
    epochs = size["epochs"] or "the recipe's"
    lines = [
        "# Accuracy at equal budget, each method at its best lr (synthetic motion, frozen backbone)",
        "",
        f"Generated by `python -m benchmarks.accuracy {' '.join(sys.argv[1:])}` "
        f"({platform.platform()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}). Frozen image-pretrained demo backbone (`{backbone.name}`, sha256 "
        f"{backbone_sha256(backbone)[:12]}, a 4-block "
        "ViT pretrained on procedural stills; below: what that can and cannot show). Every run is "
        "`configs/demo.yaml` (adapter scale "
        f"{recipe_cfg.model.adapter_scale:g}, warm-up {recipe_cfg.train.warmup_epochs:g} epochs, batch "
        f"{recipe_cfg.train.batch_size}, AdamW, cosine) with only the method (and its own settings), lr, seed, "
        f"epochs and data size changed: lr sweep {{{lrs}}}, seeds {size['seeds']}, {epochs} epochs, "
        f"{size['train_per_class']} training / {size['val_per_class']} validation videos per class, 8 classes "
        "in time-reversed pairs (frame averaging cannot tell a pair apart: at most 50%). `basic`: the demo's motions; "
        "`complex`: rotation, diagonal motion, approach/recede with distractors and noise. Best lr chosen by "
        "mean validation top-1, for every method alike. GFLOPs: one clip through the deployed model "
        "(ZeroI2V merged). The peers are initialised as their official code does and built with the model "
        "settings it uses for motion data (Something-Something v2; the training recipe stays the same for "
        "all): AIM with its T-Adapter-in and adapter scale 1; ST-Adapter ×2 with adapters before the "
        "attention and before the MLP of each block, 0.5·D wide (`model.st_adapter_positions: [attn]` with "
        "`model.adapter_ratio: 0.25` builds the one-adapter variant of the cost table).",
        "",
    ]
    head = "| method |" + "".join(f" {f}: best lr | {f}: top-1 % (mean ± std) |" for f in args.families)
    lines += [
        head + " inference GFLOPs / clip | vs ZeroI2V |",
        "|---|" + "---:|---:|" * len(args.families) + "---:|---:|",
    ]
    for r in results:
        cells = ""
        for f in args.families:
            fam = r["families"].get(f)
            if not fam:
                cells += " not run | not run |"
                continue
            std = f" ± {100 * fam['std']:.1f}" if fam["std"] is not None else ""
            few = f" ({fam['seeds']} of {len(size['seeds'])} seeds)" if fam["seeds"] < len(size["seeds"]) else ""
            cells += f" {fam['best_lr']} | {100 * fam['top1']:.1f}{std}{few} |"
        cost = f" {r['gflops']:.3f} | {r['gflops'] / zero:.2f}× |" if r.get("gflops") and zero else " | |"
        lines.append(f"| {r['method']} |{cells}{cost}")
    lines += [
        "",
        "Top-1 % at every lr (mean over seeds; a cell at chance, 12.5%, is a run that diverged: "
        "`docs/research/stability.md` explains why ZeroI2V did at lr 8e-3 before the recipe's adapter scale and "
        "warm-up were changed):",
        "",
        "| method | family | " + " | ".join(f"lr {lr:g}" for lr in size["lrs"]) + " |",
        "|---|---|" + "---:|" * len(size["lrs"]),
    ]
    for r in results:
        for f in args.families:
            curve = r["families"].get(f, {}).get("curve", {})
            lines.append(
                f"| {r['short']} | {f} | "
                + " | ".join(f"{100 * curve[f'{lr:g}']:.1f}" if f"{lr:g}" in curve else "not run" for lr in size["lrs"])
                + " |"
            )
    lines += ["", bracket_line(results, args.families, size["lrs"])]
    used = [
        cache[k]
        for name in ROWS
        for f in args.families
        for lr in size["lrs"]
        for seed in size["seeds"]
        if (k := key(name, f, lr, seed)) in cache
    ]
    carried = sorted({run["from"] for run in used if run.get("from")})
    if carried:
        lines += [
            "",
            f"{sum(bool(run.get('from')) for run in used)} of these {len(used)} runs were carried over "
            f"from an earlier sweep ({'; '.join(carried)}) because nothing their row uses has changed since "
            "(its settings, the recipe keys it does not override, its code).",
        ]
    lines += ["", "![accuracy vs learning rate](accuracy_lr.png)"]
    lines += published_section() + toy_section(recipe_cfg)
    (docs / "bench").mkdir(parents=True, exist_ok=True)
    lr_chart(results, args.families, docs / "bench" / "accuracy_lr.png")
    atomic_write_text(docs / "bench" / "accuracy.md", "\n".join(lines) + "\n")
    atomic_write_json(
        docs / "bench" / "accuracy.json", {"command": " ".join(sys.argv), "size": size, "results": results}
    )
    assemble(docs / "benchmarks.md")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
