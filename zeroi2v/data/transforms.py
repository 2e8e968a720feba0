"""Clip augmentation with torchvision transforms v2: one set of random parameters per clip.

Frames travel as a `tv_tensors.Video` (T, C, H, W) uint8; every random choice (crop box, flip,
RandAugment ops and magnitudes, erased box) is drawn once per clip and applied to every frame, so
motion between frames is left intact. Outputs are float (C, T, H, W), normalised with the backbone's
statistics (`model.data_config`, on the 0..1 scale).

Training follows the ZeroI2V reference (an MMAction2 fork), because its augmentation is part of the
published recipe:
  order "k400" (also UCF101/HMDB51): resize short side -> RandAugment -> RandomResizedCrop -> flip
      [-> RandomErasing] -> normalise
  order "ssv2": resize short side -> RandomResizedCrop -> flip (the caller swaps direction labels)
      -> RandAugment [-> RandomErasing] -> normalise
RandomErasing is MMAction2's: it works on the uint8 frames, before normalisation (the reference
normalises in the model's data preprocessor, after the whole pipeline), in both orders.

RandAugment is pytorchvideo's (which MMAction2 wraps), not torchvision's 31-bin one: `num_layers`
distinct ops out of 14, each applied with probability `prob`, its level drawn from N(magnitude, sigma)
clipped to 0..10, signed ops negated with probability 1/2. The reference hands it uint8 frames while
pytorchvideo's constants are on the 0..1 scale, so two of them act on the 0..255 scale; both are kept,
as they shaped the published numbers: the fill of Rotate/Shear/Translate is 0.5, which rounds to black,
and Solarize's threshold (1 - level/10, 0.3 at level 7) inverts every pixel above 0.

Test views: resize short side to img_size -> center crop, or three crops along the long side
(left/center/right for landscape, top/center/bottom for portrait, as MMAction2's ThreeCrop).

All randomness comes from torch's global generator, in the order pytorchvideo draws it, so seeding it
right before the call (the dataset does, from (seed, epoch, index)) makes a clip reproducible.
"""

from __future__ import annotations

import math

import torch
from torchvision import tv_tensors
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


class RandAugment(torch.nn.Module):
    """pytorchvideo's RandAugment for a clip: uint8 (T, C, H, W) -> uint8, the same ops on every frame.

    `num_layers` distinct ops are drawn uniformly from `OPS`; each is applied with probability `prob`
    at a level drawn from N(magnitude, sigma) clipped to [0, 10] (sigma 0: exactly `magnitude`).
    """

    def __init__(self, num_layers: int = 4, magnitude: float = 7, prob: float = 0.5, sigma: float = 0.5):
        super().__init__()
        if not 1 <= num_layers <= len(OPS):
            raise ValueError(f"RandAugment num_layers must be in 1..{len(OPS)}, got {num_layers}")
        if not 0 <= magnitude <= MAX_LEVEL:
            raise ValueError(f"RandAugment magnitude must be in 0..{MAX_LEVEL:g}, got {magnitude}")
        self.num_layers, self.magnitude, self.prob, self.sigma = num_layers, float(magnitude), prob, sigma

    def sample(self) -> list[tuple[str, object]]:
        """The ops one clip gets, as (name, argument), drawn as pytorchvideo draws them."""
        chosen = torch.multinomial(torch.ones(len(OPS)), self.num_layers, replacement=False).tolist()
        ops = []
        for index in chosen:
            name = OPS[index]
            if torch.rand(1).item() > self.prob:
                continue
            level = min(MAX_LEVEL, max(0.0, torch.normal(self.magnitude, self.sigma, size=(1,)).item()))
            strength = OP_STRENGTHS[name]
            sign = 1.0
            if strength is not None and strength[2] == "signed":
                sign = 1.0 if torch.rand(1).item() > 0.5 else -1.0
            ops.append((name, op_argument(name, level, sign)))
        return ops

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        for name, argument in self.sample():
            video = apply_op(video, name, argument)
        return video

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, magnitude={self.magnitude:g}, prob={self.prob}, sigma={self.sigma}"


class RandomErasing(torch.nn.Module):
    """MMAction2's RandomErasing on uint8 (T, C, H, W): one box for the whole clip, with probability `p`.

    Box: area fraction U(0.02, 1/3), aspect h/w log-uniform in (0.3, 10/3), clipped to the frame.
    mode "const": filled with `fill` (grey 128); "rand": uniform integers 0..255, per pixel and frame.
    """

    def __init__(
        self, p: float, mode: str = "const", fill=(128, 128, 128), area=(0.02, 1 / 3), aspect=(3 / 10, 10 / 3)
    ):
        super().__init__()
        if mode not in ("const", "rand"):
            raise ValueError(f"erasing mode must be 'const' or 'rand', got {mode!r}")
        self.p, self.mode, self.fill, self.area, self.aspect = p, mode, tuple(fill), tuple(area), tuple(aspect)

    def box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the erased box in an h×w frame."""
        log_lo, log_hi = math.log(self.aspect[0]), math.log(self.aspect[1])
        aspect = math.exp(log_lo + (log_hi - log_lo) * torch.rand(1).item())
        area = h * w * (self.area[0] + (self.area[1] - self.area[0]) * torch.rand(1).item())
        bh, bw = min(round(math.sqrt(area * aspect)), h), min(round(math.sqrt(area / aspect)), w)
        top = int(torch.randint(0, h - bh, (1,))) if h > bh else 0
        left = int(torch.randint(0, w - bw, (1,))) if w > bw else 0
        return top, left, bh, bw

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if torch.rand(1).item() > self.p:
            return video
        top, left, bh, bw = self.box(*video.shape[-2:])
        out = video.as_subclass(torch.Tensor).clone()
        patch = out[..., top : top + bh, left : left + bw]
        if self.mode == "const":
            patch.copy_(torch.tensor(self.fill, dtype=out.dtype).view(-1, 1, 1).expand_as(patch))
        else:
            patch.copy_(torch.randint(0, 256, patch.shape, dtype=torch.int64).to(out.dtype))
        return tv_tensors.wrap(out, like=video) if isinstance(video, tv_tensors.TVTensor) else out

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}, fill={self.fill}, area={self.area}, aspect={self.aspect}"


class TrainTransform(torch.nn.Module):
    """uint8 (T, C, H, W) -> (float (C, T, img_size, img_size), flipped: bool).

    `steps` names the chain in the order it runs. The flip is reported so the caller can swap the
    label of direction classes (SSv2).
    """

    def __init__(
        self,
        img_size: int,
        mean,
        std,
        *,
        short_side: int | None = None,
        rand_augment: bool = True,
        rand_augment_layers: int = 4,
        rand_augment_magnitude: float = 7.0,
        flip: bool = True,
        order: str = "k400",
        random_erasing: float = 0.0,
        erasing_mode: str = "const",
        scale=(0.08, 1.0),
    ):
        super().__init__()
        if order not in ("k400", "ssv2"):
            raise ValueError(f"augmentation order must be 'k400' or 'ssv2', got {order!r}")
        if erasing_mode not in ("const", "rand"):
            raise ValueError(f"erasing mode must be 'const' or 'rand', got {erasing_mode!r}")
        short_side = short_side if short_side is not None else int(round(img_size * 256 / 224))
        resize = [("resize", v2.Resize(short_side, antialias=True))] if short_side else []
        augment = [("rand_augment", RandAugment(rand_augment_layers, rand_augment_magnitude))] if rand_augment else []
        crop = [("random_resized_crop", v2.RandomResizedCrop(img_size, scale=tuple(scale), antialias=True))]
        mirror = [("flip", None)] if flip else []
        erase = [("random_erasing", RandomErasing(random_erasing, erasing_mode))] if random_erasing > 0 else []
        normalize = [
            ("normalize", v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]))
        ]
        if order == "k400":
            chain = resize + augment + crop + mirror + erase + normalize
        else:
            chain = resize + crop + mirror + augment + erase + normalize
        self.order = order
        self.steps = tuple(name for name, _ in chain)
        self.ops = torch.nn.ModuleList(op for _, op in chain if op is not None)
        self._chain = chain

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, bool]:
        video = tv_tensors.Video(video)
        flipped = False
        for name, op in self._chain:
            if name == "flip":
                flipped = bool(torch.rand(()) < 0.5)
                video = F.horizontal_flip(video) if flipped else video
            else:
                video = op(video)
        return video.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous(), flipped


def train_transform(
    img_size: int,
    mean,
    std,
    *,
    short_side: int | None = None,
    rand_augment: bool = True,
    rand_augment_layers: int = 4,
    rand_augment_magnitude: float = 7.0,
    flip: bool = True,
    order: str = "k400",
    random_erasing: float = 0.0,
    erasing_mode: str = "const",
    scale=(0.08, 1.0),
) -> TrainTransform:
    """The training augmentation. `short_side=None`: img_size·256/224 (256 for 224); 0: no pre-resize.

    `order`: "k400" (RandAugment before the crop; also UCF101/HMDB51) or "ssv2" (after the flip).
    `scale` is RandomResizedCrop's area range (MMAction2's default (0.08, 1)); `random_erasing` is the
    probability of erasing a box (the SSv2 recipe: 0.25 "const"; K400 ViT-L 32×4: 0.25 "rand").
    """
    return TrainTransform(
        img_size,
        mean,
        std,
        short_side=short_side,
        rand_augment=rand_augment,
        rand_augment_layers=rand_augment_layers,
        rand_augment_magnitude=rand_augment_magnitude,
        flip=flip,
        order=order,
        random_erasing=random_erasing,
        erasing_mode=erasing_mode,
        scale=scale,
    )


class ThreeCrop(torch.nn.Module):
    """(..., H, W) -> (3, ..., size, size): three squares along the long side, ends included."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        h, w = video.shape[-2:]
        s = self.size
        if w >= h:
            boxes = [(0, (h - s) // 2), ((w - s) // 2, (h - s) // 2), (w - s, (h - s) // 2)]
        else:
            boxes = [((w - s) // 2, 0), ((w - s) // 2, (h - s) // 2), ((w - s) // 2, h - s)]
        return torch.stack([video[..., y : y + s, x : x + s] for x, y in boxes])


class TestTransform(torch.nn.Module):
    """uint8 (T, C, H, W) -> float (crops, C, T, img_size, img_size); deterministic."""

    def __init__(self, img_size: int, mean, std, crops: int = 1):
        super().__init__()
        if crops not in (1, 3):
            raise ValueError(f"test crops must be 1 (center) or 3 (three-crop), got {crops}")
        self.crops = crops
        self.resize = v2.Resize(img_size, antialias=True)
        self.crop = v2.CenterCrop(img_size) if crops == 1 else ThreeCrop(img_size)
        self.normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        views = self.crop(self.resize(tv_tensors.Video(video))).as_subclass(torch.Tensor)
        views = views.unsqueeze(0) if self.crops == 1 else views  # (crops, T, C, H, W)
        views = self.normalize(tv_tensors.Video(views.flatten(0, 1))).as_subclass(torch.Tensor)
        return views.reshape(self.crops, -1, *views.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()


def test_transform(img_size: int, mean, std, crops: int = 1) -> TestTransform:
    """The test-time views of one clip: 1 center crop or 3 crops along the long side."""
    return TestTransform(img_size, mean, std, crops)
