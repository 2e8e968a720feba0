"""The `zeroi2v` command (also `python -m zeroi2v`, so `torchrun ... -m zeroi2v train ...` works).

Every user mistake is one line on stderr and exit code 2; `--debug` (or ZEROI2V_DEBUG=1) shows the
traceback instead. Each verb imports what it needs when it runs, so `zeroi2v --help` and
`zeroi2v --version` import neither torch nor timm.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import shutil
import sys
from pathlib import Path

from zeroi2v import __version__
from zeroi2v.config import SHIPPED_CONFIGS
from zeroi2v.errors import UserError

EXIT_USER_ERROR = 2
# verbs with their own argparse: module whose main(argv) gets the rest of the command line
PASSTHROUGH = {
    "bench": ("zeroi2v.bench", "cost and speed tables (zeroi2v bench --help)"),
    "demo": ("zeroi2v.demo", "the embedded default, end to end (zeroi2v demo --help)"),
    "synth": ("zeroi2v.data.synthetic", "write synthetic motion videos (zeroi2v synth --help)"),
}


def config_path(name: str) -> Path:
    """A config file, or the name of a shipped one (`k400_vitb16_8x16x1`, `demo`)."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml") and os.sep in name:
        return path
    shipped = SHIPPED_CONFIGS / f"{path.stem}.yaml"
    return shipped if shipped.is_file() else path


def _train(args) -> int:
    from zeroi2v.config import check_output_outside_data, load_config

    cfg = load_config(config_path(args.config), args.set)
    check_output_outside_data(cfg)  # before anything is written
    from zeroi2v.train import exit_code, train

    result = train(cfg)
    return exit_code(result["interrupted"]) if "interrupted" in result else 0


def _eval(args) -> int:
    from zeroi2v.eval import evaluate

    metrics = evaluate(args.directory, args.set, device=args.device, checkpoint=args.checkpoint, compile=args.compile)
    print(
        f"top1={metrics['top1']:.4f} top5={metrics['top5']:.4f} "
        f"mean_class_accuracy={metrics['mean_class_accuracy']:.4f} "
        f"({metrics['num_videos']} videos, {metrics['views']} views, {metrics['broken_videos']} unreadable)"
    )
    print(f"wrote {Path(args.directory) / 'metrics.json'}")
    return 0


MODEL_DIR_FILES = ("model.safetensors", "model.json", "config.yaml", "classes.txt")  # what merge/convert write


def _is_model_dir(folder: Path) -> bool:
    try:
        return '"zeroi2v"' in (folder / "model.json").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def _listing(folder: Path, limit: int = 5) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_new_model_dir(out: Path, force: bool) -> None:
    """A model directory a verb writes: a new or empty folder; with --force, also an earlier model
    directory (its files are replaced) or a folder none of whose files would be replaced. Never a
    folder whose own config.yaml / classes.txt / model files are not a model directory's."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        raise UserError(
            f"{out} is not empty (it holds {_listing(out)}); pass --force to replace the files of an earlier "
            "model directory there, or choose a new directory"
        )
    clash = [name for name in MODEL_DIR_FILES if (out / name).exists()]
    if clash and not _is_model_dir(out):
        raise UserError(
            f"{out} is not a zeroi2v model directory but holds {', '.join(clash)}, which would be replaced; "
            "--force replaces only a model directory's files: choose a new directory"
        )


def _merge(args) -> int:
    src, out = Path(args.directory), Path(args.out_dir)
    if out.resolve() == src.resolve():
        raise UserError(f"{out} is the source model's own directory; choose a new output directory")
    if src.resolve() in out.resolve().parents:
        raise UserError(f"{out} is inside the source directory {src}; choose a directory outside it")
    _check_new_model_dir(out, args.force)

    from zeroi2v.build import load_pretrained, save_pretrained
    from zeroi2v.model import count_flops, count_params
    from zeroi2v.reparam import reparameterize

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
            shutil.copyfile(src / extra, out / extra)
    print(f"wrote {out}")
    return 0


def _real_clip(directory: Path, model):
    """One validation clip from the run's data (if its config and files are there), else None."""
    from zeroi2v.config import load_config
    from zeroi2v.data.build import make_dataset

    if not (directory / "config.yaml").is_file():
        return None
    try:
        cfg = load_config(directory / "config.yaml")
        dataset = make_dataset(cfg, model, "val")
    except UserError:  # no data at hand: a random clip instead
        return None
    for index in range(min(len(dataset), 5)):
        item = dataset[index]
        if not item["broken"]:
            return item["video"][:1]
    return None


def _export(args) -> int:
    from zeroi2v.export import export_model

    info = export_model(args.directory, args.out, fmt=args.format)
    print(f"exported {info['path']} ({info['format']}): max abs error vs PyTorch {info['error']:.3e}")
    return 0


def _predict(args) -> int:
    if args.timeline:
        if args.compile or args.checkpoint:
            raise UserError("--compile and --checkpoint are not available with --timeline")
        return _timeline(args)
    if args.annotate or args.stride is not None or args.window is not None or args.out:
        raise UserError("--stride, --window, --out and --annotate go with --timeline")
    from zeroi2v.eval import predict

    failed = 0
    for result in predict(
        args.directory,
        args.videos,
        topk=args.topk,
        overrides=args.set,
        device=args.device,
        checkpoint=args.checkpoint,
        compile=args.compile,
    ):
        if "error" in result:
            print(f"{result['video']}: unreadable ({result['error']})", file=sys.stderr)
            failed += 1
            continue
        if result.get("warning"):
            print(f"{result['video']}: warning: {result['warning']}", file=sys.stderr)
        top = ", ".join(f"{name} {p:.3f}" for name, p in result["top"])
        print(f"{result['video']}: {top}")
    return 1 if failed else 0


def _timeline(args) -> int:
    from zeroi2v.timeline import timeline

    if len(args.videos) != 1:
        raise UserError("--timeline takes one video")
    if args.topk < 1:
        raise UserError(f"--topk must be >= 1, got {args.topk}")
    result = timeline(
        args.directory,
        args.videos[0],
        stride=args.stride,
        window=args.window,
        topk=args.topk,
        out_prefix=args.out,
        annotate=args.annotate,
        overrides=args.set,
        device=args.device,
    )
    if result.get("note"):
        print(result["note"])
    changes = [
        w
        for i, w in enumerate(result["windows"])
        if i == 0 or w["top"][0]["class"] != result["windows"][i - 1]["top"][0]["class"]
    ]
    for w in changes:
        print(f"{w['start_s']:8.2f}s  {w['top'][0]['class']} {w['top'][0]['probability']:.3f}")
    for path in result["paths"].values():
        print(f"wrote {path}")
    return 0


def _features(args) -> int:
    from zeroi2v.features import extract_features

    result = extract_features(
        args.directory,
        args.videos,
        args.out,
        merged=not args.unmerged,
        root=args.root,
        overrides=args.set,
        device=args.device,
    )
    if result.get("note"):
        print(result["note"])
    for name, what in result["warnings"]:
        print(f"{name}: warning: {what}", file=sys.stderr)
    for name, reason in result["skipped"]:
        print(f"{name}: skipped, unreadable ({reason})", file=sys.stderr)
    skipped = f" ({len(result['skipped'])} unreadable skipped)" if result["skipped"] else ""
    print(f"wrote {result['path']}: {result['num_videos']} videos × {result['dim']} features{skipped}")
    return 0


def _convert(args) -> int:
    from zeroi2v.config import parse_override
    from zeroi2v.official import convert_official

    overrides = {}
    for text in args.set:
        key, value = parse_override(text)
        overrides[key.removeprefix("model.")] = value
    preset = config_path(args.preset) if args.preset else None
    _check_new_model_dir(Path(args.out_dir), args.force)
    info = convert_official(args.checkpoint, args.out_dir, overrides, merge=args.merge, preset=preset)
    cfg = info["config"]
    print(
        f"converted {args.checkpoint}: {cfg.backbone} {cfg.timm_kwargs}, {cfg.num_frames} frames, "
        f"{cfg.num_classes} classes, head_offsets={cfg.head_offsets}, adapter_scale={cfg.adapter_scale}"
        + (f" (preset {args.preset})" if args.preset else "")
    )
    if info["merged"]:
        print(f"merged: max abs error {info['merge_error']:.3e}")
    print(f"wrote {args.out_dir}")
    return 0


def _prepare(args) -> int:
    from zeroi2v.prepare import prepare

    prepare(
        args.list,
        args.out_dir,
        root=args.root,
        fmt=args.format,
        short_side=args.short_side,
        quality=args.quality,
        gop=args.gop,
        crf=args.crf,
        workers=args.workers,
        split=args.split,
    )
    return 0


def _add_prepare(verb) -> None:
    from zeroi2v.prepare import DEFAULTS, FORMATS  # (light: imports no torch)

    p = verb("prepare", _prepare, "a fast-loading copy of a dataset: JPEG frames or short-keyframe-interval video")
    p.add_argument("list", metavar="LIST", help="what data.train_list takes: list file, class folder, SSv2 JSON, ...")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder of the copy (outside the source); rerun to resume")
    p.add_argument("--root", default=None, help="folder of the list's relative paths (default: the list's folder)")
    p.add_argument("--format", choices=FORMATS, required=True, help="frames: img_00001.jpg... per video; video: H.264")
    p.add_argument(
        "--short-side",
        type=int,
        default=DEFAULTS["short_side"],
        help=f"resize the short side to this (never enlarged; 0: keep; default {DEFAULTS['short_side']})",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=DEFAULTS["quality"],
        help=f"frames: JPEG quality 1-100 (default {DEFAULTS['quality']})",
    )
    p.add_argument(
        "--gop", type=int, default=DEFAULTS["gop"], help=f"video: frames between keyframes (default {DEFAULTS['gop']})"
    )
    p.add_argument(
        "--crf",
        type=int,
        default=DEFAULTS["crf"],
        help=f"video: x264 CRF, lower is better and larger (default {DEFAULTS['crf']})",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    p.add_argument("--split", choices=("train", "val"), default="train", help="HMDB51 split files: which column")


def _passthrough(module: str):
    def run(args) -> int:
        return importlib.import_module(module).main(args.rest)

    return run


def one_line(error: Exception) -> str:
    """The message of a UserError, also when a DataLoader worker re-raised it wrapped in its traceback."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[-1].split("UserError: ", 1)[-1] if len(lines) > 1 else lines[0]


DIRECTORY_HELP = "a run directory (output of train) or a model directory (merge, convert-official)"


def _sets(p, what="config keys") -> None:
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what} (YAML values; relative paths from the current directory); repeatable, later values win",
    )


def _test_options(p) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: a GPU if there is one)")
    p.add_argument("--checkpoint", action="store_true", help="use an unfinished run's last checkpoint")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first (pays off on many videos)")
    _sets(p, "test data keys (data.*, train.batch_size, train.num_workers)")


def _add_train(verb) -> None:
    p = verb("train", _train, "train (or resume) a run; writes the output directory")
    p.add_argument(
        "config",
        help=f"YAML config file, or the name of a shipped one ({', '.join(_shipped()[:3])}, ...); relative "
        "paths in a config file are taken from the file's folder",
    )
    p.add_argument("--list-configs", action="store_true", help="list the shipped configs (names and files) and exit")
    _sets(p)


def _add_model_verbs(verb) -> None:
    p = verb("eval", _eval, "multi-view test of a run or model directory; writes metrics.json")
    p.add_argument("directory", help=DIRECTORY_HELP)
    _test_options(p)
    p = verb("merge", _merge, "fold the adapters into the backbone, verify numerically, save")
    p.add_argument("directory", help=DIRECTORY_HELP)
    p.add_argument("out_dir", help="new directory for the merged model (never the source)")
    p.add_argument("--force", action="store_true", help="replace the files of an earlier model directory in OUT_DIR")
    p = verb("export", _export, "export the merged model (ONNX checked with onnxruntime, or .pt2)")
    p.add_argument("directory", help=DIRECTORY_HELP)
    p.add_argument("out", help="OUT.onnx or OUT.pt2")
    p.add_argument("--format", choices=["onnx", "pt2"], default=None, help="(default: from OUT's extension)")
    p = verb("features", _features, "clip features (one row per video) to a safetensors file")
    p.add_argument("directory", help=DIRECTORY_HELP)
    p.add_argument("videos", nargs="+", help="video files, folders of them, or list files of videos")
    p.add_argument("--out", required=True, metavar="FILE.safetensors")
    p.add_argument("--unmerged", action="store_true", help="use the model with its adapters (default: merged)")
    p.add_argument(
        "--root",
        default=None,
        help="folder of relative paths in list files (default: data.root, then the list file's folder)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: a GPU if there is one)")
    _sets(p, "test data keys (data.*)")


def _add_predict(verb) -> None:
    p = verb("predict", _predict, "top-k classes for each video (--timeline: sliding windows over one long video)")
    p.add_argument("directory", help=DIRECTORY_HELP)
    p.add_argument("videos", nargs="+", help="video files, or folders of them")
    p.add_argument("--topk", type=int, default=5, help="classes shown per video (default: %(default)s)")
    p.add_argument("--timeline", action="store_true", help="classify sliding windows; writes JSON, CSV and a PNG")
    p.add_argument(
        "--stride",
        type=int,
        default=None,
        help="timeline: source frames between window starts, at most the window (default: up to half a window, "
        "in equal steps to the end)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="timeline: window length in source frames (default: num_frames × data.frame_interval for dense "
        "sampling, num_frames × 2 for uniform)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="PREFIX",
        help="timeline: prefix of the JSON/CSV/PNG files (default: ./VIDEO_NAME.timeline); only an earlier "
        "timeline's files are replaced",
    )
    p.add_argument(
        "--annotate",
        default=None,
        metavar="OUT.mp4",
        help="timeline: write the video with the current top-1 label drawn on it",
    )
    _test_options(p)


def _add_convert(verb) -> None:
    p = verb("convert-official", _convert, "reference ZeroI2V (MMAction2) checkpoint -> model directory")
    p.add_argument("checkpoint", help="the reference .pth file")
    p.add_argument("out_dir", help="new directory for the model")
    p.add_argument(
        "--preset",
        default=None,
        metavar="CONFIG",
        help="the setting the checkpoint was trained with (e.g. ssv2_vitl14_u32): offsets, adapter "
        "scale, frames, classes from that config",
    )
    p.add_argument("--merge", action="store_true", help="also fold the adapters")
    p.add_argument("--force", action="store_true", help="replace the files of an earlier model directory in OUT_DIR")
    _sets(p, "model keys")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zeroi2v", description="Image ViT -> video model at zero extra inference cost (ZeroI2V)."
    )
    parser.add_argument("--version", action="version", version=f"zeroi2v {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also ZEROI2V_DEBUG=1)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name, func, help_):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func, verb_parser=p)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    for add in (_add_train, _add_model_verbs, _add_predict, _add_convert, _add_prepare):
        add(verb)
    for name, (module, help_) in PASSTHROUGH.items():
        p = sub.add_parser(name, help=help_, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_passthrough(module))
    return parser


HELP_COLUMNS = "100"  # the stored help of synth/demo/bench is formatted at this width


def stored_help_path(name: str) -> Path:
    return Path(__file__).parent / "assets" / f"help_{name}.txt"


def live_help(name: str) -> str:
    """`zeroi2v NAME --help` as the verb's own parser prints it (imports the verb, and torch)."""
    import contextlib
    import io

    buffer, previous = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
            importlib.import_module(PASSTHROUGH[name][0]).main(["--help"])
    finally:
        os.environ.pop("COLUMNS") if previous is None else os.environ.update(COLUMNS=previous)
    return buffer.getvalue()


def write_stored_help() -> None:
    """Regenerate zeroi2v/assets/help_*.txt (`python -m zeroi2v.cli --write-help`; a test checks them):
    `zeroi2v synth|demo|bench --help` prints them without importing torch."""
    for name in PASSTHROUGH:
        stored_help_path(name).write_text(live_help(name), encoding="utf-8")


def _shipped() -> list[str]:
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def _run(argv: list[str]) -> int:
    debug = os.environ.get("ZEROI2V_DEBUG") == "1"
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    if argv[:1] == ["train"] and "--list-configs" in argv:
        print("\n".join(f"{name:28s} {SHIPPED_CONFIGS / (name + '.yaml')}" for name in _shipped()))
        return 0
    if argv[:1] and argv[0] in PASSTHROUGH and argv[1:] in (["-h"], ["--help"]):
        if stored_help_path(argv[0]).is_file():  # without importing torch (seconds)
            print(stored_help_path(argv[0]).read_text(encoding="utf-8"), end="")
            return 0
    if argv[:1] and argv[0] in PASSTHROUGH:  # verbs with their own argparse get the rest of the line
        args = argparse.Namespace(func=_passthrough(PASSTHROUGH[argv[0]][0]), rest=argv[1:])
    else:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # name the verb and show its usage, not the top-level one
            getattr(args, "verb_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
        debug = debug or getattr(args, "debug", False)
    try:
        if not {"-h", "--help"} & set(argv):
            _import_deferring_ctrl_c()
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
        print(
            f"zeroi2v: error: {e.strerror}: {e.filename or ''} (the last complete checkpoint is kept)", file=sys.stderr
        )
        return EXIT_USER_ERROR


def _import_deferring_ctrl_c() -> None:
    """Import torch and torchvision (every verb loads both; ~3.5 s) with Ctrl-C held back until they
    are loaded: a KeyboardInterrupt raised inside their import can land in C++ code (the process aborts
    with "what(): KeyboardInterrupt") or in a library's bare `except` (the Ctrl-C is lost and the
    command runs on). Raised here instead."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        import torchvision  # noqa: F401

        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        import torchvision  # noqa: F401  (imports torch)
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def main(argv=None) -> int:
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # also during start-up (imports, building the model)
        print("zeroi2v: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-help"]:
        write_stored_help()
        raise SystemExit(0)
    raise SystemExit(main())
