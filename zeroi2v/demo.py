"""`zeroi2v demo`: the whole method, end to end, on a CPU in minutes, with no downloads.

1. an image ViT pretrained on still images (shipped in the package, or pretrained and cached),
2. synthetic motion videos whose classes differ only in temporal order (real MP4 files),
3. frozen-backbone training through the normal engine: ZeroI2V (STDHA + adapters + temporal
   embedding) vs frame averaging (same adapters, no temporal heads/embedding) vs a linear probe,
4. deployment: merge (verified), cost of unmerged / merged / plain image model, ONNX export run with
   onnxruntime, predictions with class names,
5. `report.md` with tables and figures in the output directory.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from zeroi2v.config import load_config

ROWS = {  # name -> config changes (frozen image backbone in every row)
    "ZeroI2V (STDHA + adapters + temporal emb.)": {},
    "frame averaging (adapters only)": {"model.head_offsets": [], "model.temporal_embedding": False},
    "linear probe": {"model.head_offsets": [], "model.temporal_embedding": False, "model.adapter_ratio": 0.0},
}
FULL_ROW = ("full fine-tuning (STDHA, reference)", {"model.freeze": False})


def run_config(out: Path, data: dict, backbone_file: Path, name: str, changes: dict, epochs: int, frames: int) -> dict:
    from zeroi2v.pretrain import BACKBONE, TIMM_KWARGS

    base = {
        "output": str(out / "runs" / name),
        "model": {"backbone": BACKBONE, "pretrained": str(backbone_file), "num_frames": frames,
                  "head_offsets": [-1, 1], "adapter_scale": 1.0, "head_dropout": 0.0,
                  "timm_kwargs": {k: v for k, v in TIMM_KWARGS.items() if k != "img_size"}},
        "data": {"root": data["root"], "train_list": data["train_list"], "val_list": data["val_list"],
                 "sampling": "uniform", "img_size": TIMM_KWARGS["img_size"], "test_clips": 1, "test_crops": 1,
                 "rand_augment": False, "flip": False, "crop_scale": [0.8, 1.0]},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 2.0e-3, "warmup_epochs": 1, "num_workers": 1,
                  "weight_decay": 0.05, "seed": 0},
    }
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in changes.items()], base=base)


def throughput(model, clip, repeats: int = 5) -> float:
    """Clips per second, median of `repeats` timed runs after a warm-up."""
    model.eval()
    with torch.no_grad():
        model(clip)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(clip)
            times.append(time.perf_counter() - start)
    return clip.shape[0] / statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="zeroi2v demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_output", help="output directory (default: demo_output)")
    parser.add_argument("--tiny", action="store_true", help="toy size, for smoke tests (seconds, not minutes)")
    parser.add_argument("--full", action="store_true", help="also train the full fine-tuning reference row")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    from zeroi2v.data.synthetic import make_motion_dataset
    from zeroi2v.pretrain import cached_backbone

    t0 = time.time()
    out = Path(args.out)
    if (out / "runs").exists():
        shutil.rmtree(out / "runs")  # a demo always starts over
    out.mkdir(parents=True, exist_ok=True)
    frames = 8
    epochs = args.epochs or (2 if args.tiny else 12)
    per_class = (6, 3) if args.tiny else (40, 12)
    print(f"[1/5] synthetic motion videos -> {out / 'data'}")
    data = make_motion_dataset(out / "data", train_per_class=per_class[0], val_per_class=per_class[1],
                               num_frames=16, size=32)
    print("[2/5] image-pretrained backbone (no downloads)")
    backbone = cached_backbone(cache_dir=out / "cache", steps=30) if args.tiny else cached_backbone()
    pre_info = backbone.with_suffix(".json")
    pre_info = json.loads(pre_info.read_text()) if pre_info.is_file() else {}
    print(f"      {backbone}  held-out image accuracy: {pre_info.get('held_out_accuracy', 'n/a')}")

    from zeroi2v.train import train
    rows = dict(ROWS)
    if args.full:
        rows[FULL_ROW[0]] = FULL_ROW[1]
    results = {}
    for i, (name, changes) in enumerate(rows.items()):
        slug = ["zeroi2v", "averaging", "linear_probe", "full_finetune"][i]
        print(f"[3/5] training {name} ({epochs} epochs)")
        cfg = run_config(out, data, backbone, slug, changes, epochs, frames)
        start = time.time()
        metrics = train(cfg)
        from zeroi2v.model import load_pretrained
        model = load_pretrained(cfg["output"])
        trainable = sum(p.numel() for p in load_trainable(cfg))
        results[name] = {"slug": slug, "top1": metrics.get("val_top1", 0.0), "top5": metrics.get("val_top5", 0.0),
                         "trainable": trainable, "seconds": round(time.time() - start, 1), "dir": cfg["output"]}
        del model
        print(f"      val top-1 {100 * results[name]['top1']:.1f}%")

    print("[4/5] deployment: merge, cost, ONNX, predictions")
    deploy = deployment(out, results[next(iter(ROWS))]["dir"], data, frames)
    print("[5/5] report")
    write_report(out, data, results, deploy, pre_info, time.time() - t0)
    headline(results, deploy)
    print(f"\nreport: {out / 'report.md'}  (total {time.time() - t0:.0f} s)")
    return 0


def load_trainable(cfg) -> list:
    from zeroi2v.config import model_kwargs
    from zeroi2v.model import create_model
    model = create_model(**{**model_kwargs(cfg, num_classes=8), "pretrained": None})
    return [p for p in model.parameters() if p.requires_grad]


def deployment(out: Path, run_dir: str, data: dict, frames: int) -> dict:
    import timm

    from zeroi2v.eval import predict
    from zeroi2v.export import check_onnx, export_model
    from zeroi2v.model import count_flops, count_params, load_pretrained, save_pretrained
    from zeroi2v.pretrain import BACKBONE, TIMM_KWARGS
    from zeroi2v.reparam import reparameterize

    model = load_pretrained(run_dir)
    val = [line.split() for line in Path(data["val_list"]).read_text().splitlines()]
    from zeroi2v.data import load_views
    cfg = load_config(Path(run_dir) / "config.yaml")
    d = cfg["data"]
    views = [load_views(Path(data["root"]) / rel, num_frames=frames, sampling=d["sampling"], frame_interval=1,
                        img_size=d["img_size"], mean=model.data_config["mean"], std=model.data_config["std"])
             for rel, _ in val[:16]]
    clip = torch.cat(views)  # real validation clips
    merged = reparameterize(model, video=clip)
    merged_dir = out / "merged"
    save_pretrained(merged, merged_dir)
    for extra in ("classes.txt", "config.yaml"):
        shutil.copy(Path(run_dir) / extra, merged_dir / extra)
    plain = timm.create_model(BACKBONE, pretrained=False, num_classes=model.num_classes, **TIMM_KWARGS).eval()
    frames_batch = clip.transpose(1, 2).flatten(0, 1)  # the same frames as images for the plain model
    # interleaved timing rounds, medians
    speeds = {"plain": [], "merged": [], "unmerged": []}
    for _ in range(3):
        speeds["plain"].append(throughput(plain, frames_batch) / frames)
        speeds["merged"].append(throughput(merged, clip))
        speeds["unmerged"].append(throughput(model, clip))
    cost = {
        "plain image model (T frames)": (count_params(plain), count_flops(plain, num_frames=frames), statistics.median(speeds["plain"])),
        "ZeroI2V merged": (count_params(merged), count_flops(merged), statistics.median(speeds["merged"])),
        "ZeroI2V unmerged": (count_params(model), count_flops(model), statistics.median(speeds["unmerged"])),
    }
    info = export_model(merged_dir, out / "model.onnx")
    onnx_err = check_onnx(merged, out / "model.onnx")
    paths = [str(Path(data["root"]) / rel) for rel, _ in val[::max(1, len(val) // 3)][:3]]
    preds_merged = predict(merged_dir, paths, topk=2)
    preds_unmerged = predict(run_dir, paths, topk=2)
    with torch.no_grad():
        same = torch.equal(model(clip).argmax(-1), merged(clip).argmax(-1))
    onnx_pred = onnx_top1(out / "model.onnx", views[0], Path(run_dir) / "classes.txt")
    strip = out / "frame_strip.png"
    frame_strip(Path(data["root"]) / val[0][0], preds_merged[0], val[0], data["classes"], strip)
    return {"merge_error": merged.merge_error, "cost": cost, "onnx_error": onnx_err, "onnx_weights": info["file_weights"],
            "predictions": preds_merged, "predictions_identical": preds_merged == preds_unmerged and same,
            "onnx_prediction": onnx_pred, "merged_dir": str(merged_dir)}


def onnx_top1(path, views, classes_file) -> str:
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"video": views.numpy()})
    classes = classes_file.read_text().split("\n")
    return classes[int(logits.mean(0).argmax())]


def frame_strip(video, prediction, truth, classes, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zeroi2v.data import num_frames, read_frames
    n = num_frames(video)
    frames = read_frames(video, np.linspace(0, n - 1, 8).round().astype(int)).numpy()
    fig, axes = plt.subplots(1, 8, figsize=(10, 1.8))
    for ax, frame in zip(axes, frames):
        ax.imshow(frame)
        ax.axis("off")
    top = prediction["top"][0]
    fig.suptitle(f"true: {classes[int(truth[1])]}   predicted: {top[0]} ({100 * top[1]:.0f}%)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out: Path, data: dict, results: dict, deploy: dict, pre_info: dict, seconds: float) -> None:
    from zeroi2v.plots import accuracy_bars

    accuracy_bars(list(results), [r["top1"] for r in results.values()], out / "accuracy.png",
                  title="val top-1 on the motion task (frozen image backbone)")
    for r in results.values():
        src = Path(r["dir"]) / "training_curves.png"
        if src.is_file():
            shutil.copy(src, out / f"curves_{r['slug']}.png")
    lines = ["# zeroi2v demo report", "",
             f"Synthetic motion task: {len(data['classes'])} classes in time-reversed pairs "
             f"({', '.join(data['classes'])}); frame averaging cannot separate a pair (~50% ceiling).",
             f"Backbone: a small timm ViT pretrained on still images ({pre_info.get('steps', '?')} steps; held-out "
             f"attribute accuracy {pre_info.get('held_out_accuracy', 'n/a')}), frozen in every row below.", "",
             "## Accuracy", "", "| method | val top-1 | val top-5 | trainable params | train time (s) |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% | {r['trainable']:,} | {r['seconds']} |")
    lines += ["", "![accuracy](accuracy.png)", ""]
    lines += [f"![curves {r['slug']}](curves_{r['slug']}.png)" for r in results.values()]
    lines += ["", "## Deployment", "", f"Merge verified on real validation clips: max abs error {deploy['merge_error']:.2e}.",
              f"ONNX (onnxruntime vs PyTorch) max abs error {deploy['onnx_error']:.2e}; float weights in the file: "
              f"{deploy['onnx_weights']:,}; onnxruntime's top-1 on the first validation video: {deploy['onnx_prediction']}.",
              f"Merged and unmerged predictions identical: {deploy['predictions_identical']}.", "",
              "| model | params | FLOPs / clip | clips/s (CPU, median) |", "|---|---|---|---|"]
    for name, (params, flops, speed) in deploy["cost"].items():
        lines.append(f"| {name} | {params:,} | {flops / 1e6:.2f} M | {speed:.1f} |")
    lines += ["", "Predictions of the merged model:", ""]
    lines += [f"- `{Path(p['video']).name}`: " + ", ".join(f"{c} {100 * q:.0f}%" for c, q in p["top"]) for p in deploy["predictions"]]
    lines += ["", "![frame strip](frame_strip.png)", "", "## Rerun each step", "", "```",
              f"zeroi2v synth {out / 'data'} --train-per-class 40 --val-per-class 12 --frames 16 --size 32",
              "python -m zeroi2v.pretrain      # regenerates the shipped image backbone"]
    for r in results.values():
        lines.append(f"zeroi2v train {Path(r['dir']) / 'config.yaml'}")
    first = next(iter(results.values()))["dir"]
    lines += [f"zeroi2v eval {first}", f"zeroi2v merge {first} {deploy['merged_dir']}",
              f"zeroi2v export {deploy['merged_dir']} {out / 'model.onnx'}",
              f"zeroi2v predict {deploy['merged_dir']} {deploy['predictions'][0]['video']}", "```",
              "", f"Total demo time: {seconds:.0f} s."]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def headline(results: dict, deploy: dict) -> None:
    print("\n" + "=" * 78)
    print(f"{'method (frozen image backbone)':46s}{'val top-1':>12s}{'trainable':>14s}")
    for name, r in results.items():
        print(f"{name:46s}{100 * r['top1']:>11.1f}%{r['trainable']:>14,d}")
    print("-" * 78)
    print(f"{'deployed model':32s}{'params':>12s}{'MFLOPs/clip':>14s}{'clips/s':>12s}")
    for name, (params, flops, speed) in deploy["cost"].items():
        print(f"{name:32s}{params:>12,d}{flops / 1e6:>14.2f}{speed:>12.1f}")
    print(f"merge max abs error {deploy['merge_error']:.2e}; ONNX max abs error {deploy['onnx_error']:.2e}; "
          f"merged == unmerged predictions: {deploy['predictions_identical']}")
    print("=" * 78)


if __name__ == "__main__":
    raise SystemExit(main())
