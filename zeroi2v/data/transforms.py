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

import dataclasses
import math
from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from zeroi2v.data.augment_ops import MAX_LEVEL, OP_STRENGTHS, OPS, apply_op, fast_op, op_argument, ops_in_box
from zeroi2v.data.spec import AugmentSpec


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


@dataclass
class ClipPlan:
    """The random choices of one training clip, drawn before any pixel is touched.

    Drawing them first, in the order the steps would draw them, gives the same clip as drawing while
    transforming (no step's result feeds a later draw: every step but the resize and the crop keeps
    the frame size). The pixels can then be computed anywhere: in the loader, or on the training device.
    """

    ops: list  # RandAugment (name, argument), in the order applied
    box: tuple[int, int, int, int]  # RandomResizedCrop (top, left, height, width) in the resized frame
    flipped: bool
    erase: tuple[int, int, int, int] | None  # RandomErasing (top, left, height, width) in the crop
    noise: torch.Tensor | None  # "rand" erasing: the box's uint8 noise (T, C, height, width)


LOADER_STEPS = ("resize", "random_resized_crop", "flip")  # cheap geometry: stays in the loader with gpu_augment


class TrainTransform(torch.nn.Module):
    """uint8 (T, C, H, W) -> (float (C, T, img_size, img_size), flipped: bool).

    `steps` names the chain in the order it runs. The flip is reported so the caller can swap the
    label of direction classes (SSv2). `plan` draws a clip's random choices, `run` computes steps of
    the chain from them; with `spec.gpu_augment` the loader runs the leading cheap geometric steps
    (`loader_steps`) and `finish` the rest, batched, on the training device.
    """

    def __init__(self, img_size: int, mean, std, spec: AugmentSpec | None = None):
        super().__init__()
        spec = spec or AugmentSpec()
        if spec.augment_order not in ("k400", "ssv2"):
            raise ValueError(f"augmentation order must be 'k400' or 'ssv2', got {spec.augment_order!r}")
        if spec.erasing_mode not in ("const", "rand"):
            raise ValueError(f"erasing mode must be 'const' or 'rand', got {spec.erasing_mode!r}")
        self.spec, self.img_size, self.mean, self.std = spec, img_size, tuple(mean), tuple(std)
        short = spec.short_side if spec.short_side is not None else int(round(img_size * 256 / 224))
        self.short_side = short
        self.rand_augment = RandAugment(spec.rand_augment_layers, spec.rand_augment_magnitude)
        self.crop = v2.RandomResizedCrop(img_size, scale=tuple(spec.crop_scale), antialias=True)
        self.erasing = RandomErasing(spec.random_erasing, spec.erasing_mode)
        resize = ["resize"] if short else []
        augment = ["rand_augment"] if spec.rand_augment else []
        mirror = ["flip"] if spec.flip else []
        erase = ["random_erasing"] if spec.random_erasing > 0 else []
        if spec.augment_order == "k400":
            chain = resize + augment + ["random_resized_crop"] + mirror + erase + ["normalize"]
        else:
            chain = resize + ["random_resized_crop"] + mirror + augment + erase + ["normalize"]
        self.order = spec.augment_order
        self.steps = tuple(chain)
        modules = {"rand_augment": self.rand_augment, "random_resized_crop": self.crop, "random_erasing": self.erasing}
        self.ops = torch.nn.ModuleList(modules[name] for name in chain if name in modules)
        lead = 0
        while spec.gpu_augment and lead < len(chain) and chain[lead] in LOADER_STEPS:
            lead += 1
        self.loader_steps = lead if spec.gpu_augment else len(chain)

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        """Frame size after the short-side resize (torchvision's rounding)."""
        if not self.short_side:
            return h, w
        if h <= w:
            return self.short_side, int(self.short_side * w / h)
        return int(self.short_side * h / w), self.short_side

    def plan(self, frames: int, h: int, w: int) -> ClipPlan:
        """Draw a clip's random choices from torch's global generator, in the order the steps draw them."""
        h, w = self.resized_size(h, w)
        ops, box, flipped, erase, noise = [], None, False, None, None
        for name in self.steps:
            if name == "rand_augment":
                ops = self.rand_augment.sample()
            elif name == "random_resized_crop":
                params = self.crop.make_params([torch.empty(1, 1, 1, 1, dtype=torch.uint8).expand(1, 1, h, w)])
                box = (params["top"], params["left"], params["height"], params["width"])
                h = w = self.img_size
            elif name == "flip":
                flipped = bool(torch.rand(()) < 0.5)
            elif name == "random_erasing" and torch.rand(1).item() <= self.erasing.p:
                erase = self.erasing.box(h, w)
                if self.erasing.mode == "rand":
                    noise = torch.randint(0, 256, (frames, 3, erase[2], erase[3]), dtype=torch.int64).to(torch.uint8)
        return ClipPlan(ops, box, flipped, erase, noise)

    def run(self, video: torch.Tensor, plan: ClipPlan, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Steps `start`..`stop` (not normalisation) of the chain on uint8 (T, C, H, W), on its device."""

        steps, cropped = self.steps[start:stop], False
        for i, name in enumerate(steps):
            if name == "resize":
                video = F.resize(video, [self.short_side], antialias=True)
            elif name == "rand_augment" and steps[i + 1 : i + 2] == ("random_resized_crop",):
                video, cropped = ops_in_box(video, plan.ops, plan.box), True  # only what the crop keeps
            elif name == "rand_augment":
                for op, argument in plan.ops:
                    video = fast_op(video, op, argument)
            elif name == "random_resized_crop" and cropped:
                video = F.resize(video, [self.img_size] * 2, antialias=True)  # resized_crop = crop, then this
            elif name == "random_resized_crop":
                video = F.resized_crop(video, *plan.box, size=[self.img_size] * 2, antialias=True)
            elif name == "flip" and plan.flipped:
                video = video.flip(-1)
            elif name == "random_erasing" and plan.erase is not None:
                video = erase(video, plan.erase, self.erasing.fill, plan.noise)
        return video

    def normalize(self, video: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (..., T, C, H, W) -> float (..., C, T, H, W) with the backbone's statistics, written into
        `out` when given (a batch's slot: no copy when the batch is assembled)."""
        # torchvision's to_dtype(scale=True) and normalize, bit for bit, in one float copy written in place
        mean = torch.tensor(self.mean, dtype=torch.float32, device=video.device).view(-1, 1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=video.device).view(-1, 1, 1, 1)
        if out is None:
            out = video.transpose(-4, -3).to(torch.float32, memory_format=torch.contiguous_format)
        else:
            out.copy_(video.transpose(-4, -3))
        return out.mul_(1 / 255).sub_(mean).div_(std)

    def forward(self, video: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
        """(the clip, float (C, T, img_size, img_size), in `out` when given; whether it was flipped)."""
        plan = self.plan(*video.shape[:1], *video.shape[-2:])
        return self.normalize(self.run(video, plan, stop=-1), out), plan.flipped

    def start(self, video: torch.Tensor) -> tuple[torch.Tensor, ClipPlan]:
        """The loader's part: (uint8 (T, C, H, W) after `loader_steps` steps, the clip's plan)."""
        plan = self.plan(*video.shape[:1], *video.shape[-2:])
        return self.run(video, plan, stop=self.loader_steps), plan

    def finish(self, videos, plans: list[ClipPlan], device=None) -> torch.Tensor:
        """The rest of the chain for a batch from `start`: uint8 clips (a (B, T, C, H, W) tensor or a list)
        -> float (B, C, T, img_size, img_size) on `device`, clip by clip as `forward` computes them."""
        clips = [
            self.run(video.to(device, non_blocking=True), plan, self.loader_steps, -1)
            for video, plan in zip(videos, plans, strict=True)
        ]
        return self.normalize(torch.stack(clips))


def erase(video: torch.Tensor, box, fill, noise: torch.Tensor | None) -> torch.Tensor:
    """`video` with box (top, left, height, width) set to `fill` (per channel) or to `noise`."""
    top, left, bh, bw = box
    out = video.clone()
    patch = out[..., top : top + bh, left : left + bw]
    if noise is None:
        patch.copy_(torch.tensor(fill, dtype=out.dtype, device=out.device).view(-1, 1, 1).expand_as(patch))
    else:
        patch.copy_(noise.to(out.device))
    return out


def train_transform(img_size: int, mean, std, spec: AugmentSpec | None = None, **fields) -> TrainTransform:
    """The training augmentation of `spec` (fields of AugmentSpec may be given as keywords instead).

    short_side None: img_size·256/224 (256 for 224); 0: no pre-resize. augment_order: "k400"
    (RandAugment before the crop; also UCF101/HMDB51) or "ssv2" (after the flip). crop_scale is
    RandomResizedCrop's area range (MMAction2's default (0.08, 1)); random_erasing is the probability
    of erasing a box (the SSv2 recipe: 0.25 "const"; K400 ViT-L 32×4: 0.25 "rand").
    """
    return TrainTransform(img_size, mean, std, dataclasses.replace(spec or AugmentSpec(), **fields))


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
