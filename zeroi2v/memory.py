"""Training-memory savers that change no number the model computes.

Backpropagating through a frozen backbone still needs the activations of every nonlinearity, and
those dominate ZeroI2V's training memory. Three savings, each recomputing something cheap in the
backward pass instead of keeping it:

- OpenAI CLIP's QuickGELU, `x · sigmoid(1.702 x)`, written as timm writes it, makes autograd keep two
  tensors of the MLP's hidden width per block (`x` and the sigmoid); `QuickGELU` keeps only `x` and
  recomputes the sigmoid (one elementwise op): 4·D per token per block.
- The adapters after each pre-norm (before qkv and fc1) need the norm's output for their weight
  gradient, a copy of the residual stream the norm itself does not keep. `run_block` computes
  "norm, then adapter" under activation checkpointing: only the block input is kept and the norm and
  the small adapter are recomputed (about 2% of a block's FLOPs): 1.25·D per token per adapter.
- The adapter after the attention's output projection needs the projection's output. With
  `recompute_proj` the projection and that adapter are recomputed in backward from the heads'
  outputs, which SDPA keeps for its own backward anyway (one D×D matmul, ~4% of a block's
  training FLOPs): D per token per block.

In `zeroi2v bench`'s training table (ViT-B/16 CLIP, 8 frames, batch 2, CPU allocator) they take
ZeroI2V's peak from 2767 to 1945 MiB. Forward values are identical; gradients equal to rounding.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class _QuickGELUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * torch.sigmoid(1.702 * x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(1.702 * x)
        return grad * (s + 1.702 * x * s * (1 - s))


class QuickGELU(nn.Module):
    """timm's QuickGELU with a leaner backward (plain expression when no gradient is needed, so
    inference, ONNX and torch.export see ordinary ops)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _QuickGELUFunction.apply(x)
        return x * torch.sigmoid(1.702 * x)


def lean_activations(module: nn.Module) -> int:
    """Swap timm's QuickGELU modules below `module` for the lean one; returns how many."""
    from timm.layers.activations import QuickGELU as TimmQuickGELU

    count = 0
    for name, child in list(module.named_children()):
        if type(child) is TimmQuickGELU:
            setattr(module, name, QuickGELU())
            count += 1
        else:
            count += lean_activations(child)
    return count


def _norm_then_adapter(norm: nn.Module, adapter: nn.Module):
    def run(x: torch.Tensor) -> torch.Tensor:
        return adapter(norm(x))
    return run


def can_recompute(block: nn.Module) -> bool:
    """timm's standard Block with a plain Mlp, and an adapter after at least one of its pre-norms."""
    from timm.layers import Mlp
    from timm.models.vision_transformer import Block

    from zeroi2v.adapters import AdaptedLinear
    if type(block) is not Block or type(block.mlp) is not Mlp:
        return False
    qkv, fc1 = getattr(block.attn, "qkv", None), getattr(block.mlp, "fc1", None)
    return (any(isinstance(layer, AdaptedLinear) and layer.adapter_in is not None for layer in (qkv, fc1)))


def run_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's `Block.forward` (and `Mlp.forward`) with each pre-norm adapter (and, in STDHA, the output
    projection with its adapter) recomputed in backward."""
    from torch.utils.checkpoint import checkpoint

    from zeroi2v.stdha import STDHAttention

    attn, mlp = block.attn, block.mlp
    if isinstance(attn, STDHAttention) and getattr(attn.qkv, "adapter_in", None) is not None:
        h = checkpoint(_norm_then_adapter(block.norm1, attn.qkv.adapter_in), x, use_reentrant=False)
        lean_proj = getattr(attn.proj, "adapter_out", None) is not None
        x = x + block.drop_path1(block.ls1(attn(h, pre_adapted=True, recompute_proj=lean_proj)))
    else:
        x = x + block.drop_path1(block.ls1(attn(block.norm1(x))))
    if getattr(mlp.fc1, "adapter_in", None) is not None:
        h = checkpoint(_norm_then_adapter(block.norm2, mlp.fc1.adapter_in), x, use_reentrant=False)
        h = mlp.fc1(h, skip_in=True)
    else:
        h = mlp.fc1(block.norm2(x))
    h = mlp.fc2(mlp.norm(mlp.drop1(mlp.act(h))))
    return x + block.drop_path2(block.ls2(mlp.drop2(h)))
