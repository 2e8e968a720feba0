"""Spatial-temporal dual-headed attention (STDHA).

A ViT block attends within each frame. STDHA re-assigns a few heads to be *temporal*: for head h
with offset Δt_h, the queries of frame t read the keys and values of frame t+Δt_h (all of that
frame's tokens, class token included). The other heads stay spatial. Only *which frame's K/V a head
reads* changes, so there are no new parameters and no new FLOPs.

Implementation, three paths with one result:
- inference in fp16/bf16 on a CUDA GPU with Triton, when switched on (`ZEROI2V_STDHA_KERNEL=1`, or
  `fused_kernel = True` on a layer; off by default until it is measured faster on a GPU, docs/weights.md,
  "Deploying"): `zeroi2v.kernels.stdha_attention`, a fused kernel in which each head reads its source
  frame's K/V in place (no copy at all).
- otherwise the temporal heads' K and V channels of the fused qkv projection output are shifted along
  the frame axis in place (`shift_kv`), then one `F.scaled_dot_product_attention` call for all heads,
  exactly the image model's attention call, so flash/memory-efficient kernels apply on GPU.
- under `torch.compile` without autograd (compiled inference off that kernel), K and V are gathered out
  of place instead (`gather_kv`), which Inductor handles better (docs/benchmarks.md, GPU check).

At the clip boundary (t+Δt outside [0, T)) the reference implementation keeps the head's own
frame (`boundary="keep"`); `boundary="zero"` reads zeros instead (the head then attends uniformly
over zero values and outputs zeros).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zeroi2v import kernels
from zeroi2v.errors import UserError


def kernel_enabled() -> bool:
    """`ZEROI2V_STDHA_KERNEL=1` turns the fused kernel on (read when an `STDHAttention` is built)."""
    return os.environ.get("ZEROI2V_STDHA_KERNEL", "0").strip().lower() in ("1", "on", "true", "yes")


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
                raise UserError(
                    f"backbone attention has no fused linear '{name}'; STDHA needs timm's standard Attention"
                )
        # anything beyond timm's standard Attention (extra parameters or modules, other head arithmetic,
        # e.g. differential attention) would be silently dropped: refuse it
        known = {"qkv", "q_norm", "k_norm", "attn_drop", "norm", "proj", "proj_drop"}
        extra = [n for n, _ in attn.named_children() if n not in known] + [
            n for n, _ in attn.named_parameters(recurse=False)
        ]
        if extra or attn.qkv.out_features != 3 * attn.num_heads * attn.head_dim:
            raise UserError(
                f"backbone attention {type(attn).__name__} is not timm's standard Attention "
                f"({', '.join(extra) or 'different head layout'}); STDHA supports the standard one"
            )
        self.num_heads = attn.num_heads
        self.head_dim = attn.head_dim
        self.attn_dim = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.qkv = attn.qkv
        self.q_norm = attn.q_norm
        self.k_norm = attn.k_norm
        self.attn_drop = attn.attn_drop
        self.norm = getattr(attn, "norm", nn.Identity())
        self.proj = attn.proj
        self.proj_drop = attn.proj_drop
        self.num_frames = int(num_frames)
        self.head_offsets = tuple(int(o) for o in head_offsets)  # checked by ModelConfig / create_model
        self.boundary = boundary
        self.fused_kernel = kernel_enabled()  # where it applies: see `use_kernel`
        # heads 0..k-1 cover every non-zero offset; only their K/V are shifted, the others are read in place
        self.num_temporal = max((h + 1 for h, o in enumerate(self.head_offsets) if o != 0), default=0)

    @property
    def temporal(self) -> bool:
        return self.num_temporal > 0

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        return self.project(self.attend_heads(self.qkv(x), attn_mask, is_causal))

    def project(self, heads: torch.Tensor) -> torch.Tensor:
        """(B·T, H, N, d) attention output -> heads merged, timm's (norm,) output projection and dropout."""
        BT, _, N, _ = heads.shape
        return self.proj_drop(self.proj(self.norm(heads.transpose(1, 2).reshape(BT, N, self.attn_dim))))

    def attend_heads(
        self, qkv: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """Fused qkv output (B·T, N, 3·H·d) -> attention output (B·T, H, N, d), one SDPA call for all heads."""
        BT, N, _ = qkv.shape
        qkv = qkv.reshape(BT, N, 3, self.num_heads, self.head_dim)
        if self.temporal and BT % self.num_frames:
            raise UserError(f"STDHA expects batches of whole clips of {self.num_frames} frames, got {BT} frames")
        if self.temporal and self.use_kernel(qkv, attn_mask, is_causal):
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            return kernels.stdha_attention(
                self.q_norm(q), self.k_norm(k), v, self.head_offsets, self.num_frames, self.boundary
            )
        # compiled inference gathers K/V out of place (Inductor turns the in-place shift into copies of the
        # whole qkv output); eager keeps the in-place shift
        gather = self.temporal and torch.compiler.is_compiling() and not torch.is_grad_enabled()
        if self.temporal and not gather:
            self.shift_kv(qkv)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if gather:
            k, v = self.gather_kv(k), self.gather_kv(v)
        q, k = self.q_norm(q), self.k_norm(k)  # per token and head: commutes with the frame shift
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=self.attn_drop.p if self.training else 0.0
        )

    def use_kernel(self, qkv: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool) -> bool:
        """The fused kernel serves half-precision inference without mask or dropout where Triton runs."""
        return (
            self.fused_kernel
            and attn_mask is None
            and not is_causal
            and qkv.dtype in (torch.float16, torch.bfloat16)
            and not (self.training and self.attn_drop.p > 0)
            and not (torch.is_grad_enabled() and qkv.requires_grad)
            and not torch.compiler.is_exporting()
            and kernels.triton_runs_on(qkv)
        )

    def shift_kv(self, qkv: torch.Tensor, frame_by_frame: bool | None = None) -> None:
        """In place on (B·T, N, 3, H, d): temporal head h's K and V of frame t become those of t+Δt_h.

        Only the overwritten frames of the temporal heads' K/V are copied. On the CPU, frame by frame in
        an order that reads each source before it is overwritten (one copy, no clone); elsewhere, where
        each op is a kernel launch, one clone of the source frames and one slice copy per head. The
        projection output is fresh, so overwriting it is safe, and autograd routes the gradients through
        the copies to the source frames. Frames whose source lies outside the clip keep their own K/V
        (`boundary="keep"`) or get zeros (`"zero"`). `frame_by_frame`: None = by device.
        """
        BT, N, _, H, d = qkv.shape
        if frame_by_frame is None:
            frame_by_frame = qkv.device.type == "cpu"
        T = self.num_frames
        kv = qkv.view(BT // T, T, N, 3, H, d)[:, :, :, 1:]  # (B, T, N, 2, H, d), a view
        for h, dt in enumerate(self.head_offsets[: self.num_temporal]):
            if dt == 0:
                continue
            head = kv[..., h, :]  # (B, T, N, 2, d), a view
            dst, src, edge = (
                (slice(-dt, T), slice(0, T + dt), slice(0, -dt))
                if dt < 0
                else (slice(0, T - dt), slice(dt, T), slice(max(T - dt, 0), T))
            )
            if frame_by_frame:
                for t in range(T - 1, -dt - 1, -1) if dt < 0 else range(0, T - dt):
                    head[:, t] = head[:, t + dt]
            elif T > abs(dt):
                head[:, dst] = head[:, src].clone()
            if self.boundary == "zero":
                head[:, edge] = 0

    def gather_kv(self, x: torch.Tensor) -> torch.Tensor:
        """Out of place on (B·T, H, N, d): head h of frame t gets frame t+Δt_h's (the same rule as `shift_kv`)."""
        BT, H = x.shape[:2]
        T = self.num_frames
        frame = torch.arange(T, device=x.device)[:, None]
        offsets = list(self.head_offsets) + [0] * (H - len(self.head_offsets))
        source = frame + torch.tensor(offsets, device=x.device)[None, :]  # (T, H)
        inside = (source >= 0) & (source < T)
        out = x.view(BT // T, T, *x.shape[1:])[:, torch.where(inside, source, frame), torch.arange(H, device=x.device)]
        if self.boundary == "zero":
            out = out * inside[None, :, :, None, None].to(out.dtype)
        return out.view_as(x)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, num_frames={self.num_frames}, "
            f"head_offsets={self.head_offsets}, boundary={self.boundary}"
        )
