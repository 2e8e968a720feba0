"""RandAugment ops that give the same uint8 pixels as `transforms.apply_op`, with less work per clip.

`apply_op` (torchvision's kernels) defines the result; these compute it differently where that is
much cheaper, on any device:
- Sharpness: torchvision convolves every frame and channel with a 3x3 float kernel. Here the kernel
  (ones, 5 in the middle, /13) is a 3x3 box sum plus 4 times the centre, summed with shifted views
  (exact in float32 for 0..255), divided by 13 and rounded: the same integers, since sum/13 is never
  within 0.03 of a rounding tie. The blend with the frame is torchvision's own arithmetic.
- Rotate, Shear, Translate: torchvision samples each frame separately, with a fill-mask channel per
  frame. All frames and channels share one sampling grid, so they are sampled as the channels of one
  image, and the mask once; the fill blend and rounding are torchvision's.
Other ops are already cheap, or elementwise: they go to `apply_op`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf

from zeroi2v.data.transforms import FILL, apply_op

try:  # torchvision's own grid construction, so the sampled coordinates are bit-identical
    from torchvision.transforms.v2.functional._geometry import _affine_grid, _get_inverse_affine_matrix
except ImportError:  # pragma: no cover - a torchvision that moved them: the reference path is used
    _affine_grid = _get_inverse_affine_matrix = None

GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def fast_op(video: torch.Tensor, name: str, argument) -> torch.Tensor:
    """`apply_op(video, name, argument)` for uint8 (..., C, H, W), computed faster where possible."""
    if video.dtype != torch.uint8 or video.shape[-1] <= 2 or video.shape[-2] <= 2:
        return apply_op(video, name, argument)
    if name == "AdjustSharpness":
        return sharpness(video, float(argument))
    if name in GEOMETRIC and _affine_grid is not None:
        return affine(video, _matrix(name, argument, *video.shape[-2:]))
    return apply_op(video, name, argument)


def sharpness(video: torch.Tensor, factor: float) -> torch.Tensor:
    """torchvision's `adjust_sharpness` on uint8 (border pixels unchanged, as there)."""
    x = video.to(torch.float32)
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    centre = x[..., 1:-1, 1:-1]
    blurred = box.add_(centre, alpha=4.0).div_(13.0).round_()
    centre.add_(blurred.sub_(centre), alpha=1.0 - factor)  # writes into x's interior
    return x.clamp_(0, 255).to(torch.uint8)


def _matrix(name: str, argument: float, h: int, w: int) -> list[float]:
    """The inverse affine matrix torchvision builds for `apply_op`'s call."""
    if name == "Rotate":
        return _get_inverse_affine_matrix([0.0, 0.0], -float(argument), [0.0, 0.0], 1.0, [0.0, 0.0])
    if name in ("ShearX", "ShearY"):
        angle = math.degrees(math.atan(argument))
        shear = [angle, 0.0] if name == "ShearX" else [0.0, angle]
        return _get_inverse_affine_matrix([-w * 0.5, -h * 0.5], 0.0, [0.0, 0.0], 1.0, shear)
    translate = [float(-argument * w), 0.0] if name == "TranslateX" else [0.0, float(-argument * h)]
    return _get_inverse_affine_matrix([0.0, 0.0], 0.0, translate, 1.0, [0.0, 0.0])


def affine(video: torch.Tensor, matrix: list[float]) -> torch.Tensor:
    """Bilinear warp of every frame by one inverse affine `matrix`, filled as torchvision fills."""
    shape = video.shape
    h, w = shape[-2:]
    theta = torch.tensor(matrix, dtype=torch.float32, device=video.device).reshape(1, 2, 3)
    grid = _affine_grid(theta, w=w, h=h, ow=w, oh=h)
    planes = video.reshape(1, -1, h, w).to(torch.float32)
    out = nnf.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ones = torch.ones((1, 1, h, w), dtype=torch.float32, device=video.device)
    mask = nnf.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.view(-1, shape[-3], h, w)
    fill = torch.tensor(FILL, dtype=torch.float32, device=video.device).view(1, -1, 1, 1)
    out = out.sub_(fill).mul_(mask).add_(fill)
    return out.round_().to(torch.uint8).reshape(shape)
