"""Clip augmentation with torchvision transforms v2: one set of random parameters per clip.

Frames travel as a `tv_tensors.Video` (T, C, H, W) uint8, for which v2 draws the crop box, the
RandAugment ops and magnitudes and the erased box once and applies them to every frame, so motion
between frames is left intact. Outputs are float (C, T, H, W), normalised with the backbone's
statistics (`model.data_config`, on the 0..1 scale).

The order follows the ZeroI2V reference pipeline (MMAction2):
train: resize short side (default img_size·256/224) -> RandAugment(num_ops=4, magnitude=7)
       -> RandomResizedCrop(img_size, scale) -> horizontal flip (p=0.5) -> normalise
       -> RandomErasing(p) (random-noise fill, MMAction2's mode="rand")
test:  resize short side to img_size -> center crop, or three crops along the long side
       (left/center/right for landscape, top/center/bottom for portrait, as MMAction2's ThreeCrop).

All randomness comes from torch's global generator, so seeding it right before the call (the
dataset does, from (seed, epoch, index)) makes a clip reproducible.
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class TrainTransform(torch.nn.Module):
    """uint8 (T, C, H, W) -> (float (C, T, img_size, img_size), flipped: bool).

    The flip is reported so the caller can swap the label of direction classes (SSv2).
    """

    def __init__(self, img_size: int, mean, std, *, short_side: int | None = None, rand_augment: bool = True,
                 flip: bool = True, random_erasing: float = 0.0, scale=(0.08, 1.0)):
        super().__init__()
        short_side = short_side if short_side is not None else int(round(img_size * 256 / 224))
        self.crop = v2.Compose(([v2.Resize(short_side, antialias=True)] if short_side else []) +
                               ([v2.RandAugment(num_ops=4, magnitude=7)] if rand_augment else []) +
                               [v2.RandomResizedCrop(img_size, scale=tuple(scale), antialias=True)])
        self.flip = flip
        self.augment = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))] +
                                  ([v2.RandomErasing(p=random_erasing, value="random")] if random_erasing > 0 else []))

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, bool]:
        video = self.crop(tv_tensors.Video(video))
        flipped = bool(self.flip and torch.rand(()) < 0.5)
        if flipped:
            video = v2.functional.horizontal_flip(video)
        video = self.augment(video)
        return video.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous(), flipped


def train_transform(img_size: int, mean, std, *, short_side: int | None = None, rand_augment: bool = True,
                    flip: bool = True, random_erasing: float = 0.0, scale=(0.08, 1.0)) -> TrainTransform:
    """The training augmentation. `short_side=None`: img_size·256/224 (256 for 224); 0: no pre-resize.

    `scale` is RandomResizedCrop's area range (MMAction2's default (0.08, 1)); `random_erasing` is the
    probability of erasing a box (the SSv2 recipe uses 0.25).
    """
    return TrainTransform(img_size, mean, std, short_side=short_side, rand_augment=rand_augment, flip=flip,
                          random_erasing=random_erasing, scale=scale)


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
        return torch.stack([video[..., y:y + s, x:x + s] for x, y in boxes])


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


test_transform.__test__ = False  # not a pytest test when imported into test modules
TestTransform.__test__ = False
eval_transform = test_transform
