"""The ZeroI2V video model around a timm VisionTransformer.

A clip (B, 3, T, H, W) is run as B·T images through the ViT, whose blocks use STDHA (temporal heads
read a neighbouring frame's K/V) and carry linear adapters. A learned T×D temporal embedding is added
to every token of frame t before the pre-norm. The final norm's pooled token (timm's `forward_head`
with `pre_logits=True`: class token for CLIP/DeiT/AugReg) is averaged over frames, then dropout and a
linear classifier. Everything but the adapters, temporal embedding, final norm and classifier is
frozen unless `freeze=False` (full fine-tuning).

The module tree mirrors timm's: `backbone.*` has the image model's own parameter names, so image
weights load unchanged and a merged model has exactly the image model's parameters.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import timm
import torch
import torch.nn as nn
from timm.models.vision_transformer import Block, VisionTransformer

from zeroi2v.adapters import ADAPTER_POSITIONS, LinearAdapter, add_adapters
from zeroi2v.errors import UserError
from zeroi2v.fileio import atomic_save_safetensors, atomic_write_json
from zeroi2v.memory import can_recompute, lean_activations, run_block
from zeroi2v.stdha import BOUNDARY_MODES, STDHAttention, check_head_offsets

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ZeroI2V(nn.Module):
    """Video classifier: a timm ViT with STDHA and linear adapters, frame-mean pooling, linear head."""

    def __init__(self, backbone: VisionTransformer, *, num_frames: int, num_classes: int,
                 head_offsets: Sequence[int] = (), adapter_ratio: float = 0.25, adapter_scale: float = 0.5,
                 adapter_positions: Sequence[str] = ADAPTER_POSITIONS, adapter_dropout: float = 0.0,
                 temporal_embedding: bool = True, head_dropout: float = 0.5, boundary: str = "keep"):
        super().__init__()
        self.backbone = backbone
        self.num_frames = int(num_frames)
        self.num_classes = int(num_classes)
        self.embed_dim = backbone.num_features
        lean_activations(backbone)  # CLIP's QuickGELU without its second saved tensor (same numbers)
        for block in backbone.blocks:
            block.attn = STDHAttention(block.attn, self.num_frames, head_offsets, boundary)
            if adapter_ratio > 0 and adapter_positions:
                add_adapters(block, adapter_positions, adapter_ratio, adapter_scale, adapter_dropout)
        self.temporal_embed = (
            nn.Parameter(torch.zeros(self.num_frames, backbone.embed_dim)) if temporal_embedding else None
        )
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.normal_(self.head.weight, std=0.02)  # timm's ViT head init (its own zero init stalls CE at start)
            nn.init.zeros_(self.head.bias)
        self.grad_checkpointing = False
        self.lean_memory = True  # recompute norm -> adapter and proj -> adapter in backward (zeroi2v.memory)
        self.config: dict = {}

    # --- information -----------------------------------------------------------------------------
    @property
    def head_offsets(self) -> tuple[int, ...]:
        return self.backbone.blocks[0].attn.head_offsets

    @property
    def num_heads(self) -> int:
        return self.backbone.blocks[0].attn.num_heads

    @property
    def img_size(self) -> tuple[int, int]:
        return tuple(self.backbone.patch_embed.img_size)

    @property
    def data_config(self) -> dict:
        """Normalisation of the backbone's pretraining (0..1 scale): CLIP vs ImageNet statistics."""
        cfg = getattr(self.backbone, "pretrained_cfg", None) or {}
        return {"mean": tuple(cfg.get("mean", IMAGENET_MEAN)), "std": tuple(cfg.get("std", IMAGENET_STD))}

    @property
    def merged(self) -> bool:
        return not any(isinstance(m, LinearAdapter) for m in self.modules())

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    # --- forward ---------------------------------------------------------------------------------
    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, D): frame-mean of the final-normed pooled token."""
        if video.ndim != 5:
            raise UserError(f"expected a video batch (B, 3, T, H, W), got shape {tuple(video.shape)}")
        B, C, T, H, W = video.shape
        if T != self.num_frames:
            raise UserError(f"model was built for {self.num_frames} frames, got a clip of {T}")
        vit = self.backbone
        x = video.transpose(1, 2).reshape(B * T, C, H, W)
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        if self.temporal_embed is not None:
            N, D = x.shape[1:]
            x = (x.view(B, T, N, D) + self.temporal_embed.view(1, T, 1, D)).view(B * T, N, D)
        x = vit.norm_pre(x)
        training = self.training and torch.is_grad_enabled()
        for block in vit.blocks:
            if training and self.grad_checkpointing:  # the whole block recomputed in backward
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            elif training and self.lean_memory and can_recompute(block):  # only cheap parts recomputed
                x = run_block(block, x)
            else:
                x = block(x)
        x = vit.norm(x)
        x = vit.forward_head(x, pre_logits=True)
        return x.view(B, T, -1).mean(1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(video)
        if self.num_classes == 0:
            return x
        return self.head(self.head_drop(x))


# --- construction ----------------------------------------------------------------------------------
def _create_vit(backbone: str, drop_path_rate: float, timm_kwargs: dict) -> VisionTransformer:
    if not isinstance(backbone, str) or not timm.is_model(backbone):
        close = timm.list_models(f"*{backbone}*")[:5] if isinstance(backbone, str) else []
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown timm model {backbone!r}{hint}")
    clash = sorted({"num_classes", "drop_path_rate", "pretrained"} & set(timm_kwargs))
    if clash:
        raise UserError(f"{clash} are zeroi2v's own arguments (create_model / model.* config keys), "
                        "not timm_kwargs")
    try:
        vit = timm.create_model(backbone, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate, **timm_kwargs)
    except TypeError as e:
        with torch.device("meta"):  # only to tell a non-ViT from a bad argument: no memory, no init
            kind = type(timm.create_model(backbone, pretrained=False))
        if not issubclass(kind, VisionTransformer):
            raise UserError(f"{backbone!r} is not a timm VisionTransformer; zeroi2v needs a ViT") from None
        raise UserError(f"timm could not build {backbone!r} with {timm_kwargs}: {e}") from None
    except (AssertionError, ValueError, RuntimeError) as e:
        raise UserError(f"timm could not build {backbone!r} with {timm_kwargs}: {e}") from None
    if not isinstance(vit, VisionTransformer):
        raise UserError(f"{backbone!r} is a {type(vit).__name__}, not a timm VisionTransformer; zeroi2v needs a ViT")
    if not all(isinstance(b, Block) for b in vit.blocks):
        kinds = sorted({type(b).__name__ for b in vit.blocks})
        raise UserError(f"{backbone!r} uses {kinds} blocks; zeroi2v supports timm's standard pre-norm Block")
    if vit.global_pool == "" and getattr(vit, "attn_pool", None) is None:
        raise UserError("global_pool='' returns every token; zeroi2v needs a pooled feature per frame "
                        "(global_pool token, avg, max, avgmax or map)")
    return vit


def create_model(backbone: str, num_frames: int = 8, num_classes: int = 400, pretrained: str | None = None,
                 head_offsets: Sequence[int] = (-1, 1), adapter_ratio: float = 0.25, adapter_scale: float = 0.5,
                 *, temporal_embedding: bool = True, freeze: bool = True,
                 adapter_positions: Sequence[str] = ADAPTER_POSITIONS, adapter_dropout: float = 0.0,
                 head_dropout: float = 0.5, drop_path_rate: float = 0.0, boundary: str = "keep",
                 timm_kwargs: dict | None = None, **kwargs) -> ZeroI2V:
    """Build a ZeroI2V video model on any timm ViT (see SPEC.md); unknown kwargs go to timm."""
    timm_kwargs = {**(timm_kwargs or {}), **kwargs}
    if int(num_frames) < 1:
        raise UserError(f"num_frames must be >= 1, got {num_frames}")
    if int(num_classes) < 0:
        raise UserError(f"num_classes must be >= 0, got {num_classes}")
    if not 0 <= float(adapter_ratio) <= 16:
        raise UserError(f"adapter_ratio must be in [0, 16], got {adapter_ratio}")
    unknown = [p for p in adapter_positions if p not in ADAPTER_POSITIONS]
    if unknown:
        raise UserError(f"unknown adapter positions {unknown}; choose from {list(ADAPTER_POSITIONS)}")
    if boundary not in BOUNDARY_MODES:
        raise UserError(f"boundary must be one of {list(BOUNDARY_MODES)}, got {boundary!r}")
    for name, p in (("adapter_dropout", adapter_dropout), ("head_dropout", head_dropout), ("drop_path_rate", drop_path_rate)):
        if not 0 <= float(p) < 1:
            raise UserError(f"{name} must be in [0, 1), got {p}")

    vit = _create_vit(backbone, float(drop_path_rate), timm_kwargs)
    check_head_offsets(head_offsets, vit.blocks[0].attn.num_heads, int(num_frames))
    if pretrained:
        from zeroi2v.weights import load_image_weights
        load_image_weights(vit, pretrained)

    model = ZeroI2V(vit, num_frames=int(num_frames), num_classes=int(num_classes),
                    head_offsets=tuple(int(o) for o in head_offsets), adapter_ratio=float(adapter_ratio),
                    adapter_scale=float(adapter_scale), adapter_positions=tuple(adapter_positions),
                    adapter_dropout=float(adapter_dropout), temporal_embedding=bool(temporal_embedding),
                    head_dropout=float(head_dropout), boundary=boundary)
    model.config = dict(
        backbone=backbone, num_frames=int(num_frames), num_classes=int(num_classes),
        head_offsets=[int(o) for o in head_offsets], adapter_ratio=float(adapter_ratio),
        adapter_scale=float(adapter_scale), temporal_embedding=bool(temporal_embedding), freeze=bool(freeze),
        adapter_positions=list(adapter_positions), adapter_dropout=float(adapter_dropout),
        head_dropout=float(head_dropout), drop_path_rate=float(drop_path_rate), boundary=boundary,
        timm_kwargs=dict(timm_kwargs),
    )
    set_trainable(model, freeze=bool(freeze))
    return model


def set_trainable(model: ZeroI2V, freeze: bool = True) -> None:
    """ZeroI2V trains adapters, temporal embedding, final norm(s) and classifier; freeze=False trains all."""
    for p in model.parameters():
        p.requires_grad_(not freeze)
    if not freeze:
        return
    vit = model.backbone
    trainable = [model.head, vit.norm, vit.fc_norm] + [m for m in model.modules() if isinstance(m, LinearAdapter)]
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)
    if model.temporal_embed is not None:
        model.temporal_embed.requires_grad_(True)


NO_DECAY_NAMES = ("cls_token", "reg_token", "pos_embed", "temporal_embed", "pos_embed_")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups over trainable parameters: no decay on embeddings, norms, biases and scales."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or any(key in name.split(".")[-1] for key in NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


# --- cost -----------------------------------------------------------------------------------------
def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's counter knows the CUDA attention kernels but not the CPU flash kernel SDPA dispatches to.
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, batch: int = 1, num_frames: int | None = None, img_size=None) -> int:
    """FLOPs of one forward pass (torch.utils.flop_counter; a multiply-add counts 2).

    A ZeroI2V model gets a (batch, 3, T, H, W) clip; a plain timm model gets batch·T images.
    """
    from torch.utils.flop_counter import FlopCounterMode

    vit = model.backbone if isinstance(model, ZeroI2V) else model
    h, w = img_size or vit.patch_embed.img_size
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    if isinstance(model, ZeroI2V):
        x = torch.zeros(batch, 3, num_frames or model.num_frames, h, w, device=param.device, dtype=param.dtype)
    else:
        x = torch.zeros(batch * (num_frames or 1), 3, h, w, device=param.device, dtype=param.dtype)
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    with counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


# --- save / load ----------------------------------------------------------------------------------
def save_pretrained(model: ZeroI2V, directory: str | os.PathLike) -> Path:
    """Write `model.safetensors` + `model.json` (the create_model arguments); no pickles."""
    if not isinstance(model, ZeroI2V):
        raise TypeError(f"save_pretrained expects a ZeroI2V model, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    atomic_save_safetensors(directory / MODEL_FILE, model.state_dict(), metadata={"format": "pt"})
    atomic_write_json(directory / CONFIG_FILE, {"format": "zeroi2v", "merged": model.merged, "config": model.config})
    return directory


def read_model_config(directory: str | os.PathLike) -> dict:
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise UserError(f"{directory} is not a directory (expected a zeroi2v model or run directory)")
    if not path.is_file() or not (directory / MODEL_FILE).is_file():
        raise UserError(f"{directory} is not a zeroi2v model directory (needs {CONFIG_FILE} and {MODEL_FILE})")
    try:
        meta = json.loads(path.read_text())
        return dict(meta["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a valid zeroi2v model config: {e}") from None


def load_pretrained(directory: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides) -> ZeroI2V:
    """Rebuild a model saved by `save_pretrained` (merged or not) and load its weights; eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = {**read_model_config(directory), **overrides}
    config.pop("pretrained", None)
    method = config.pop("method", "zeroi2v")
    if method == "zeroi2v":
        model = create_model(**config)
    else:
        from zeroi2v.baselines import create_baseline
        model = create_baseline(method, **config)
    path = Path(directory) / MODEL_FILE
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} does not match its {CONFIG_FILE}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()
