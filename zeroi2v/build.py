"""Build, save and load any method's model: the one place that knows every method by name.

`build_model(ModelConfig)` dispatches on `method` (ZeroI2V or a peer baseline); a model directory is
`model.safetensors` + `model.json` (the `ModelConfig`, serialised), so `load_pretrained` rebuilds
exactly what was saved, merged or not, without pickles.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from zeroi2v.baselines import build_aim, build_joint, build_st_adapter
from zeroi2v.config import METHODS, ModelConfig
from zeroi2v.errors import UserError
from zeroi2v.fileio import atomic_save_safetensors, atomic_write_json
from zeroi2v.model import ZeroI2V, create_model

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
CKPT_DIR = "checkpoint"  # a run's resume state (zeroi2v.train)
BUILDERS = {"zeroi2v": create_model, "aim": build_aim, "st_adapter": build_st_adapter, "joint": build_joint}
assert tuple(BUILDERS) == METHODS


def build_model(cfg: ModelConfig) -> ZeroI2V:
    return BUILDERS[cfg.method](cfg)


def save_pretrained(model: ZeroI2V, directory: str | os.PathLike) -> Path:
    """Write `model.safetensors` + `model.json` (the model's `ModelConfig`); no pickles."""
    if not isinstance(model, ZeroI2V):
        raise TypeError(f"save_pretrained expects a ZeroI2V model, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(directory / MODEL_FILE, model.state_dict(), metadata={"format": "pt"})
    atomic_write_json(
        directory / CONFIG_FILE,
        {"format": "zeroi2v", "merged": model.merged, "config": dataclasses.asdict(model.config)},
    )
    return directory


def read_model_config(directory: str | os.PathLike) -> ModelConfig:
    """The `ModelConfig` of a model or run directory (one-line errors for anything else)."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.exists():
        raise UserError(f"{directory} is not a directory (no such model or run directory)")
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory (expected a zeroi2v model or run directory)")
    if not path.is_file():
        _unfinished(directory)
        raise UserError(f"{directory} is not a zeroi2v model directory (needs {CONFIG_FILE} and {MODEL_FILE})")
    try:
        meta = json.loads(path.read_text())
        return ModelConfig(**meta["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a valid zeroi2v model config: {e}") from None


def last_checkpoint(run: str | os.PathLike) -> Path | None:
    """The weights file of a run's last checkpoint, if any."""
    pointer = Path(run) / CKPT_DIR / "last.json"
    try:
        return pointer.parent / json.loads(pointer.read_text())["model"] if pointer.is_file() else None
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{pointer} is damaged (move the run directory away to start over)") from None


def _unfinished(directory: Path) -> None:
    """A run that has not finished yet has a checkpoint but no final model: say so, and how to go on."""
    if (directory / CKPT_DIR / "last.json").is_file():
        raise UserError(
            f"{directory} is an unfinished run: rerun `zeroi2v train {directory / 'config.yaml'}` to "
            "resume it, or pass --checkpoint to use its last checkpoint"
        )


def load_pretrained(
    directory: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    weights: str | os.PathLike | None = None,
    **overrides,
) -> ZeroI2V:
    """Rebuild a model saved by `save_pretrained` (merged or not) and load its weights; eval mode.

    `weights`: another safetensors file of the same model (e.g. a run's last checkpoint)."""
    cfg = dataclasses.replace(read_model_config(directory), pretrained=None, **overrides)
    path = Path(weights) if weights else Path(directory) / MODEL_FILE
    if not path.is_file():
        _unfinished(Path(directory))
        raise UserError(f"{path}: no such weights file")
    model = build_model(cfg)
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} does not match its {CONFIG_FILE}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()
