"""`zeroi2v demo`: the whole method, end to end, on a CPU in minutes, with no downloads.

1. synthetic motion videos whose classes differ only in temporal order (real MP4 files, `zeroi2v synth`),
2. an image ViT pretrained on still images (shipped in the package; `python -m zeroi2v.pretrain`),
3. frozen-backbone training through the normal engine (`zeroi2v train`) with the recipe in
   configs/demo.yaml: ZeroI2V (STDHA + adapters + temporal embedding) vs frame averaging (same
   adapters, no temporal heads or embedding; `--probe` adds a linear probe), then the multi-view
   test of the ZeroI2V run (`zeroi2v eval`),
4. deployment: merge (verified on real clips), cost of the unmerged, merged and plain image model,
   ONNX export run with onnxruntime, predictions with class names (`merge`, `export`, `predict`),
5. `report.md` with tables, figures and the commands that rerun each step, in the output directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import timm
import torch

from zeroi2v.build import load_pretrained, save_pretrained
from zeroi2v.config import SHIPPED_CONFIGS, load_config
from zeroi2v.data import load_views, num_frames, read_frames
from zeroi2v.data.synthetic import make_motion_dataset
from zeroi2v.errors import UserError
from zeroi2v.eval import evaluate, predict
from zeroi2v.export import export_model
from zeroi2v.fileio import atomic_write, atomic_write_json, atomic_write_text
from zeroi2v.model import count_flops, count_params, create_model
from zeroi2v.plots import accuracy_bars, plt, training_curves
from zeroi2v.pretrain import BACKBONE, SHIPPED, TIMM_KWARGS, cached_backbone
from zeroi2v.reparam import reparameterize
from zeroi2v.timing import relative_speeds
from zeroi2v.train import exit_code, fit, interruption_message, plural

FRAMES = 8  # sampled from the 16-frame videos (uniform segments); configs/demo.yaml's model.num_frames
ROWS = {  # slug -> (name, config changes on top of configs/demo.yaml); the backbone is frozen in every row
    "zeroi2v": ("ZeroI2V (STDHA + adapters + temporal emb.)", {}),
    "averaging": (
        "frame averaging (adapters, no temporal heads)",
        {"model.head_offsets": [], "model.temporal_embedding": False},
    ),
}
PROBE_ROW = (
    "linear_probe",
    ("linear probe", {"model.head_offsets": [], "model.temporal_embedding": False, "model.adapter_ratio": 0.0}),
)
FULL_ROW = ("full_finetune", ("full fine-tuning (STDHA, reference)", {"model.freeze": False, "train.lr": 5e-4}))
SIZES = {
    "default": {"train_per_class": 60, "val_per_class": 25, "epochs": None},  # None: the recipe's epochs
    "tiny": {"train_per_class": 3, "val_per_class": 2, "epochs": 1},
}
TIMING = {"rounds": 7, "repeats": 5}
RECIPE = SHIPPED_CONFIGS / "demo.yaml"  # the demo's recipe (configs/demo.yaml in the repository)


DEMO_MARK = ".zeroi2v-demo"  # written first into --out: the folder is a demo's, which a rerun may overwrite
DEMO_OUTPUTS = (
    "merged",
    "model.onnx",
    "report.md",
    "summary.json",
    "accuracy.png",
    "frame_strip.png",
    "confusion_matrix.png",
)  # and curves_*.png, runs/<row>, data/


def run_config(
    out: Path,
    data: dict,
    backbone_file: Path,
    name: str,
    changes: dict,
    epochs: int | None = None,
    frames: int | None = None,
):
    """configs/demo.yaml with the demo's data, the backbone file and one row's changes, validated (the
    engine writes it to the run as config.yaml). Only what a user changes is set here: data paths,
    output (and the backbone file, which `pretrained: demo` names); the rest is the recipe."""
    overrides = {
        "output": str(out / "runs" / name),
        "model.pretrained": str(backbone_file),
        "data.root": data["root"],
        "data.train_list": data["train_list"],
        "data.val_list": data["val_list"],
    }
    if epochs:
        overrides["train.epochs"] = epochs
    if frames:
        overrides["model.num_frames"] = frames
    overrides.update(changes)
    return load_config(RECIPE, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="zeroi2v demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default="demo_output", help="output directory: new, empty or a previous demo's (default: demo_output)"
    )
    parser.add_argument("--tiny", action="store_true", help="toy size for smoke tests (seconds; accuracy meaningless)")
    parser.add_argument("--full", action="store_true", help="also train the full fine-tuning reference row")
    parser.add_argument("--probe", action="store_true", help="also train a linear probe row (no adapters)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs per row (default: configs/demo.yaml's)"
    )
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=None,
        help=f"training videos per class (default: {SIZES['default']['train_per_class']}; "
        f"--tiny: {SIZES['tiny']['train_per_class']})",
    )
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="pretrain the image backbone here (cached) instead of using the shipped one",
    )
    return parser.parse_args(argv)


def demo_size(args) -> dict:
    """Videos per class, epochs and frames of this demo (the recipe's, unless the options say otherwise)."""
    size = dict(SIZES["tiny" if args.tiny else "default"])
    recipe = load_config(RECIPE)
    size["epochs"] = args.epochs if args.epochs is not None else size["epochs"] or recipe.train.epochs
    size["train_per_class"] = args.train_per_class if args.train_per_class is not None else size["train_per_class"]
    size["frames"] = recipe.model.num_frames
    size["recipe"] = str(RECIPE)
    if size["epochs"] < 1 or size["train_per_class"] < 2:
        raise UserError("--epochs must be >= 1 and --train-per-class >= 2")
    return size


def prepare_out(out: Path) -> bool:
    """Make --out a demo's folder (never over files a demo did not write); True if a demo wrote it before."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out {out}: {e.strerror}") from None
    slugs = (*ROWS, PROBE_ROW[0], FULL_ROW[0])
    ours = (out / DEMO_MARK).is_file()
    if not ours:  # --out may be a folder with the user's own files (`--out .`): never write over them
        theirs = (
            [name for name in DEMO_OUTPUTS if (out / name).exists()]
            + sorted(p.name for p in out.glob("curves_*.png"))
            + [f"runs/{slug}" for slug in slugs if (out / "runs" / slug).exists()]
        )
        if theirs:
            raise UserError(
                f"--out {out} holds {', '.join(theirs[:4])} that no demo wrote; refusing to overwrite "
                "(choose a new or empty folder)"
            )
    atomic_write_text(out / DEMO_MARK, "zeroi2v demo output: a rerun replaces what the demo wrote here\n")
    for slug in slugs:  # a demo always starts over: its own runs only (other runs under runs/ stay)
        if (out / "runs" / slug).exists():
            shutil.rmtree(out / "runs" / slug)
    return ours


def require_onnxruntime() -> None:
    """The demo's deployment step runs the ONNX file with onnxruntime: say so before minutes of training."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("the demo exports to ONNX and runs it with onnxruntime: pip install 'zeroi2v[onnx]'") from None


def main(argv=None) -> int:
    args = parse_args(argv)
    size = demo_size(args)
    require_onnxruntime()
    t0 = time.time()
    out = Path(args.out)
    ours = prepare_out(out)

    print(f"[1/5] synthetic motion videos -> {out / 'data'}", flush=True)
    data = make_motion_dataset(
        out / "data",
        train_per_class=size["train_per_class"],
        val_per_class=size["val_per_class"],
        num_frames=16,
        size=32,
        force=ours,
    )
    print(f"      {len(data['classes'])} classes in time-reversed pairs: {', '.join(data['classes'])}")
    print("[2/5] image-pretrained backbone (no downloads)", flush=True)
    if args.pretrain or (args.tiny and not SHIPPED.is_file()):
        backbone = cached_backbone(**({"cache_dir": out / "cache", "steps": 20} if args.tiny else {"steps": 4000}))
    else:
        backbone = cached_backbone()
    pre_info = backbone.with_suffix(".json")
    pre_info = json.loads(pre_info.read_text()) if pre_info.is_file() else {}
    print(f"      {backbone}: held-out image accuracy {pre_info.get('held_out_accuracy', 'n/a')}")

    rows = {**ROWS, **dict([PROBE_ROW] if args.probe else []), **dict([FULL_ROW] if args.full else [])}
    results = train_rows(out, data, backbone, rows, size["epochs"])
    if isinstance(results, int):  # interrupted: the exit status
        return results
    zero_dir = results["zeroi2v"]["dir"]
    test = evaluate(zero_dir, progress=False)  # metrics.json, per-class accuracy, confusion matrix
    print(
        f"      zeroi2v eval: top-1 {100 * test['top1']:.1f}%, mean class accuracy "
        f"{100 * test['mean_class_accuracy']:.1f}% on {test['num_videos']} videos"
    )

    print("[4/5] deployment: merge, cost, ONNX, predictions", flush=True)
    deploy = deployment(out, zero_dir, data, **({"timing_rounds": 2, "timing_repeats": 1} if args.tiny else {}))
    print("[5/5] report", flush=True)
    seconds = time.time() - t0
    write_report(out, data, results, test, deploy, pre_info, size, seconds)
    headline(results, deploy)
    print(f"\nreport: {out / 'report.md'}  (demo took {seconds:.0f} s)")
    return 0


def train_rows(out: Path, data: dict, backbone: Path, rows: dict, epochs: int) -> dict | int:
    """Train every row; their results, or the exit status after Ctrl-C / SIGTERM (which stops the demo)."""
    print(f"[3/5] training {len(rows)} rows, {plural(epochs, 'epoch')} each, frozen image backbone", flush=True)
    results = {}
    for slug, (name, changes) in rows.items():
        print(f"      {name}", flush=True)
        cfg = run_config(out, data, backbone, slug, changes, epochs)
        run_dir = str(cfg.output)
        start = time.time()
        metrics = fit(cfg)
        if "interrupted" in metrics:
            print(
                f"{interruption_message(metrics)}; a rerun of the demo starts over (this row alone resumes "
                f"with `zeroi2v train {run_dir}/config.yaml`)",
                flush=True,
            )
            return exit_code(metrics["interrupted"])
        results[slug] = {
            "name": name,
            "top1": metrics.get("val_top1", 0.0),
            "top5": metrics.get("val_top5", 0.0),
            "trainable": count_params(load_pretrained(run_dir), trainable_only=True),
            "seconds": round(time.time() - start, 1),
            "dir": run_dir,
            "history": [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()],
        }
        print(f"      val top-1 {100 * results[slug]['top1']:.1f}% ({results[slug]['seconds']:.0f} s)", flush=True)
    return results


def deployment(
    out: Path, run_dir: str, data: dict, timing_rounds: int = TIMING["rounds"], timing_repeats: int = TIMING["repeats"]
) -> dict:
    """Merge, compare costs with the plain image model, export ONNX, predict: the numbers for the report."""

    model = load_pretrained(run_dir)
    cfg = load_config(Path(run_dir) / "config.yaml")
    val = [line.split() for line in Path(data["val_list"]).read_text().splitlines()]
    views = [
        load_views(
            Path(data["root"]) / rel,
            num_frames=model.num_frames,
            sampling=cfg.data.sampling,
            frame_interval=cfg.data.frame_interval,
            img_size=cfg.data.img_size,
            mean=model.data_config["mean"],
            std=model.data_config["std"],
        )
        for rel, _ in val[:16]
    ]
    clip = torch.cat(views)  # real validation clips
    merged = reparameterize(model, video=clip)
    merged_dir = out / "merged"
    save_pretrained(merged, merged_dir)
    for extra in ("classes.txt", "config.yaml"):
        shutil.copy(Path(run_dir) / extra, merged_dir / extra)

    # the plain image model on T frames, features averaged, one classifier: ZeroI2V with nothing added
    plain = create_model(
        BACKBONE,
        num_frames=model.num_frames,
        num_classes=model.num_classes,
        head_offsets=(),
        adapter_ratio=0.0,
        temporal_embedding=False,
        **TIMM_KWARGS,
    ).eval()
    timm_params = count_params(timm.create_model(BACKBONE, num_classes=model.num_classes, **TIMM_KWARGS))
    assert count_params(plain) == timm_params, "the plain baseline must be exactly timm's image model"
    models = {
        f"plain image ViT ({model.num_frames} frames)": plain,
        "ZeroI2V merged (deployed)": merged,
        "ZeroI2V unmerged (training)": model,
    }
    speeds = relative_speeds(models, clip, timing_rounds, timing_repeats)  # speeds relative to the plain model
    cost = {name: (count_params(m), count_flops(m), speeds[name]["clips_per_s"]) for name, m in models.items()}
    with torch.no_grad():
        same = bool(torch.equal(model(clip).argmax(-1), merged(clip).argmax(-1)))

    onnx_path = out / "model.onnx"
    info = export_model(merged_dir, onnx_path)
    classes = data["classes"]
    onnx_pred = onnx_top1(onnx_path, views[0], classes)
    picks = [val[i] for i in np.linspace(0, len(val) - 1, 3).round().astype(int)]
    preds = predict(merged_dir, [str(Path(data["root"]) / rel) for rel, _ in picks], topk=2)
    for p, (_, label) in zip(preds, picks, strict=False):
        p["true"] = classes[int(label)]
    unmerged = predict(run_dir, [p["video"] for p in preds], topk=2)
    same = same and [p["top"][0][0] for p in preds] == [p["top"][0][0] for p in unmerged]
    frame_strip(preds[0]["video"], preds[0], preds[0]["true"], out / "frame_strip.png")
    return {
        "merge_error": merged.merge_error,
        "cost": cost,
        "speeds": speeds,
        "onnx_error": info["error"],
        "onnx_weights": info["file_weights"],
        "onnx_prediction": onnx_pred,
        "onnx_true": classes[int(val[0][1])],
        "predictions": preds,
        "predictions_identical": same,
        "merged_dir": str(merged_dir),
        "onnx_path": str(onnx_path),
    }


def onnx_top1(path, views: torch.Tensor, classes: list[str]) -> str:
    """One prediction through onnxruntime alone (no torch model involved)."""
    import onnxruntime as ort  # the `onnx` extra (checked by require_onnxruntime)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: views.numpy()})
    return classes[int(logits.mean(0).argmax())]


def frame_strip(video, prediction: dict, truth: str, path) -> None:
    """The frames of one validation clip in a row, titled with the true and predicted class."""

    frames = read_frames(video, np.linspace(0, num_frames(video) - 1, 8).round().astype(int)).numpy()
    fig, axes = plt.subplots(1, len(frames), figsize=(10, 1.9))
    for i, (ax, frame) in enumerate(zip(axes, frames, strict=False)):
        ax.imshow(frame, interpolation="nearest")
        ax.set_title(f"t{i}", fontsize=7)
        ax.axis("off")
    name, p = prediction["top"][0]
    fig.suptitle(f"{Path(video).name}   true: {truth}   predicted: {name} ({100 * p:.0f}%)", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def write_report(
    out: Path, data: dict, results: dict, test: dict, deploy: dict, pre_info: dict, size: dict, seconds: float
) -> None:

    names = [r["name"] for r in results.values()]
    atomic_write(
        out / "accuracy.png",
        lambda tmp: accuracy_bars(
            names, [r["top1"] for r in results.values()], tmp, title="val top-1, motion task (frozen image backbone)"
        ),
    )
    for slug, r in results.items():
        atomic_write(out / f"curves_{slug}.png", lambda tmp, h=r["history"]: training_curves(h, tmp))
    zero_dir = Path(results["zeroi2v"]["dir"])
    if (zero_dir / "confusion_matrix.png").is_file():
        shutil.copy(zero_dir / "confusion_matrix.png", out / "confusion_matrix.png")

    lines = report_accuracy(data, results, test, pre_info, size)
    lines += report_deployment(deploy)
    lines += report_reruns(out, data, results, deploy, size, seconds)
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "summary.json", summary(results, test, deploy, size, seconds))


def report_accuracy(data: dict, results: dict, test: dict, pre_info: dict, size: dict) -> list[str]:
    acc = pre_info.get("held_out_accuracy", {})
    lines = [
        "# zeroi2v demo report",
        "",
        f"**Task.** {len(data['classes'])} classes of synthetic videos in time-reversed pairs "
        f"({', '.join(data['classes'])}), random shapes, colours, textures, positions and speeds; "
        f"{size['train_per_class']} training and {size['val_per_class']} validation videos per class, "
        f"{size.get('frames', FRAMES)} frames per clip. The two classes of a pair show the same set of frames, "
        "so a model that ignores frame order (frame averaging, linear probe) cannot beat ~50%.",
        "",
        f"**Backbone.** A 4-block timm ViT ({pre_info.get('backbone', '?')} with {pre_info.get('timm_kwargs', {})}) "
        f"pretrained on still images only ({pre_info.get('steps', '?')} steps; held-out attribute accuracy "
        + ", ".join(f"{k} {100 * v:.0f}%" for k, v in acc.items())
        + "), frozen in every row.",
        "",
        f"**Recipe.** `configs/demo.yaml` ({plural(size['epochs'], 'epoch')}; every row is that file with only "
        "the row's change: no temporal heads or temporal embedding for frame averaging, and no adapters either for the "
        "linear probe). To train on your own small motion dataset, copy it and set only `data.root`, "
        "`data.train_list`, `data.val_list`, `model.num_classes` and `output`.",
        "",
        "## Accuracy",
        "",
        "| method | val top-1 | val top-5 | trainable params | train time (s) |",
        "|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(
            f"| {r['name']} | {100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% | {r['trainable']:,} | {r['seconds']} |"
        )
    lines += [
        "",
        f"`zeroi2v eval` of the ZeroI2V run: top-1 {100 * test['top1']:.1f}%, mean class accuracy "
        f"{100 * test['mean_class_accuracy']:.1f}% ({test['num_videos']} videos, {test['views']} views).",
        "",
        "![accuracy](accuracy.png)",
        "",
        "![confusion matrix of ZeroI2V](confusion_matrix.png)",
        "",
    ]
    lines += [f"![training curves: {r['name']}](curves_{slug}.png)" for slug, r in results.items()]
    return lines


def report_deployment(deploy: dict) -> list[str]:
    lines = []
    lines += [
        "",
        "## Deployment",
        "",
        f"Merged (adapters folded into the frozen weights), verified on 16 real validation clips: max abs "
        f"logit error {deploy['merge_error']:.2e}; merged and unmerged predictions identical: "
        f"{deploy['predictions_identical']}.",
        "",
        f"Speed: the models take turns call by call in {next(iter(deploy['speeds'].values()))['rounds']} "
        "paired rounds (order rotated each round), so background load hits them alike; the ratio to the "
        "plain image model is the median of the per-round ratios, with the lowest and highest round.",
        "",
        "| model | params | MFLOPs / clip | clips/s (CPU, median) | speed vs plain image model (median, range) |",
        "|---|---|---|---|---|",
    ]
    for name, (params, flops, speed) in deploy["cost"].items():
        sp = deploy["speeds"][name]
        lines.append(
            f"| {name} | {params:,} | {flops / 1e6:.2f} | {speed:.1f} | "
            f"{sp['ratio']:.3f}× ({sp['ratio_min']:.3f}–{sp['ratio_max']:.3f}) |"
        )
    lines += [
        "",
        f"ONNX: `{deploy['onnx_path']}`, onnxruntime vs PyTorch max abs error {deploy['onnx_error']:.2e}, "
        f"{deploy['onnx_weights']:,} float weights in the file; onnxruntime alone predicts "
        f"**{deploy['onnx_prediction']}** for the first validation video (true: {deploy['onnx_true']}).",
        "",
        "`zeroi2v predict` with the merged model:",
        "",
    ]
    for p in deploy["predictions"]:
        top = ", ".join(f"{c} {100 * q:.0f}%" for c, q in p["top"])
        lines.append(f"- `{Path(p['video']).name}` (true: {p['true']}): {top}")
    return lines


def report_reruns(out: Path, data: dict, results: dict, deploy: dict, size: dict, seconds: float) -> list[str]:
    zero_dir = Path(results["zeroi2v"]["dir"])
    lines = []
    lines += [
        "",
        "![frame strip](frame_strip.png)",
        "",
        "## Rerun each step",
        "",
        "```",
        f"zeroi2v synth {data['root']} --train-per-class {size['train_per_class']} "
        f"--val-per-class {size['val_per_class']} --frames 16 --size 32",
        "python -m zeroi2v.pretrain   # regenerates the shipped image backbone (~20 min on 2 cores)",
    ]
    for slug, r in results.items():
        lines.append(f"zeroi2v train {Path(r['dir']) / 'config.yaml'} --set output={out / 'rerun' / slug}")
    lines += [
        f"zeroi2v eval {zero_dir}",
        f"zeroi2v merge {zero_dir} {deploy['merged_dir']}",
        f"zeroi2v export {deploy['merged_dir']} {deploy['onnx_path']}",
        f"zeroi2v predict {deploy['merged_dir']} " + " ".join(p["video"] for p in deploy["predictions"]),
        "```",
        "",
        f"Demo total: {seconds:.0f} s.",
    ]
    return lines


def summary(results: dict, test: dict, deploy: dict, size: dict, seconds: float) -> dict:
    return {
        "rows": {slug: {k: v for k, v in r.items() if k != "history"} for slug, r in results.items()},
        "eval": test,
        "merge_error": deploy["merge_error"],
        "onnx_error": deploy["onnx_error"],
        "predictions_identical": deploy["predictions_identical"],
        "seconds": round(seconds, 1),
        "recipe": size.get("recipe"),
        "epochs": size["epochs"],
        "cost": {
            k: {
                "params": v[0],
                "flops": v[1],
                "clips_per_s": round(v[2], 2),
                "speed_ratio": round(deploy["speeds"][k]["ratio"], 4),
                "speed_ratio_range": [
                    round(deploy["speeds"][k]["ratio_min"], 4),
                    round(deploy["speeds"][k]["ratio_max"], 4),
                ],
            }
            for k, v in deploy["cost"].items()
        },
    }


def headline(results: dict, deploy: dict) -> None:
    print("\n" + "=" * 78)
    print(f"{'method (frozen image-pretrained ViT)':50s}{'val top-1':>12s}{'trainable':>14s}")
    for r in results.values():
        print(f"{r['name']:50s}{100 * r['top1']:>11.1f}%{r['trainable']:>14,d}")
    print("-" * 78)
    rounds = next(iter(deploy["speeds"].values()))["rounds"]
    print(f"{'model':30s}{'params':>10s}{'MFLOPs/clip':>13s}{'clips/s':>9s}  speed vs plain ({rounds} paired rounds)")
    for name, (params, flops, speed) in deploy["cost"].items():
        sp = deploy["speeds"][name]
        print(
            f"{name:30s}{params:>10,d}{flops / 1e6:>13.2f}{speed:>9.0f}  {sp['ratio']:.2f}× "
            f"(rounds {sp['ratio_min']:.2f}–{sp['ratio_max']:.2f})"
        )
    print(
        f"merge max abs error {deploy['merge_error']:.1e} | ONNX max abs error {deploy['onnx_error']:.1e} | "
        f"merged == unmerged predictions: {deploy['predictions_identical']}"
    )
    print("=" * 78)


if __name__ == "__main__":
    raise SystemExit(main())
