"""Peer methods, re-implemented on the same timm backbone for side-by-side comparison (BASELINES).

They are not ZeroI2V: each adds inference cost (that is the point of the comparison).
- `aim`: AIM (ICLR'23) — a temporal attention pass per block reusing the frozen MSA weights, plus
  bottleneck adapters with GELU (temporal, spatial, parallel MLP adapter).
- `st_adapter`: ST-Adapter (NeurIPS'22) — a bottleneck adapter with a depth-wise 3D (temporal)
  convolution before the MSA of each block.
- `joint`: joint space-time attention — every token attends to all T·N tokens of the clip (frozen
  weights with linear adapters, or full fine-tuning with `freeze=False`).

Each builder takes a `ModelConfig` and returns a `ZeroI2V` model whose blocks are wrapped and whose `method`
names the peer (a peer is never `merged`), so the
peers train, evaluate and save through the same engine (`model.method` in a config;
`zeroi2v.build.build_model` picks the builder).
"""

from __future__ import annotations

import dataclasses

import torch.nn as nn

from zeroi2v.baselines.aim import AIMBlock
from zeroi2v.baselines.joint import JointAttention
from zeroi2v.baselines.st_adapter import STAdapterBlock
from zeroi2v.config import ModelConfig
from zeroi2v.model import ZeroI2V, create_model, set_trainable


def _finish(model: ZeroI2V, cfg: ModelConfig, blocks: list[nn.Module]) -> ZeroI2V:
    """Install the wrapped blocks, record the peer's own config, train the new modules."""
    model.backbone.blocks = nn.Sequential(*blocks)
    model.config = cfg
    set_trainable(model, freeze=cfg.freeze)
    if cfg.freeze:
        for module in model.modules():  # the methods' own new modules train
            if getattr(module, "is_peer_adapter", False):
                for p in module.parameters():
                    p.requires_grad_(True)
    return model


def build_aim(cfg: ModelConfig) -> ZeroI2V:
    model = create_model(dataclasses.replace(cfg, head_offsets=[], adapter_ratio=0.0))
    blocks = [AIMBlock(b, model.num_frames, cfg.adapter_ratio, cfg.adapter_scale) for b in model.backbone.blocks]
    return _finish(model, cfg, blocks)


def build_st_adapter(cfg: ModelConfig) -> ZeroI2V:
    model = create_model(dataclasses.replace(cfg, head_offsets=[], adapter_ratio=0.0, temporal_embedding=False))
    grid = model.backbone.patch_embed.grid_size
    blocks = [
        STAdapterBlock(b, model.num_frames, cfg.adapter_ratio, grid, cfg.st_adapter_positions)
        for b in model.backbone.blocks
    ]
    return _finish(model, cfg, blocks)


def build_joint(cfg: ModelConfig) -> ZeroI2V:
    model = create_model(dataclasses.replace(cfg, head_offsets=[]))
    for block in model.backbone.blocks:
        block.attn = JointAttention(block.attn, model.num_frames)
    return _finish(model, cfg, list(model.backbone.blocks))
