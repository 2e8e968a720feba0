"""RandAugment's ops: the reference table and kernels (`apply_op`, pytorchvideo's semantics on
torchvision's v2 kernels), and `fast_op`, the same uint8 pixels with less work per clip.

`apply_op` defines the result; the fast versions compute it differently where that is
much cheaper, on any device:
- Sharpness: torchvision convolves every frame and channel with a 3x3 float kernel. Here the kernel
  (ones, 5 in the middle, /13) is a 3x3 box sum plus 4 times the centre, summed with shifted views
  (exact in float32 for 0..255), divided by 13 and rounded: the same integers, since sum/13 is never
  within 0.03 of a rounding tie. The blend with the frame is torchvision's own arithmetic.
- Rotate, Shear, Translate: torchvision samples each frame separately, with a fill-mask channel per
  frame. All frames and channels share one sampling grid, so they are sampled as the channels of one
  image, and the mask once; the fill blend and rounding are torchvision's.
- Solarize, Brightness, Saturation, Contrast, AutoContrast: torchvision's float32 arithmetic, on one
  float copy (torchvision mixes uint8 and float operands, which is slower); Equalize counts its
  histograms with `bincount`. Invert and Posterize are already cheap: `apply_op`.

`ops_in_box` applies a clip's ops and crops, computing only the pixels the crop keeps where that
gives the same pixels: elementwise ops on the box alone, Sharpness on the box and a 1-pixel rim,
the warps sampled at the box's output pixels only, from the input pixels those fall between;
AutoContrast, Equalize and Contrast read the whole frame (their statistics).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

MAX_LEVEL = 10.0
# pytorchvideo's RandAugment table, in its order (the sampled index picks from it):
# name -> (argument at level 0, change of the argument at level 10, how the level maps to it).
# "signed": base ± change (random sign); "down": base - change; "down_int": base - int(change).
OP_STRENGTHS = {
    "AdjustBrightness": (1.0, 0.9, "signed"),
    "AdjustContrast": (1.0, 0.9, "signed"),
    "AdjustSaturation": (1.0, 0.9, "signed"),
    "AdjustSharpness": (1.0, 0.9, "signed"),
    "AutoContrast": None,
    "Equalize": None,
    "Invert": None,
    "Rotate": (0.0, 30.0, "signed"),  # degrees, counter-clockwise
    "Posterize": (4, 4, "down_int"),  # bits kept
    "Solarize": (1.0, 1.0, "down"),  # threshold, compared with the uint8 values as the reference does
    "ShearX": (0.0, 0.3, "signed"),  # shear factor, about the top-left corner
    "ShearY": (0.0, 0.3, "signed"),
    "TranslateX": (0.0, 0.45, "signed"),  # fraction of the width
    "TranslateY": (0.0, 0.45, "signed"),  # fraction of the height
}
OPS = tuple(OP_STRENGTHS)
FILL = [0.5, 0.5, 0.5]  # pytorchvideo's fill, on the uint8 frames: rounds to 0 (black)
_BILINEAR = v2.InterpolationMode.BILINEAR


def op_argument(name: str, level: float, sign: float = 1.0):
    """The argument op `name` gets at `level` (0..10); `sign` (±1) for the signed ops; None: no argument."""
    strength = OP_STRENGTHS[name]
    if strength is None:
        return None
    base, change, kind = strength
    change = level / MAX_LEVEL * change
    if kind == "signed":
        return base + sign * change
    if kind == "down_int":
        return base - int(change)
    return base - change


def apply_op(video: torch.Tensor, name: str, argument) -> torch.Tensor:
    """Apply one RandAugment op to (..., C, H, W) uint8 with pytorchvideo's geometry.

    pytorchvideo's affine matrices (output -> input pixel, about the image center): ShearX
    [1, f, f·H/2; 0, 1, 0] (shear about the top-left corner), TranslateX [1, 0, f·W; 0, 1, 0]; v2's
    `affine` builds the same ones from shear angle atan(f) about the corner (0, 0) and translate -f·W.
    """
    h, w = video.shape[-2:]
    if name == "AdjustBrightness":
        return F.adjust_brightness(video, argument)
    if name == "AdjustContrast":
        return F.adjust_contrast(video, argument)
    if name == "AdjustSaturation":
        return F.adjust_saturation(video, argument)
    if name == "AdjustSharpness":
        return F.adjust_sharpness(video, argument)
    if name == "AutoContrast":
        return F.autocontrast(video)
    if name == "Equalize":
        return F.equalize(video)
    if name == "Invert":
        return F.invert(video)
    if name == "Rotate":
        return F.rotate(video, argument, interpolation=_BILINEAR, fill=FILL)
    if name == "Posterize":
        return video if argument >= 8 else F.posterize(video, int(argument))
    if name == "Solarize":
        return F.solarize(video, argument)
    if name in ("ShearX", "ShearY"):
        angle = math.degrees(math.atan(argument))
        shear = [angle, 0.0] if name == "ShearX" else [0.0, angle]
        return F.affine(
            video,
            angle=0.0,
            translate=[0.0, 0.0],
            scale=1.0,
            shear=shear,
            interpolation=_BILINEAR,
            fill=FILL,
            center=[0.0, 0.0],
        )
    if name in ("TranslateX", "TranslateY"):
        translate = [-argument * w, 0.0] if name == "TranslateX" else [0.0, -argument * h]
        return F.affine(
            video, angle=0.0, translate=translate, scale=1.0, shear=[0.0, 0.0], interpolation=_BILINEAR, fill=FILL
        )
    raise KeyError(f"unknown RandAugment op {name!r}")


try:  # torchvision's own grid construction, so the sampled coordinates are bit-identical
    from torchvision.transforms.v2.functional._geometry import _affine_grid, _get_inverse_affine_matrix
except ImportError:  # pragma: no cover - a torchvision that moved them: the reference path is used
    _affine_grid = _get_inverse_affine_matrix = None

GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


REGIONAL = GEOMETRIC + ("AdjustContrast", "AutoContrast", "Equalize")  # read whole frames, can write a part


def fast_op(video: torch.Tensor, name: str, argument, region=None) -> torch.Tensor:
    """`apply_op(video, name, argument)` for uint8 (..., C, H, W), computed faster where possible;
    `region` (y0, x0, y1, x1): only that part of the output (the ops in REGIONAL compute only it)."""
    h, w = video.shape[-2:]
    full = (0, 0, h, w)
    if video.dtype != torch.uint8 or h <= 2 or w <= 2 or video.shape[-3] != 3:
        return _crop(apply_op(video, name, argument), full, region or full)
    if name == "AdjustSharpness":
        return _crop(sharpness(video, float(argument)), full, region or full)
    if name in GEOMETRIC and _affine_grid is not None:
        return affine(video, _matrix(name, argument, h, w), region)
    if name == "Solarize":  # integers at or above the float threshold: those at or above its ceiling
        threshold = math.ceil(torch.tensor(float(argument), dtype=torch.float32).item())
        return video ^ (video >= threshold).to(torch.uint8).mul_(255)  # 255 - x is x ^ 255
    if name == "AdjustBrightness" and argument >= 0:
        return _to_uint8(video.to(torch.float32).mul_(argument))
    if name == "AdjustSaturation" and argument >= 0:
        x = video.to(torch.float32)
        return _to_uint8(x.mul(argument).add_(_grey(x), alpha=1.0 - argument))
    if name == "AdjustContrast" and argument >= 0:
        x = video.to(torch.float32)
        mean = torch.mean(_grey(x), dim=(-3, -2, -1), keepdim=True)
        return _to_uint8(_crop(x, full, region or full).mul_(argument).add_(mean, alpha=1.0 - argument))
    if name == "AutoContrast":
        return autocontrast(video, region or full)
    if name == "Equalize":
        return equalize(video, region or full)
    return _crop(apply_op(video, name, argument), full, region or full)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """torchvision's grayscale of float (..., 3, H, W) holding integers, floored: (..., 1, H, W)."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(-3)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(0, 255).to(torch.uint8)


def autocontrast(video: torch.Tensor, region) -> torch.Tensor:
    """torchvision's `autocontrast` on uint8: each frame's channel stretched from its min..max to 0..255."""
    low = video.amin(dim=(-2, -1), keepdim=True).to(torch.float32)
    high = video.amax(dim=(-2, -1), keepdim=True).to(torch.float32)
    flat = high == low  # (torch.where, not masked assignment: no device sync on a GPU)
    scale = torch.where(flat, 1.0, high.sub_(low).mul_(1.0 / 255))
    low = torch.where(flat, 0.0, low)
    x = _crop(video, (0, 0, *video.shape[-2:]), region).to(torch.float32)
    return _to_uint8(x.sub_(low).div_(scale))


def equalize(video: torch.Tensor, region) -> torch.Tensor:
    """torchvision's `equalize` on uint8 (PIL's lookup table per frame and channel); on the CPU the
    histograms are counted with `bincount` (the same integers as torchvision's scatter_add, faster; on a
    GPU bincount waits for the device, so scatter_add stays)."""
    h, w = video.shape[-2:]
    hist = histograms(video.reshape(-1, h * w)).view(*video.shape[:-2], 256)
    cum = hist.cumsum(dim=-1)
    last = cum.argmax(dim=-1, keepdim=True)  # the largest value present
    step = (h * w - hist.gather(-1, last)).div_(255, rounding_mode="floor")
    lut = cum[..., :-1].add(step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    lut = torch.cat([lut.new_zeros(lut.shape[:-1] + (1,)), lut], dim=-1)
    lut = torch.where(step.ne(0), lut, torch.arange(256, device=lut.device)).to(torch.uint8)  # a flat plane stays
    part = _crop(video, (0, 0, h, w), region)
    return lut.gather(-1, part.flatten(-2).to(torch.long)).view_as(part)


def histograms(planes: torch.Tensor, scatter: bool | None = None) -> torch.Tensor:
    """(N, 256) int64 counts of the values of uint8 (N, P). `scatter` None: by device."""
    if scatter is None:
        scatter = planes.device.type != "cpu"
    if not scatter:
        return torch.stack([torch.bincount(p, minlength=256) for p in planes])
    index = planes.to(torch.long)
    return index.new_zeros((len(planes), 256)).scatter_add_(-1, index, torch.ones_like(index))


ELEMENTWISE = ("AdjustBrightness", "AdjustSaturation", "Invert", "Posterize", "Solarize")
ANY_LAYOUT = ("AdjustBrightness", "Invert", "Posterize", "Solarize", "AdjustSharpness")  # as fast on any memory layout


def ops_in_box(video: torch.Tensor, ops, box) -> torch.Tensor:
    """`apply_op` of each (name, argument) in turn on uint8 (..., C, H, W), then the crop `box`
    (top, left, height, width): the same pixels, with less work where the crop keeps a part."""
    h, w = video.shape[-2:]
    top, left, height, width = box
    full = (0, 0, h, w)
    warps = video.dtype == torch.uint8 and h > 2 and w > 2 and video.shape[-3] == 3 and _affine_grid is not None
    needs = [(top, left, top + height, left + width)]  # rows/cols [y0, x0, y1, x1) each op's output must hold
    grids = {}
    for k in reversed(range(len(ops))):
        name, argument = ops[k]
        y0, x0, y1, x1 = needs[0]
        rim = (max(0, y0 - 1), max(0, x0 - 1), min(h, y1 + 1), min(w, x1 + 1))  # a 3x3 stencil's input
        if name in ELEMENTWISE:
            needs.insert(0, needs[0])
        elif name == "AdjustSharpness" and min(rim[2] - rim[0], rim[3] - rim[1]) > 2:  # (<= 2: left as is)
            needs.insert(0, rim)
        elif name in GEOMETRIC and warps:  # the input pixels the output's sampling points fall between
            matrix = _matrix(name, argument, h, w)
            grids[k] = warp_grid(matrix, h, w, needs[0], video.device)
            needs.insert(0, source_region(matrix, h, w, needs[0]))
        else:
            needs.insert(0, full)
    held = full  # the region `video` holds
    for k, ((name, argument), wanted, region) in enumerate(zip(ops, needs[:-1], needs[1:], strict=True)):
        video, held = _crop(video, held, wanted), wanted
        if k not in grids and name not in ANY_LAYOUT and video.stride(-1) != 1:
            video = video.contiguous()  # decoders give (H, W, C) memory: these ops are faster on planes
        if k in grids:
            video, held = warp(video, grids[k], (h, w), held), region
        elif name in REGIONAL and held == full:
            video, held = fast_op(video, name, argument, region), region
        else:
            video = fast_op(video, name, argument)
    return _crop(video, held, needs[-1])


def _crop(video: torch.Tensor, held, wanted) -> torch.Tensor:
    """The part `wanted` of `video`, which holds the part `held` (both (y0, x0, y1, x1) of the frame)."""
    if held == wanted:
        return video
    y0, x0 = wanted[0] - held[0], wanted[1] - held[1]
    return video[..., y0 : y0 + wanted[2] - wanted[0], x0 : x0 + wanted[3] - wanted[1]]


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


def affine(video: torch.Tensor, matrix: list[float], region=None) -> torch.Tensor:
    """Bilinear warp of every frame by one inverse affine `matrix`, filled as torchvision fills;
    `region` (y0, x0, y1, x1): only those output pixels (torchvision's grid, sliced)."""
    h, w = video.shape[-2:]
    return warp(video, warp_grid(matrix, h, w, region or (0, 0, h, w), video.device), (h, w))


def warp_grid(matrix: list[float], h: int, w: int, region, device=None) -> torch.Tensor:
    """torchvision's sampling grid (1, H, W, 2) for an inverse affine `matrix`, at `region`'s pixels."""
    y0, x0, y1, x1 = region
    theta = torch.tensor(matrix, dtype=torch.float32, device=device).reshape(1, 2, 3)
    return _affine_grid(theta, w=w, h=h, ow=w, oh=h)[:, y0:y1, x0:x1]


def source_region(matrix: list[float], h: int, w: int, region) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1): the input pixels that bilinear sampling of `region`'s output pixels reads
    through the inverse affine `matrix` (the map is affine, so the extremes are at the region's corner
    pixels; both neighbours of each coordinate, and one more each side against float rounding).
    Worked out in Python from torchvision's grid formula: no device round trip."""
    y0, x0, y1, x1 = region
    a, b, c, d, e, f = matrix
    xs, ys = [], []
    for y in (y0, y1 - 1):
        for x in (x0, x1 - 1):
            xb, yb = x + (1 - w) * 0.5, y + (1 - h) * 0.5  # the grid's pixel centres, about the middle
            xs.append(((a * xb + b * yb + c) / (0.5 * w) + 1) * w / 2 - 0.5)  # grid_sample's un-normalising
            ys.append(((d * xb + e * yb + f) / (0.5 * h) + 1) * h / 2 - 0.5)

    def span(c: list[float], n: int) -> tuple[int, int]:
        lo = min(max(math.floor(min(c)) - 1, 0), n - 1)
        return lo, min(max(math.floor(max(c)) + 3, lo + 1), n)

    (top, bottom), (left, right) = span(ys, h), span(xs, w)
    return top, left, bottom, right


def warp(video: torch.Tensor, grid: torch.Tensor, size: tuple[int, int], held=None) -> torch.Tensor:
    """Bilinear warp of uint8 (..., C, h, w) frames at `grid` (from `warp_grid`), filled as torchvision
    fills. `held` (y0, x0, y1, x1): `video` is only that part of the frames, which must contain
    `source_region` of the grid's pixels (the rest of the frame is never read, so it is left unset)."""
    h, w = size
    y0, x0, y1, x1 = held or (0, 0, h, w)
    planes = torch.empty((1, video[..., 0, 0].numel(), h, w), dtype=torch.float32, device=video.device)
    planes[..., y0:y1, x0:x1].view(video.shape).copy_(video)  # from any memory layout, in one pass
    out = nnf.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ones = torch.ones((1, 1, h, w), dtype=torch.float32, device=video.device)
    mask = nnf.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.view(-1, video.shape[-3], *grid.shape[1:3])
    fill = torch.tensor(FILL, dtype=torch.float32, device=video.device).view(1, -1, 1, 1)
    out = out.sub_(fill).mul_(mask).add_(fill)
    return out.round_().to(torch.uint8).reshape(*video.shape[:-2], *grid.shape[1:3])
