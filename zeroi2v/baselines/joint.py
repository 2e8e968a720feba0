"""Joint space-time attention: BASELINE. Every token attends to all T·N tokens of its clip.

Wraps the block's attention module (frozen weights, our linear adapters still around qkv/proj):
tokens (B·T, N, D) are regrouped to (B, T·N, D) for the attention, then split back. Attention
cost grows with T² instead of T.

Joint attention is blind to frame order unless the tokens carry it: attention over the T·N tokens
of a clip is permutation-equivariant, and the spatial position embedding is the same in every frame.
So, as in TimeSformer / ViViT, each block has a learned temporal position embedding (T × D, one
vector per frame, added to the tokens of frame t where they enter the joint attention), initialised
small and random (std 0.02) so the frames are told apart from the first step; it trains with the
adapters. The model's own temporal embedding (at the input, zero-initialised) stays as in ZeroI2V.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class TemporalPositionEmbedding(nn.Module):
    """(T, D) learned table added per frame: (B·T, N, D) -> same shape."""

    is_peer_adapter = True  # trains while the backbone is frozen (see baselines.create_baseline)

    def __init__(self, num_frames: int, dim: int, std: float = 0.02):
        super().__init__()
        self.num_frames = num_frames
        self.temporal_embed = nn.Parameter(torch.randn(num_frames, dim) * std)  # no weight decay (by name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        BT, N, D = x.shape
        T = self.num_frames
        return (x.view(BT // T, T, N, D) + self.temporal_embed.view(1, T, 1, D).to(x.dtype)).view(BT, N, D)


class JointAttention(nn.Module):
    def __init__(self, attn: nn.Module, num_frames: int, temporal_position: bool = True):
        super().__init__()
        self.attn, self.num_frames = attn, num_frames
        dim = attn.qkv.in_features
        self.time_embed = TemporalPositionEmbedding(num_frames, dim) if temporal_position else None

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        BT, N, D = x.shape
        T = self.num_frames
        if self.time_embed is not None:
            x = self.time_embed(x)
        return self.attn(x.reshape(BT // T, T * N, D)).reshape(BT, N, D)
