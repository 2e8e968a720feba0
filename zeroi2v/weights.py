"""Weights from disk: pretrained image ViTs, and the reference ZeroI2V (MMAction2) checkpoints.

Image weights come in the layouts people have: timm and open_clip state dicts (.safetensors, .bin,
.pth; the files on the HF hub), OpenAI CLIP state dicts and TorchScript archives (keys under
`visual.`). They are converted by timm's own `checkpoint_filter_fn` (which also resizes position
embeddings), never by a hand-written key map. The image classifier / CLIP projection is dropped.

Pickles are loaded with `weights_only=True`; TorchScript archives with `torch.jit.load`, which
deserialises tensors and TorchScript code (not arbitrary Python) — we only read its state_dict.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from zeroi2v.errors import UserError

HEAD_PREFIXES = ("head.", "fc_norm_head.")  # dropped: we bring our own classifier


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, whatever its container; one-line errors for bad files."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a weights file")
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"weights file is empty: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"cannot read {path} as safetensors ({e})") from None
    if _is_torchscript(path):
        try:
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except Exception as e:  # noqa: BLE001 - torch.jit raises many types for broken archives
            raise UserError(f"cannot read TorchScript archive {path}: {str(e).splitlines()[0]}") from None
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"PK" and not zipfile.is_zipfile(path):
        raise UserError(f"cannot read {path}: a truncated or damaged checkpoint (incomplete zip archive)")
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # neither torch.save's zip nor a legacy pickle
        raise UserError(f"cannot read {path}: not a PyTorch checkpoint (neither a zip archive nor a pickle), "
                        "safetensors (.safetensors) or TorchScript file")
    try:
        obj = _load_pickle_safely(path)
    except Exception as e:  # noqa: BLE001 - unpickling errors of many kinds; all mean "not a usable checkpoint"
        raise UserError(f"cannot read {path} as a PyTorch checkpoint (truncated or not a checkpoint): "
                        f"{_reason(e)[:200]}") from None
    return _unwrap(obj, path)


def _reason(error: Exception) -> str:
    """The informative line of a loading error (torch's weights_only message is mostly advice to
    disable the safety check, which we never do)."""
    text = str(error).strip()
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        return f"unpickling refused: {detail[0].strip() if detail else 'unsupported content'}"
    return text.splitlines()[0] if text else type(error).__name__


def _load_pickle_safely(path: Path):
    """`torch.load(weights_only=True)`; foreign classes in training checkpoints (MMEngine's `meta`,
    numpy scalars, ...) are replaced by inert stubs, so nothing from the file is ever executed."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001
        if "weights_only" not in str(first) and "Unsupported global" not in str(first):
            raise
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001
            raise first from None
        if not names:
            raise first from None
        stubs = [(_stub(name), name) for name in names]
        with torch.serialization.safe_globals(stubs):
            return torch.load(str(path), map_location="cpu", weights_only=True)


def _stub(qualified_name: str) -> type:
    """A class that accepts any constructor arguments and state, and does nothing with them."""
    def init(self, *args, **kwargs):
        pass

    def setstate(self, state):
        pass

    return type(qualified_name.rsplit(".", 1)[-1], (), {"__init__": init, "__setstate__": setstate,
                                                         "__new__": lambda cls, *a, **k: object.__new__(cls)})


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _unwrap(obj, path) -> dict[str, torch.Tensor]:
    """Find the state dict inside common training-checkpoint wrappers."""
    for key in ("state_dict", "model", "module", "model_state", "state_dict_ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} holds no state dict of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_image_weights(vit: nn.Module, path: str | os.PathLike) -> None:
    """Load image-pretrained weights into a timm VisionTransformer (classifier/projection dropped)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = read_state_dict(path)
    if any(k.startswith("module.") and not k.startswith("module.visual.") for k in state):
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state) and "backbone.conv1.weight" in state:
        raise UserError(f"{path} looks like a ZeroI2V reference checkpoint; use load_official_checkpoint / convert-official")
    try:
        state = checkpoint_filter_fn(state, vit)
    except Exception as e:  # noqa: BLE001 - a foreign architecture breaks timm's converter in many ways
        raise UserError(f"{path}: timm could not convert these weights for {type(vit).__name__}: {e}") from None
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    own = vit.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise UserError(f"{path} does not fit this backbone: {wrong[0]}" + (f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    missing = [k for k in own if k not in state and not k.startswith(HEAD_PREFIXES)]
    unexpected = [k for k in state if k not in own]
    if missing or len(unexpected) > len(state) // 2:
        raise UserError(
            f"{path} does not match the backbone: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}) — wrong architecture or timm name?"
        )
    vit.load_state_dict(state, strict=False)


def load_official_checkpoint(path: str | os.PathLike, **overrides):
    """A ZeroI2V model from a reference (MMAction2) checkpoint; see `zeroi2v.official`."""
    from zeroi2v.official import load_official_checkpoint as load
    return load(path, **overrides)


def convert_official(ckpt_path, out_dir, overrides: dict | None = None, merge: bool = False) -> dict:
    from zeroi2v.official import convert_official as convert
    return convert(ckpt_path, out_dir, overrides or {}, merge)
