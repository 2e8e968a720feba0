"""Training-memory savers: module substitutions for training that change no number the model computes.

Backpropagating through a frozen backbone still needs the activations of every nonlinearity, and
those dominate ZeroI2V's training memory. `lean_training(model)` swaps in modules that recompute
something cheap in the backward pass instead of keeping it. The substitutes own the same submodules
under the same names, so parameters, state-dict keys and checkpoints are unchanged; the model as
built by `create_model` (and every merged or exported model) stays plain timm + STDHA.

- `LeanQuickGELU`: OpenAI CLIP's QuickGELU `x · sigmoid(1.702 x)`, written as timm writes it, makes
  autograd keep two tensors of the MLP's hidden width per block (`x` and the sigmoid); this one keeps
  only `x` and recomputes the sigmoid (one elementwise op): 4·D per token per block.
- `LeanBlock`: timm's `Block` where the adapters after each pre-norm (before qkv and fc1) run as
  "norm, then adapter" under activation checkpointing (their input, the norm's output, is not kept:
  1.25·D per token per adapter), and the attention's output projection with its adapter is recomputed
  from the heads' outputs, which SDPA keeps for its own backward anyway (D per token per block).

What they save and cost is measured in `docs/benchmarks.md` (training table of `zeroi2v bench`).
Forward values are identical, gradients equal to rounding (tests/test_core.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from timm.layers.activations import QuickGELU
from timm.models.vision_transformer import Block
from torch.utils.checkpoint import checkpoint

from zeroi2v.adapters import AdaptedLinear
from zeroi2v.stdha import STDHAttention


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


class LeanQuickGELU(nn.Module):
    """timm's QuickGELU with a leaner backward (the plain expression when no gradient is needed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _QuickGELUFunction.apply(x)
        return x * torch.sigmoid(1.702 * x)


def _norm_then_adapter(norm: nn.Module, adapter: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return adapter(norm(x))


class LeanBlock(nn.Module):
    """timm's `Block.forward` (and `Mlp.forward`) with the pre-norm adapters and the adapted output
    projection recomputed in backward. Holds the block's own submodules under their own names."""

    PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")

    def __init__(self, block: Block):
        super().__init__()
        for name in self.PARTS:
            setattr(self, name, getattr(block, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, mlp = self.attn, self.mlp
        qkv = attn.qkv
        if getattr(qkv, "adapter_in", None) is not None:
            h = checkpoint(_norm_then_adapter, self.norm1, qkv.adapter_in, x, use_reentrant=False)
        else:
            h = self.norm1(x)
        heads = attn.attend_heads(F.linear(h, qkv.weight, qkv.bias))  # qkv without its (applied) input adapter
        if getattr(attn.proj, "adapter_out", None) is not None:
            out = checkpoint(attn.project, heads, use_reentrant=False)
        else:
            out = attn.project(heads)
        x = x + self.drop_path1(self.ls1(out))
        fc1 = mlp.fc1
        if getattr(fc1, "adapter_in", None) is not None:
            h = checkpoint(_norm_then_adapter, self.norm2, fc1.adapter_in, x, use_reentrant=False)
            h = F.linear(h, fc1.weight, fc1.bias)
        else:
            h = fc1(self.norm2(x))
        h = mlp.fc2(mlp.norm(mlp.drop1(mlp.act(h))))
        return x + self.drop_path2(self.ls2(mlp.drop2(h)))


def _can_lean(block: nn.Module) -> bool:
    """Exactly timm's Block (whose forward LeanBlock restates) with STDHA, a plain Mlp and an adapted qkv,
    and only the adapters LeanBlock restates: one after qkv or after fc1 (not a ZeroI2V position, but a
    user may add one) would be skipped in training, so such a block stays as it is."""
    return (
        type(block) is Block
        and type(block.mlp) is Mlp
        and type(block.attn) is STDHAttention
        and isinstance(block.attn.qkv, AdaptedLinear)
        and block.attn.qkv.adapter_out is None
        and getattr(block.mlp.fc1, "adapter_out", None) is None
        and {n for n, _ in block.named_children()} == set(LeanBlock.PARTS)
    )


def lean_training(model: nn.Module) -> nn.Module:
    """Swap in the lean substitutes (in place) for training; returns the model. Outputs are unchanged,
    so a lean model saves, evaluates and merges like the original."""
    for name, child in list(model.named_children()):
        if type(child) is QuickGELU:
            setattr(model, name, LeanQuickGELU())
        elif _can_lean(child):
            setattr(model, name, LeanBlock(child))
            lean_training(getattr(model, name))
        else:
            lean_training(child)
    return model
