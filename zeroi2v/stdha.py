"""Spatial-temporal dual-headed attention (STDHA).

A ViT block attends within each frame. STDHA re-assigns a few heads to be *temporal*: for head h
with offset Δt_h, the queries of frame t read the keys and values of frame t+Δt_h (all of that
frame's tokens, class token included). The other heads stay spatial. Only *which frame's K/V a head
reads* changes, so there are no new parameters and no new FLOPs.

Implementation: K and V of a clip are viewed as (B, T·H, N, d) and re-indexed with one
`index_select` along the (frame, head) axis, using a precomputed index. That is a single gather
per tensor (no per-head clone, no loop over frames), then the attention itself is
`F.scaled_dot_product_attention`, so flash/memory-efficient kernels apply on GPU.

At the clip boundary (t+Δt outside [0, T)) the reference implementation keeps the head's own
frame (`boundary="keep"`); `boundary="zero"` reads zeros instead (the head then outputs zeros).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zeroi2v.errors import UserError

BOUNDARY_MODES = ("keep", "zero")


def check_head_offsets(head_offsets: Sequence[int], num_heads: int, num_frames: int) -> tuple[int, ...]:
    """Validate a per-head offset list against the backbone and clip length (one-line errors)."""
    try:
        offsets = tuple(int(o) for o in head_offsets)
    except (TypeError, ValueError):
        raise UserError(f"head_offsets must be a list of integers, got {head_offsets!r}") from None
    if any(o != float(r) for o, r in zip(offsets, head_offsets)):
        raise UserError(f"head_offsets must be integers, got {list(head_offsets)}")
    if len(offsets) > num_heads:
        raise UserError(f"head_offsets has {len(offsets)} entries but the backbone has only {num_heads} heads")
    bad = [o for o in offsets if abs(o) >= num_frames]
    if bad:
        raise UserError(f"head_offsets {list(offsets)}: |Δt| must be < num_frames={num_frames} (got {bad})")
    return offsets


def shift_index(head_offsets: Sequence[int], num_heads: int, num_frames: int, boundary: str = "keep") -> torch.Tensor:
    """Index into the flattened (frame, head) axis: entry t·H+h holds the frame·H+head to read.

    With boundary="zero", out-of-range entries point at T·H, one past the end (a zero slot).
    """
    if boundary not in BOUNDARY_MODES:
        raise UserError(f"boundary must be one of {BOUNDARY_MODES}, got {boundary!r}")
    offsets = list(head_offsets) + [0] * (num_heads - len(head_offsets))
    t = torch.arange(num_frames).view(-1, 1)
    h = torch.arange(num_heads).view(1, -1)
    src = t + torch.tensor(offsets).view(1, -1)
    valid = (src >= 0) & (src < num_frames)
    if boundary == "keep":
        index = torch.where(valid, src, t) * num_heads + h
    else:
        index = torch.where(valid, src * num_heads + h, torch.full_like(src, num_frames * num_heads))
    return index.flatten()


def shift_frames(x: torch.Tensor, index: torch.Tensor, num_frames: int, zero_slot: bool = False) -> torch.Tensor:
    """Re-index K or V of shape (B·T, H, N, d) along (frame, head) with a `shift_index`."""
    BT, H, N, d = x.shape
    x = x.reshape(BT // num_frames, num_frames * H, N, d)
    if zero_slot:
        x = torch.cat([x, x.new_zeros(x.shape[0], 1, N, d)], dim=1)
    return x.index_select(1, index).reshape(BT, H, N, d)


class STDHAttention(nn.Module):
    """timm's `Attention` with temporal heads; same submodules, so the same state-dict keys.

    Tokens arrive as (B·T, N, C), frames of a clip contiguous (frame index fastest).
    """

    def __init__(self, attn: nn.Module, num_frames: int, head_offsets: Sequence[int] = (), boundary: str = "keep"):
        super().__init__()
        if getattr(attn, "gate", None) is not None:
            raise UserError("gated attention backbones are not supported by STDHA")
        for name in ("qkv", "proj"):
            if not isinstance(getattr(attn, name, None), nn.Linear):
                raise UserError(f"backbone attention has no fused linear '{name}'; STDHA needs timm's standard Attention")
        self.num_heads = attn.num_heads
        self.head_dim = attn.head_dim
        self.attn_dim = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.scale = self.head_dim ** -0.5
        self.qkv = attn.qkv
        self.q_norm = attn.q_norm
        self.k_norm = attn.k_norm
        self.attn_drop = attn.attn_drop
        self.norm = getattr(attn, "norm", nn.Identity())
        self.proj = attn.proj
        self.proj_drop = attn.proj_drop
        self.num_frames = int(num_frames)
        self.head_offsets = check_head_offsets(head_offsets, self.num_heads, self.num_frames)
        self.boundary = boundary
        self.register_buffer(
            "kv_index", shift_index(self.head_offsets, self.num_heads, self.num_frames, boundary), persistent=False
        )

    @property
    def temporal(self) -> bool:
        return any(o != 0 for o in self.head_offsets)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        BT, N, C = x.shape
        qkv = self.qkv(x).reshape(BT, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.temporal:
            if BT % self.num_frames:
                raise UserError(f"STDHA expects batches of whole clips of {self.num_frames} frames, got {BT} frames")
            zero = self.boundary == "zero"
            k = shift_frames(k, self.kv_index, self.num_frames, zero)
            v = shift_frames(v, self.kv_index, self.num_frames, zero)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal,
            dropout_p=self.attn_drop.p if self.training else 0.0,
        )
        x = x.transpose(1, 2).reshape(BT, N, self.attn_dim)
        x = self.norm(x)
        x = self.proj(x)
        return self.proj_drop(x)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, num_frames={self.num_frames}, head_offsets={self.head_offsets}, boundary={self.boundary}"
