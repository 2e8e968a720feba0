"""Joint space-time attention: BASELINE. Every token attends to all T·N tokens of its clip.

Wraps the block's attention module (frozen weights, our linear adapters still around qkv/proj):
tokens (B·T, N, D) are regrouped to (B, T·N, D) for the attention, then split back. Attention
cost grows with T² instead of T.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class JointAttention(nn.Module):
    def __init__(self, attn: nn.Module, num_frames: int):
        super().__init__()
        self.attn, self.num_frames = attn, num_frames

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        BT, N, D = x.shape
        T = self.num_frames
        return self.attn(x.reshape(BT // T, T * N, D)).reshape(BT, N, D)
