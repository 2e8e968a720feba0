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

import dataclasses

import timm
import torch
import torch.nn as nn
from timm.models.vision_transformer import Block, VisionTransformer
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from zeroi2v.adapters import LinearAdapter, add_adapters
from zeroi2v.config import ModelConfig
from zeroi2v.errors import UserError
from zeroi2v.stdha import STDHAttention
from zeroi2v.weights import load_image_weights

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NO_WEIGHT_DECAY = ("cls_token", "reg_token", "pos_embed", "temporal_embed")  # and every norm (the reference's
# "embedding" and "ln_*" names); adapter and classifier biases are decayed, as in the reference


class ZeroI2V(nn.Module):
    """Video classifier: a timm ViT with STDHA and linear adapters, frame-mean pooling, linear head."""

    def __init__(self, backbone: VisionTransformer, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.num_frames = config.num_frames
        self.num_classes = config.num_classes
        self.embed_dim = backbone.num_features
        temporal = stdha_block_indices(config.stdha_blocks, len(backbone.blocks))
        for i, block in enumerate(backbone.blocks):
            offsets = config.head_offsets if i in temporal else ()
            block.attn = STDHAttention(block.attn, self.num_frames, offsets, config.boundary)
            if config.adapter_ratio > 0 and config.adapter_positions:
                add_adapters(
                    block, config.adapter_positions, config.adapter_ratio, config.adapter_scale, config.adapter_dropout
                )
        self.temporal_embed = (
            nn.Parameter(torch.zeros(self.num_frames, backbone.embed_dim)) if config.temporal_embedding else None
        )
        self.head_drop = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(self.embed_dim, self.num_classes) if self.num_classes > 0 else nn.Identity()
        if self.num_classes > 0:
            nn.init.normal_(self.head.weight, std=0.01)  # the reference's classifier init
            nn.init.zeros_(self.head.bias)
        self.grad_checkpointing = False

    # --- information -----------------------------------------------------------------------------
    @property
    def head_offsets(self) -> tuple[int, ...]:
        return tuple(self.config.head_offsets)

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
    def method(self) -> str:
        """Which method this model is: "zeroi2v" or a peer baseline ("aim", "st_adapter", "joint")."""
        return self.config.method

    @property
    def merged(self) -> bool:
        """A ZeroI2V model whose adapters are folded in. A peer is never merged: it cannot be."""
        return self.method == "zeroi2v" and not any(isinstance(m, LinearAdapter) for m in self.modules())

    def no_weight_decay(self) -> set[str]:
        """Parameter names without weight decay (timm's convention): embeddings and norms."""
        norms = {n for n, m in self.named_modules() if isinstance(m, nn.LayerNorm)}
        return {
            name
            for name, _ in self.named_parameters()
            if name.rpartition(".")[0] in norms or name.rpartition(".")[2] in NO_WEIGHT_DECAY
        }

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
        if (H, W) != self.img_size:
            raise UserError(f"model was built for {self.img_size[0]}x{self.img_size[1]} frames, got {H}x{W}")
        vit = self.backbone
        x = video.transpose(1, 2).reshape(B * T, C, H, W)
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        if self.temporal_embed is not None:
            N, D = x.shape[1:]
            x = (x.view(B, T, N, D) + self.temporal_embed.view(1, T, 1, D)).view(B * T, N, D)
        x = vit.norm_pre(x)
        for block in vit.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
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


def stdha_block_indices(blocks: list[int] | None, depth: int) -> set[int]:
    """`model.stdha_blocks` (None: all; negative counts from the end) as a set of block indices."""
    if blocks is None:
        return set(range(depth))
    bad = [i for i in blocks if not -depth <= i < depth]
    if bad:
        raise UserError(f"stdha_blocks {bad}: the backbone has {depth} blocks (0..{depth - 1})")
    return {i % depth for i in blocks}


# --- construction ----------------------------------------------------------------------------------
def _create_vit(cfg: ModelConfig) -> VisionTransformer:
    backbone, timm_kwargs = cfg.backbone, cfg.timm_kwargs
    if not timm.is_model(backbone):
        close = timm.list_models(f"*{backbone}*")[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown timm model {backbone!r}{hint}")
    try:
        vit = timm.create_model(
            backbone, pretrained=False, num_classes=0, drop_path_rate=cfg.drop_path_rate, **timm_kwargs
        )
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
        raise UserError(
            "global_pool='' returns every token; zeroi2v needs a pooled feature per frame "
            "(global_pool token, avg, max, avgmax or map)"
        )
    heads = vit.blocks[0].attn.num_heads
    if len(cfg.head_offsets) > heads:
        raise UserError(f"head_offsets has {len(cfg.head_offsets)} entries but the backbone has only {heads} heads")
    return vit


def model_config(backbone: str | ModelConfig, **kwargs) -> ModelConfig:
    """A checked `ModelConfig` from a name and keyword arguments: ModelConfig fields by name, every
    other keyword is a timm argument (added to `timm_kwargs`)."""
    if isinstance(backbone, ModelConfig):
        cfg = dataclasses.replace(backbone, **kwargs)
    else:
        if not isinstance(backbone, str):
            raise UserError(f"backbone must be a timm model name, got {backbone!r}")
        names = {f.name for f in dataclasses.fields(ModelConfig)}
        own = {k: v for k, v in kwargs.items() if k in names}
        extra = {k: v for k, v in kwargs.items() if k not in names}
        own.setdefault("num_classes", 400)
        for key in (
            "head_offsets",
            "adapter_positions",
            "stdha_blocks",
            "st_adapter_positions",
        ):  # tuples are fine in Python
            if isinstance(own.get(key), tuple):
                own[key] = list(own[key])
        own["timm_kwargs"] = {**own.get("timm_kwargs", {}), **extra}
        cfg = ModelConfig(backbone=backbone, **own)
    if cfg.num_classes is None:
        raise UserError("num_classes is needed to build a model (0: a headless feature extractor)")
    return cfg.check()


def create_model(backbone: str | ModelConfig, **kwargs) -> ZeroI2V:
    """Build a ZeroI2V video model on any timm ViT.

    `create_model("vit_base_patch16_clip_quickgelu_224", num_frames=8, num_classes=400,
    pretrained=None, head_offsets=(-1, 1), adapter_ratio=0.25, adapter_scale=0.5, ...)`: the
    keywords are `ModelConfig`'s fields (defaults there; num_classes defaults to 400 here); any other
    keyword (img_size, depth, embed_dim, ...) is passed on to timm. A `ModelConfig` works too.
    """
    cfg = model_config(backbone, **kwargs)
    vit = _create_vit(cfg)
    if cfg.pretrained:
        load_image_weights(vit, cfg.pretrained)
    model = ZeroI2V(vit, cfg)
    set_trainable(model, freeze=cfg.freeze)
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


# --- cost -----------------------------------------------------------------------------------------
def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
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
