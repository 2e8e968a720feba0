"""Training-memory savers that change no number the model computes.

Backpropagating through a frozen backbone still needs the activations of every nonlinearity, and
those dominate ZeroI2V's training memory. OpenAI CLIP's QuickGELU, `x · sigmoid(1.702 x)`, written
as timm writes it, makes autograd keep two tensors of the MLP's hidden width per block (`x` and the
sigmoid); `QuickGELU` below keeps only `x` and recomputes the sigmoid in the backward pass (one
elementwise op), which frees 4·D per token per block, about a fifth of a CLIP ViT's activations.
Forward values are bit-identical to timm's; gradients equal to rounding.
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
