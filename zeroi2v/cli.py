"""The `zeroi2v` command (also `python -m zeroi2v`, so `torchrun -m zeroi2v train ...` works).

Every user mistake is one line on stderr and exit code 2; `--debug` (or ZEROI2V_DEBUG=1) shows the
traceback instead. Verbs import their modules lazily so `zeroi2v --help` stays fast.
"""
from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from pathlib import Path

from zeroi2v.errors import UserError

EXIT_USER_ERROR = 2


def _train(args) -> int:
    from zeroi2v.config import load_config
    from zeroi2v.train import train

    cfg = load_config(args.config, args.set)
    result = train(cfg)
    if "interrupted" in result:
        return 143 if result["interrupted"] == "SIGTERM" else 130
    return 0


def _eval(args) -> int:
    from zeroi2v.eval import evaluate

    metrics = evaluate(args.directory, args.set, device=args.device)
    print(f"top1={metrics['top1']:.4f} top5={metrics['top5']:.4f} "
          f"mean_class_accuracy={metrics['mean_class_accuracy']:.4f} "
          f"({metrics['num_videos']} videos, {metrics['views']} views, {metrics['broken_videos']} unreadable)")
    print(f"wrote {Path(args.directory) / 'metrics.json'}")
    return 0


def _merge(args) -> int:
    import torch

    from zeroi2v.model import count_flops, count_params, load_pretrained, save_pretrained
    from zeroi2v.reparam import reparameterize

    src, out = Path(args.directory), Path(args.out_dir)
    model = load_pretrained(src)
    clip = _real_clip(src, model)
    merged = reparameterize(model, video=clip)
    source = "a real validation clip" if clip is not None else "a random clip"
    print(f"verified on {source}: max abs error {merged.merge_error:.3e}")
    print(f"{'':10s}{'params':>14s}{'GFLOPs/clip':>14s}")
    for name, m in (("unmerged", model), ("merged", merged)):
        print(f"{name:10s}{count_params(m):>14,d}{count_flops(m) / 1e9:>14.3f}")
    save_pretrained(merged, out)
    for extra in ("classes.txt", "config.yaml"):
        if (src / extra).is_file():
            shutil.copy(src / extra, out / extra)
    print(f"wrote {out}")
    del torch
    return 0


def _real_clip(directory: Path, model):
    """One validation clip from the run's data (if its config and files are there), else None."""
    try:
        from zeroi2v.data import VideoDataset, load_annotations
        from zeroi2v.config import load_config

        cfg = load_config(directory / "config.yaml")
        d = cfg["data"]
        ann = load_annotations(d["root"], d["val_list"] or d["train_list"], split="val")
        ds = VideoDataset(d["root"], ann.samples[:1], num_frames=model.num_frames, sampling=d["sampling"],
                          frame_interval=d["frame_interval"], train=False, img_size=d["img_size"],
                          mean=d["mean"] or model.data_config["mean"], std=d["std"] or model.data_config["std"])
        item = ds[0]
        return None if item["broken"] else item["video"][:1]
    except Exception:  # noqa: BLE001 - no data at hand: fall back to a random clip
        return None


def _export(args) -> int:
    from zeroi2v.export import export_model

    info = export_model(args.directory, args.out, fmt=args.format)
    print(f"exported {info['path']} ({info['format']}): max abs error vs PyTorch {info['error']:.3e}")
    return 0


def _predict(args) -> int:
    from zeroi2v.eval import predict

    failed = 0
    for result in predict(args.directory, args.videos, topk=args.topk, overrides=args.set):
        if "error" in result:
            print(f"{result['video']}: unreadable ({result['error']})", file=sys.stderr)
            failed += 1
            continue
        top = ", ".join(f"{name} {p:.3f}" for name, p in result["top"])
        print(f"{result['video']}: {top}")
    return 1 if failed else 0


def _convert(args) -> int:
    from zeroi2v.config import parse_override
    from zeroi2v.weights import convert_official

    overrides = {}
    for text in args.set:
        key, value = parse_override(text)
        overrides[key.removeprefix("model.")] = value
    info = convert_official(args.checkpoint, args.out_dir, overrides, merge=args.merge)
    cfg = info["config"]
    print(f"converted {args.checkpoint}: {cfg['backbone']} {cfg['timm_kwargs']}, {cfg['num_frames']} frames, "
          f"{cfg['num_classes']} classes, head_offsets={cfg['head_offsets']}, adapter_ratio={cfg['adapter_ratio']}")
    if info["merged"]:
        print(f"merged: max abs error {info['merge_error']:.3e}")
    print(f"wrote {args.out_dir}")
    return 0


def _passthrough(module: str):
    def run(args) -> int:
        import importlib
        return importlib.import_module(module).main(args.rest)
    return run


def one_line(error: Exception) -> str:
    """The message of a UserError, also when a DataLoader worker re-raised it wrapped in its traceback."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[-1].split("UserError: ", 1)[-1] if len(lines) > 1 else lines[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeroi2v", description="Image ViT -> video model at zero extra inference cost (ZeroI2V).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also ZEROI2V_DEBUG=1)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name, func, help_):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    def sets(p):
        p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys (YAML values)")

    p = verb("train", _train, "train (or resume) a run; writes the output directory")
    p.add_argument("config", help="YAML config (see configs/)")
    sets(p)
    p = verb("eval", _eval, "multi-view test of a run or model directory; writes metrics.json")
    p.add_argument("directory")
    p.add_argument("--device", default=None)
    sets(p)
    p = verb("merge", _merge, "fold the adapters into the backbone, verify numerically, save")
    p.add_argument("directory")
    p.add_argument("out_dir")
    p = verb("export", _export, "export the merged model (ONNX checked with onnxruntime, or .pt2)")
    p.add_argument("directory")
    p.add_argument("out", help="OUT.onnx or OUT.pt2")
    p.add_argument("--format", choices=["onnx", "pt2"], default=None)
    p = verb("predict", _predict, "top-k classes for each video")
    p.add_argument("directory")
    p.add_argument("videos", nargs="+")
    p.add_argument("--topk", type=int, default=5)
    sets(p)
    p = verb("convert-official", _convert, "reference ZeroI2V (MMAction2) checkpoint -> model directory")
    p.add_argument("checkpoint")
    p.add_argument("out_dir")
    p.add_argument("--merge", action="store_true", help="also fold the adapters")
    sets(p)
    for name, module, help_ in (("bench", "zeroi2v.bench", "cost and speed tables"),
                                ("demo", "zeroi2v.demo", "the embedded default, end to end"),
                                ("synth", "zeroi2v.data.synthetic", "write synthetic motion videos")):
        p = sub.add_parser(name, help=help_, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_passthrough(module))
    return parser


PASSTHROUGH = {"bench": "zeroi2v.bench", "demo": "zeroi2v.demo", "synth": "zeroi2v.data.synthetic"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[:1] or os.environ.get("ZEROI2V_DEBUG") == "1"
    if debug and argv[:1] == ["--debug"]:
        argv = argv[1:]
    if argv[:1] and argv[0] in PASSTHROUGH:  # verbs with their own argparse get the rest of the line
        args = argparse.Namespace(func=_passthrough(PASSTHROUGH[argv[0]]), rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
        debug = debug or getattr(args, "debug", False)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"zeroi2v: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        if debug:
            raise
        print(f"zeroi2v: error: {e.strerror or e}: {e.filename}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # a full disk, a read-only or vanished filesystem: the user's environment, not a bug
        if debug or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENOENT, errno.EIO):
            raise
        print(f"zeroi2v: error: {e.strerror}: {e.filename or ''} (the last complete checkpoint is kept)", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("zeroi2v: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
