"""The ablations' non-mergeable variant: ZeroI2V with a GELU inside every adapter (down -> GELU -> up).

`GELUAdapter` is a `LinearAdapter` whose bottleneck is not linear, so it cannot be folded; a model
built with it trains through the same engine (`zeroi2v.train.fit` with `build=`):

    python -m benchmarks.gelu_adapters train CONFIG.yaml [--set k=v ...]
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from zeroi2v.adapters import LinearAdapter
from zeroi2v.build import build_model
from zeroi2v.config import ModelConfig, load_config
from zeroi2v.errors import UserError
from zeroi2v.train import exit_code, train


class GELUAdapter(LinearAdapter):
    """x + scale · up(dropout(GELU(down(x)))): the same parameters as a `LinearAdapter`, not affine."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.up(self.drop(F.gelu(self.down(x))))

    def affine(self):
        raise TypeError("a GELU adapter is not an affine map: it cannot be folded")


def with_gelu_adapters(model: nn.Module) -> nn.Module:
    """A copy of `model` whose every `LinearAdapter` is a `GELUAdapter` with the same weights."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is LinearAdapter:
                down = child.down
                gelu = GELUAdapter(down.in_features, hidden=down.out_features, bias=down.bias is not None)
                gelu.scale = child.scale
                gelu.drop = child.drop
                gelu.load_state_dict(child.state_dict())
                gelu.train(child.training)
                setattr(module, name, gelu.to(child.down.weight.device))
    return model


def build_gelu_model(cfg: ModelConfig) -> nn.Module:
    if cfg.method != "zeroi2v":
        raise UserError(f"GELU adapters are a ZeroI2V variant, not one of {cfg.method}")
    return with_gelu_adapters(build_model(cfg))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["train"] or len(argv) < 2:
        raise SystemExit("usage: python -m benchmarks.gelu_adapters train CONFIG.yaml [--set k=v ...]")
    sets = argv[argv.index("--set") + 1 :] if "--set" in argv else []
    result = train(load_config(argv[1], sets), build=build_gelu_model)
    return exit_code(result["interrupted"]) if "interrupted" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
