"""Structural reparameterisation: fold every adapter into its neighbouring linear layer.

The result is the image ViT's own architecture with new weights (plus STDHA's K/V re-indexing and
the T×D temporal table), so it costs what the image model costs. The fold is checked numerically on
a random clip: a merge that changes outputs is an error, never a silent degradation.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from zeroi2v.adapters import fold_adapters
from zeroi2v.errors import UserError
from zeroi2v.model import ZeroI2V


class MergeError(RuntimeError):
    """The folded model does not reproduce the adapted model's outputs."""


@torch.no_grad()
def max_abs_error(model_a: torch.nn.Module, model_b: torch.nn.Module, video: torch.Tensor) -> float:
    """Largest |a(x) - b(x)| on `video`, both models in eval mode (training flags restored)."""
    flags = model_a.training, model_b.training
    model_a.eval(), model_b.eval()
    try:
        return (model_a(video).double() - model_b(video).double()).abs().max().item()
    finally:
        model_a.train(flags[0]), model_b.train(flags[1])


def random_clip(model: ZeroI2V, batch: int = 2, seed: int = 0) -> torch.Tensor:
    param = next(model.parameters())
    h, w = model.img_size
    gen = torch.Generator().manual_seed(seed)
    clip = torch.randn(batch, 3, model.num_frames, h, w, generator=gen)
    return clip.to(device=param.device, dtype=param.dtype)


def reparameterize(
    model: ZeroI2V, verify: bool = True, atol: float = 1e-4, video: torch.Tensor | None = None
) -> ZeroI2V:
    """Return a new model with every adapter folded in (the input model is not modified).

    With `verify`, both models run on `video` (default: a random clip) and a max abs difference
    above `atol` (relative to the output scale, for outputs larger than 1) raises `MergeError`.
    The error is stored on the result as `merged.merge_error`.
    """
    model = getattr(model, "module", model)  # DDP
    if model.config.method != "zeroi2v":
        raise UserError(f"{model.config.method} is a baseline with nonlinear/extra modules: it cannot be merged")
    merged = copy.deepcopy(model).eval()
    for block in merged.backbone.blocks:
        fold_adapters(block)
    timm_kwargs = _bias_flags(model, merged, dict(model.config.timm_kwargs))
    merged.config = dataclasses.replace(model.config, adapter_ratio=0.0, adapter_dropout=0.0, timm_kwargs=timm_kwargs)
    merged.merge_error = None
    if verify:
        clip = video if video is not None else random_clip(model)
        with torch.no_grad():
            was = model.training
            ref_scale = max(1.0, model.eval()(clip).abs().max().item())
            model.train(was)
        err = max_abs_error(model, merged, clip)
        merged.merge_error = err
        if not err <= atol * ref_scale:
            raise MergeError(
                f"merged model differs from the adapted model: max abs error {err:.3g} > {atol * ref_scale:.3g}"
            )
    return merged


def _bias_flags(model: ZeroI2V, merged: ZeroI2V, timm_kwargs: dict) -> dict:
    """Adapters with biases folded into a layer without one (only models built before adapters followed
    their layer's bias) create that bias; rebuilding must then ask timm for it. timm's one `proj_bias`
    flag covers proj, fc1 and fc2 together, so those of them still without a bias get a zero one."""
    before, after = model.backbone.blocks[0], merged.backbone.blocks[0]
    groups = {"qkv_bias": ("attn.qkv",), "proj_bias": ("attn.proj", "mlp.fc1", "mlp.fc2")}
    for flag, layers in groups.items():
        if any(before.get_submodule(n).bias is None and after.get_submodule(n).bias is not None for n in layers):
            timm_kwargs[flag] = True
            for block in merged.backbone.blocks:
                for name in layers:
                    layer = block.get_submodule(name)
                    if layer.bias is None:
                        layer.bias = torch.nn.Parameter(
                            layer.weight.new_zeros(layer.out_features), requires_grad=layer.weight.requires_grad
                        )
    return timm_kwargs
