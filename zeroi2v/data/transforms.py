"""Clip augmentation with torchvision transforms v2: one set of random parameters per clip.

A clip is a `tv_tensors.Video` (T, C, H, W) uint8, so v2 applies the same crop, RandAugment ops and
erasing to every frame (temporal order and consistency preserved). Output is float (C, T, H, W),
normalised with the backbone's statistics.

train: resize short side -> RandAugment(4 ops, magnitude 7) -> RandomResizedCrop(img_size)
       -> [RandomErasing] -> normalise   (the horizontal flip is done by the dataset, which may need
       to swap the label of direction classes)
eval:  resize short side to img_size -> center crop, or three crops along the long side -> normalise
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


def train_transform(img_size: int, mean, std, *, short_side: int | None = None, rand_augment: bool = True,
                    random_erasing: float = 0.0, scale=(0.08, 1.0)) -> v2.Compose:
    short_side = short_side or int(round(img_size * 256 / 224))
    steps = [v2.Resize(short_side, antialias=True)]
    if rand_augment:
        steps.append(v2.RandAugment(num_ops=4, magnitude=7))
    steps.append(v2.RandomResizedCrop(img_size, scale=scale, antialias=True))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps)


class ThreeCrop(torch.nn.Module):
    """Three img_size squares along the long side (left/center/right or top/center/bottom)."""

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


def eval_transform(img_size: int, mean, std, crops: int = 1):
    """Returns a callable: (T, C, H, W) uint8 -> (crops, C, T, H, W) float."""
    if crops not in (1, 3):
        raise ValueError(f"test crops must be 1 or 3, got {crops}")
    resize = v2.Resize(img_size, antialias=True)
    crop = v2.CenterCrop(img_size) if crops == 1 else ThreeCrop(img_size)
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def apply(video: torch.Tensor) -> torch.Tensor:
        video = resize(tv_tensors.Video(video))
        views = crop(video)
        if crops == 1:
            views = views.unsqueeze(0)
        views = norm(tv_tensors.Video(views.flatten(0, 1))).reshape(views.shape[0], *views.shape[1:])
        return views.permute(0, 2, 1, 3, 4).contiguous()  # (crops, C, T, H, W)

    return apply
