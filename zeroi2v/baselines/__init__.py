"""Peer methods, re-implemented on the same timm backbone for side-by-side comparison (BASELINES).

They are not ZeroI2V: each adds inference cost (that is the point of the comparison).
- `aim`: AIM (ICLR'23) — a temporal attention pass per block reusing the frozen MSA weights, plus
  bottleneck adapters with GELU (temporal, spatial, parallel MLP adapter).
- `st_adapter`: ST-Adapter (NeurIPS'22) — a bottleneck adapter with a depth-wise 3D (temporal)
  convolution before the MSA of each block.
- `joint`: joint space-time attention — every token attends to all T·N tokens of the clip (frozen
  weights with linear adapters, or full fine-tuning with `freeze=False`).

`create_baseline(method, **create_model_kwargs)` builds them as `ZeroI2V` models whose blocks are
wrapped, so they train, evaluate and save through the same engine (`model.method` in a config).
"""
from __future__ import annotations

from zeroi2v.errors import UserError

METHODS = ("zeroi2v", "aim", "st_adapter", "joint")


def create_baseline(method: str, **kwargs):
    from zeroi2v.model import create_model, set_trainable

    if method == "zeroi2v":
        return create_model(**kwargs)
    if method not in METHODS:
        raise UserError(f"unknown model.method {method!r}; choose from {list(METHODS)}")
    ratio = kwargs.get("adapter_ratio", 0.25)
    scale = kwargs.get("adapter_scale", 0.5)
    if method in ("aim", "st_adapter"):
        base = {**kwargs, "head_offsets": (), "adapter_ratio": 0.0}
        if method == "st_adapter":
            base["temporal_embedding"] = False
        model = create_model(**base)
        if method == "aim":
            from zeroi2v.baselines.aim import AIMBlock
            blocks = [AIMBlock(b, model.num_frames, ratio, scale) for b in model.backbone.blocks]
        else:
            from zeroi2v.baselines.st_adapter import STAdapterBlock
            blocks = [STAdapterBlock(b, model.num_frames, ratio, model.backbone.patch_embed.grid_size)
                      for b in model.backbone.blocks]
    else:
        from zeroi2v.baselines.joint import JointAttention
        model = create_model(**{**kwargs, "head_offsets": ()})
        for block in model.backbone.blocks:
            block.attn = JointAttention(block.attn, model.num_frames)
        blocks = list(model.backbone.blocks)
    import torch.nn as nn
    model.backbone.blocks = nn.Sequential(*blocks)
    model.config = {**model.config, **{k: v for k, v in kwargs.items() if k in model.config},
                    "adapter_ratio": ratio, "adapter_scale": scale, "method": method}
    set_trainable(model, freeze=model.config.get("freeze", True))
    if model.config.get("freeze", True):
        for module in model.modules():  # the methods' own new modules train
            if getattr(module, "is_peer_adapter", False):
                for p in module.parameters():
                    p.requires_grad_(True)
    return model
