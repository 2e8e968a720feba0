"""What the studies share: where the repository's recipe and docs are, the cache of runs that
side-by-side invocations add to, and the identity of a recipe and backbone that cached results rest on."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
from pathlib import Path

from zeroi2v.weights import builtin_weights_path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "demo.yaml"
DOCS = ROOT / "docs"


def store(cache: Path, key: str, value: dict) -> dict:
    """Add one run to the cache file, keeping what side-by-side invocations (e.g. one per family, each
    with OMP_NUM_THREADS=1) added meanwhile; returns the merged cache."""
    import fcntl

    from zeroi2v.fileio import atomic_write_json

    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(cache.read_text()) if cache.is_file() else {}
        results[key] = value
        atomic_write_json(cache, results)
    return results


SAME_RESULT = ("data.cache_frames",)  # settings that change how fast a run goes, not what it computes


@functools.cache
def backbone_sha256(backbone=None) -> str:
    """sha256 of the image backbone's weights file (default: the shipped one); '' if there is none.
    Cached: every run key of a study needs it, and the file does not change during one invocation."""
    weights = Path(backbone) if backbone else builtin_weights_path()
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else ""


def recipe_id(ignore: tuple[str, ...] = (), backbone=None, recipe: Path = RECIPE) -> str:
    """Short hash of the recipe's settings (comments aside, and the `section.key` settings in `ignore`,
    which every run sets itself) and of the backbone's weights (default: the shipped one): results cached
    for another recipe or another image pretraining are never reused."""
    import yaml

    settings = yaml.safe_load(Path(recipe).read_text())
    for dotted in (*ignore, *SAME_RESULT):
        section, key = dotted.split(".")
        settings.get(section, {}).pop(key, None)
    settings["backbone_sha256"] = backbone_sha256(backbone)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def check_study_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One-line usage errors for the size options the ablations and the accuracy sweep share, before any
    video is written (a 0 would otherwise silently read as "the default")."""
    if any(seed < 0 for seed in args.seeds or []):
        parser.error(f"--seeds must be >= 0, got {args.seeds}")
    for flag in ("epochs", "train_per_class", "val_per_class"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
