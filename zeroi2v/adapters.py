"""Linear adapters and the algebra that folds them into the frozen linear layers.

An adapter is `A(x) = x + s·(W2(W1 x + b1) + b2)`: a bottleneck with no nonlinearity, so it is an
affine map `A(x) = M x + c` with `M = I + s·W2W1` and `c = s·(W2 b1 + b2)`. An affine map next to a
linear layer `L(x) = W x + b` composes into one linear layer:

    adapter before L:  L(A(x)) = (W M) x + (W c + b)
    adapter after  L:  A(L(x)) = (M W) x + (M b + c)

so after training every adapter disappears into the weights it sits beside (zero inference cost).
Dropout between W1 and W2 is a training-time identity at eval, so it does not affect folding.

ZeroI2V places four adapters per block, each next to a linear layer of the frozen ViT:
`attn_in` before the QKV projection, `attn_out` after the attention output projection, `mlp_in`
before fc1, `mlp_out` after fc2. One more position folds the same way but is not the paper's:
`qkv_out`, after the QKV projection, where one adapter gives queries, keys and values different
maps (`attn_in` multiplies all three by one map, so the attention logits grow with the square of
its gain). `AdaptedLinear` is an `nn.Linear` (same weight/bias names as the
layer it replaces, so image checkpoints load unchanged) carrying optional adapters on either side.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from zeroi2v.config import ADAPTER_POSITIONS
from zeroi2v.errors import UserError


class LinearAdapter(nn.Module):
    """x + scale · up(dropout(down(x))); `up` starts at zero so training starts at the image model.

    Initialisation as the reference: `down` truncated normal (std 0.02) with zero bias, `up` zero.

    `bias=False` for an adapter beside a linear layer without bias: its affine map then has no offset
    (c = 0), so folding creates no bias and the merged layer keeps the image model's parameters.
    """

    def __init__(
        self,
        dim: int,
        ratio: float = 0.25,
        scale: float = 0.5,
        dropout: float = 0.0,
        bias: bool = True,
        hidden: int | None = None,
    ):
        super().__init__()
        hidden = hidden or max(1, int(round(dim * ratio)))  # `hidden` overrides the ratio of `dim`
        self.scale = float(scale)
        self.down = nn.Linear(dim, hidden, bias=bias)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.Linear(hidden, dim, bias=bias)
        nn.init.trunc_normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.up.weight)
        if bias:
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(self.drop(self.down(x)))

    @torch.no_grad()
    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) of the equivalent affine map, in float64 for exact folding."""
        w1, w2 = self.down.weight.double(), self.up.weight.double()
        eye = torch.eye(w2.shape[0], dtype=torch.float64, device=w2.device)
        if self.down.bias is None:
            return eye + self.scale * (w2 @ w1), torch.zeros(w2.shape[0], dtype=torch.float64, device=w2.device)
        b1, b2 = self.down.bias.double(), self.up.bias.double()
        return eye + self.scale * (w2 @ w1), self.scale * (w2 @ b1 + b2)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class AdaptedLinear(nn.Linear):
    """A frozen linear layer with an optional adapter before (`adapter_in`) and after (`adapter_out`)."""

    def __init__(
        self, linear: nn.Linear, adapter_in: LinearAdapter | None = None, adapter_out: LinearAdapter | None = None
    ):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.adapter_in = adapter_in
        self.adapter_out = adapter_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter_in is not None:
            x = self.adapter_in(x)
        x = super().forward(x)
        if self.adapter_out is not None:
            x = self.adapter_out(x)
        return x

    @torch.no_grad()
    def folded(self) -> nn.Linear:
        """One plain `nn.Linear` computing exactly what this layer and its adapters compute (eval mode)."""
        adapters = [a for a in (self.adapter_in, self.adapter_out) if a is not None]
        w = self.weight.double()
        b = (
            torch.zeros(self.out_features, dtype=torch.float64, device=w.device)
            if self.bias is None
            else self.bias.double()
        )
        if self.adapter_in is not None:
            m, c = self.adapter_in.affine()
            w, b = w @ m, w @ c + b
        if self.adapter_out is not None:
            m, c = self.adapter_out.affine()
            w, b = m @ w, m @ b + c
        if self.bias is None and all(a.down.bias is None for a in adapters):
            b = None  # bias-free adapters beside a bias-free layer: nothing to add (c = 0)
        out = nn.Linear(
            self.in_features, self.out_features, bias=b is not None, device=self.weight.device, dtype=self.weight.dtype
        )
        out.weight.copy_(w.to(self.weight.dtype))
        if b is not None:
            out.bias.copy_(b.to(self.weight.dtype))
        out.weight.requires_grad_(self.weight.requires_grad)
        if out.bias is not None:
            out.bias.requires_grad_(self.bias.requires_grad if self.bias is not None else True)
        return out


def add_adapters(
    block: nn.Module, positions=ADAPTER_POSITIONS, ratio: float = 0.25, scale: float = 0.5, dropout: float = 0.0
) -> None:
    """Wrap a timm `Block`'s qkv, proj, fc1 and fc2 in `AdaptedLinear` with adapters at `positions`.

    Every bottleneck is `ratio` × the block's width, also `qkv_out`'s (its input is 3 × wider)."""

    def make(dim: int, bias: bool, width: int) -> LinearAdapter:
        return LinearAdapter(dim, ratio, scale, dropout, bias=bias, hidden=max(1, int(round(width * ratio))))

    attn, mlp = block.attn, block.mlp
    slots = {  # position -> (parent module, attribute, side)
        "attn_in": (attn, "qkv", "in"),
        "attn_out": (attn, "proj", "out"),
        "mlp_in": (mlp, "fc1", "in"),
        "mlp_out": (mlp, "fc2", "out"),
        "qkv_out": (attn, "qkv", "out"),
    }
    for pos in positions:
        parent, name, side = slots[pos]
        layer = getattr(parent, name, None)
        if not isinstance(layer, nn.Linear):
            raise UserError(
                f"cannot place adapter '{pos}': the backbone's {type(parent).__name__} has no Linear "
                f"'{name}' (found {type(layer).__name__})"
            )
        if not isinstance(layer, AdaptedLinear):
            layer = AdaptedLinear(layer)
            setattr(parent, name, layer)
        bias = layer.bias is not None  # no bias beside a bias-free layer: folding must not add one
        width = min(layer.in_features, layer.out_features)  # the block's width beside qkv, proj, fc1 and fc2
        if side == "in":
            layer.adapter_in = make(layer.in_features, bias, width)
        else:
            layer.adapter_out = make(layer.out_features, bias, width)


def fold_adapters(module: nn.Module) -> int:
    """Replace every `AdaptedLinear` below `module` by its folded `nn.Linear`; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, AdaptedLinear):
            setattr(module, name, child.folded())
            count += 1
        else:
            count += fold_adapters(child)
    return count
