"""Spatial-temporal dual-headed attention (STDHA).

A ViT block attends within each frame. STDHA re-assigns a few heads to be *temporal*: for head h
with offset Δt_h, the queries of frame t read the keys and values of frame t+Δt_h (all of that
frame's tokens, class token included). The other heads stay spatial. Only *which frame's K/V a head
reads* changes, so there are no new parameters and no new FLOPs.

Implementation: only the temporal heads' K and V are copied: viewed as (B, T, H, N, d) straight from
the fused qkv output and re-indexed with precomputed (frame, head) tables, one gather per tensor (no
clone of the whole K/V, no loop over frames). Spatial heads read their K/V in place. The attention
itself is `F.scaled_dot_product_attention` (once for the temporal heads, once for the others), so
flash/memory-efficient kernels apply on GPU, and the two results are written into the merged-head
output in the one copy that merging heads costs anyway.

At the clip boundary (t+Δt outside [0, T)) the reference implementation keeps the head's own
frame (`boundary="keep"`); `boundary="zero"` reads zeros instead (the head then attends uniformly
over zero values and outputs zeros).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

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


def shift_source(head_offsets: Sequence[int], num_heads: int, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(frame, valid), both (T, H): head h of frame t reads K/V of frame `frame[t, h]`, head h.

    `valid[t, h]` is False where t+Δt_h falls outside the clip; there `frame` is t itself (the
    reference's rule: keep the head's own frame).
    """
    offsets = list(head_offsets) + [0] * (num_heads - len(head_offsets))
    t = torch.arange(num_frames).view(-1, 1)
    src = t + torch.tensor(offsets, dtype=torch.long).view(1, -1)
    valid = (src >= 0) & (src < num_frames)
    return torch.where(valid, src, t), valid


def shift_frames(x: torch.Tensor, frame: torch.Tensor, head: torch.Tensor, num_frames: int,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Re-index K or V of shape (B·T, H, N, d): out[b, t, h] = x[b, frame[t, h], h], in one gather.

    `x` may be a strided view (the K/V slice of the fused qkv output); only the result is materialised.
    With `valid` (boundary="zero"), heads reading outside the clip get zeros.
    """
    BT, H, N, d = x.shape
    out = x.view(BT // num_frames, num_frames, H, N, d)[:, frame, head]
    if valid is not None:
        out = out * valid.view(1, num_frames, H, 1, 1).to(out.dtype)
    return out.view(BT, H, N, d)


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
        # anything beyond timm's standard Attention (extra parameters or modules, other head arithmetic,
        # e.g. differential attention) would be silently dropped: refuse it
        known = {"qkv", "q_norm", "k_norm", "attn_drop", "norm", "proj", "proj_drop"}
        extra = [n for n, _ in attn.named_children() if n not in known] + [n for n, _ in attn.named_parameters(recurse=False)]
        if extra or attn.qkv.out_features != 3 * attn.num_heads * attn.head_dim:
            raise UserError(f"backbone attention {type(attn).__name__} is not timm's standard Attention "
                            f"({', '.join(extra) or 'different head layout'}); STDHA supports the standard one")
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
        if boundary not in BOUNDARY_MODES:
            raise UserError(f"boundary must be one of {BOUNDARY_MODES}, got {boundary!r}")
        self.boundary = boundary
        # heads 0..k-1 cover every non-zero offset; only their K/V are gathered, the others are read in place
        self.num_temporal = max((h + 1 for h, o in enumerate(self.head_offsets) if o != 0), default=0)
        frame, valid = shift_source(self.head_offsets[:self.num_temporal], self.num_temporal, self.num_frames)
        self.register_buffer("kv_frame", frame, persistent=False)
        self.register_buffer("kv_head", torch.arange(self.num_temporal).expand(self.num_frames, -1).clone(),
                             persistent=False)
        self.register_buffer("kv_valid", valid if boundary == "zero" else None, persistent=False)

    @property
    def temporal(self) -> bool:
        return self.num_temporal > 0

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                pre_adapted: bool = False, recompute_proj: bool = False) -> torch.Tensor:
        """`pre_adapted`: `x` already went through the adapter before the qkv projection.
        `recompute_proj`: the output projection (and its adapter) is recomputed in backward from the
        heads' outputs, which SDPA keeps anyway, instead of keeping its own input (`zeroi2v.memory`)."""
        BT, N, C = x.shape
        qkv = self.qkv(x, skip_in=True) if pre_adapted else self.qkv(x)
        qkv = qkv.reshape(BT, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        heads = self.attend_heads(q, k, v, attn_mask, is_causal)
        if recompute_proj:
            return torch.utils.checkpoint.checkpoint(self.project, *heads, use_reentrant=False)
        return self.project(*heads)

    def project(self, *heads: torch.Tensor) -> torch.Tensor:
        """The heads' outputs merged, then timm's (norm,) output projection and dropout."""
        return self.proj_drop(self.proj(self.norm(merge_heads(heads, self.attn_dim))))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
               is_causal: bool = False) -> torch.Tensor:
        """q, k, v (B·T, H, N, d) -> the heads' outputs merged, (B·T, N, H·d): where STDHA differs."""
        return merge_heads(self.attend_heads(q, k, v, attn_mask, is_causal), self.attn_dim)

    def attend_heads(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                     is_causal: bool = False) -> list[torch.Tensor]:
        """The attention outputs of the temporal heads and of the spatial heads, each (B·T, h, N, d)."""
        dropout_p = self.attn_drop.p if self.training else 0.0
        if not self.temporal:
            return [F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p)]
        if q.shape[0] % self.num_frames:
            raise UserError(f"STDHA expects batches of whole clips of {self.num_frames} frames, got {q.shape[0]} frames")
        # temporal heads attend to gathered K/V; spatial heads to their own K/V (views, nothing copied)
        k_t = self.num_temporal
        kt = shift_frames(k[:, :k_t], self.kv_frame, self.kv_head, self.num_frames, self.kv_valid)
        vt = shift_frames(v[:, :k_t], self.kv_frame, self.kv_head, self.num_frames, self.kv_valid)
        heads = [F.scaled_dot_product_attention(q[:, :k_t], kt, vt, attn_mask=_heads(attn_mask, 0, k_t),
                                                is_causal=is_causal, dropout_p=dropout_p)]
        if k_t < self.num_heads:
            heads.append(F.scaled_dot_product_attention(
                q[:, k_t:], k[:, k_t:], v[:, k_t:], attn_mask=_heads(attn_mask, k_t, self.num_heads),
                is_causal=is_causal, dropout_p=dropout_p))
        return heads

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, num_frames={self.num_frames}, head_offsets={self.head_offsets}, boundary={self.boundary}"


def merge_heads(heads: Sequence[torch.Tensor], attn_dim: int) -> torch.Tensor:
    """(B·T, h_i, N, d) pieces -> (B·T, N, H·d) in the one copy that merging heads costs anyway."""
    BT, _, N, _ = heads[0].shape
    if len(heads) == 1:
        return heads[0].transpose(1, 2).reshape(BT, N, attn_dim)
    return torch.cat([h.transpose(1, 2) for h in heads], dim=2).reshape(BT, N, attn_dim)


def _heads(mask: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    """The slice of an attention mask for heads start..stop-1 (a mask without a head axis applies to all)."""
    if mask is None or mask.dim() < 4 or mask.shape[1] == 1:
        return mask
    return mask[:, start:stop]
