"""Image pretraining of the demo backbone, so the demo needs no downloads.

ZeroI2V adapts an *image-pretrained* ViT: a frozen ViT with random weights gives linear adapters
nothing to work with (on the motion task it stays near chance). So the demo's backbone is first
trained as an ordinary image model on procedurally generated stills from the same visual world as the
synthetic motion videos (textured backgrounds, shapes of random colour, position, size, brightness
and heading), never on video. Two kinds of targets, because a video model needs to know both *what*
and *where*:

- the classifier head (class token) predicts the object's attributes: shape, x bin, y bin, size bin,
  brightness bin and, for the pointer shapes (arrow, key, ell), which of 8 directions it points in
  (one softmax group each). Half the stills show a pointer, half the backgrounds the complex
  family's multi-scale texture. Against the earlier backbone (symmetric shapes and blocky texture
  only, 4000 steps) this raised ZeroI2V on the complex motions from 63.5% to 78.3% (diagonal motion
  and zoom, not the sense of rotation, which stays near chance for ZeroI2V on these features);
- a small dense head on the patch tokens predicts which 2x2-pixel cells of its patch the object covers
  (sigmoid per cell), so every token knows where the object's edges are to within a couple of pixels.
  Without it position is learned ~3x slower and motion of a few pixels per frame is invisible.

The dense head is dropped; the ViT with its classifier is saved in timm's own layout (safetensors) and
loaded through `pretrained=` like any downloaded image checkpoint. Pretraining takes about 20 minutes
on 2 CPU cores, so the result is shipped in `zeroi2v/assets/` (3.3 MB); regenerate it with

    python -m zeroi2v.pretrain [--steps 8000] [--out zeroi2v/assets/demo_vit.safetensors]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from zeroi2v.data.synthetic import POINTERS, SHAPES, draw_frame, heading_mask, multiscale_texture, object_mask, scene

BACKBONE = "vit_tiny_patch16_224"
TIMM_KWARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 128, "depth": 4, "num_heads": 4}
SHAPE_NAMES = SHAPES + POINTERS
# one softmax group each; heading (8 bins of 45 degrees) only for pointers, which have one
TARGETS = {"shape": len(SHAPE_NAMES), "x": 8, "y": 8, "size": 4, "brightness": 4, "heading": 8}
CELLS = 4  # dense target: CELLS x CELLS occupancy cells per patch
IGNORE = -100  # label of a target the image does not have (a disc has no heading)
SHIPPED = Path(__file__).parent / "assets" / "demo_vit.safetensors"


def random_images(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, size, size, 3) uint8 stills, (n, 6) attribute labels and (n, size, size) bool object masks.

    Half the objects are symmetric shapes, half pointers (arrow, key, ell) at a random heading; half
    the backgrounds have the blocky texture, half a multi-scale one.
    """
    images, labels, masks = [], [], []
    for _ in range(n):
        shape = int(rng.integers(len(SHAPE_NAMES)))
        radius = rng.uniform(0.1, 0.44) * size  # covers the sizes of growing / shrinking videos
        x, y = rng.uniform(0.0, 1.0, 2) * size
        level = rng.uniform(0.0, 1.0)
        heading = IGNORE
        if shape < len(SHAPES):
            mask = object_mask(size, shape, x, y, radius)
        else:
            angle = rng.uniform(0.0, 2 * np.pi)
            mask = heading_mask(size, shape - len(SHAPES), x, y, radius, angle)
            heading = min(7, int(angle / (2 * np.pi) * 8))
        look = scene(rng, size)
        if rng.random() < 0.5:
            look["texture"] = multiscale_texture(rng, size)
        images.append(draw_frame(look, mask, level))
        masks.append(mask)
        labels.append(
            [
                shape,
                min(7, int(x / size * 8)),
                min(7, int(y / size * 8)),
                min(3, int((radius / size - 0.1) / 0.34 * 4)),
                min(3, int(level * 4)),
                heading,
            ]
        )
    return np.stack(images), np.array(labels), np.stack(masks)


def dense_targets(masks: np.ndarray, patch: int) -> torch.Tensor:
    """(n, H, W) masks -> (n, patches, CELLS²) fraction of each cell the object covers, in token order."""
    m = torch.from_numpy(masks).float()[:, None]
    n, grid = m.shape[0], m.shape[-1] // patch
    occ = F.avg_pool2d(m, patch // CELLS)[:, 0]  # (n, grid·CELLS, grid·CELLS)
    return occ.view(n, grid, CELLS, grid, CELLS).permute(0, 1, 3, 2, 4).reshape(n, grid * grid, CELLS * CELLS)


def blank_patch_mask(batch: int, grid: int, share: float) -> torch.Tensor:
    """(batch, grid, grid) float, 1 where a patch is blanked: `share` of the patches of the second half
    of the batch (the first half stays whole, so the attributes are still learnt from whole images)."""
    blank = (torch.rand(batch, grid, grid) < share).float()
    blank[: batch // 2] = 0
    return blank


class StillsNet(nn.Module):
    """The demo ViT with its pretraining heads: attribute logits (class token) and, per patch, which
    cells of the grid the object covers."""

    def __init__(self):
        super().__init__()
        import timm

        self.vit = timm.create_model(BACKBONE, pretrained=False, num_classes=sum(TARGETS.values()), **TIMM_KWARGS)
        self.dense_head = nn.Linear(self.vit.embed_dim, CELLS * CELLS)
        self.register_buffer("mean", torch.tensor(self.vit.pretrained_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.vit.pretrained_cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.splits = np.cumsum([0] + list(TARGETS.values()))  # each attribute's slice of the logits

    def forward(self, images: np.ndarray, blank: torch.Tensor | None = None):
        patch = TIMM_KWARGS["patch_size"]
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - self.mean) / self.std
        if blank is not None:
            x = x * (1 - blank.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, None])
        tokens = self.vit.forward_features(x)
        return self.vit.forward_head(tokens), self.dense_head(tokens[:, self.vit.num_prefix_tokens :])


@torch.no_grad()
def held_out_accuracy(net: StillsNet, seed: int) -> dict[str, float]:
    """Accuracy of each attribute and the IoU of the covered cells on 512 fresh stills."""
    images, labels, masks = random_images(512, TIMM_KWARGS["img_size"], np.random.default_rng(seed))
    logits, cells = net(images)
    accuracy, splits = {}, net.splits
    for i, name in enumerate(TARGETS):
        has = labels[:, i] != IGNORE
        correct = logits[:, splits[i] : splits[i + 1]].argmax(1).numpy() == labels[:, i]
        accuracy[name] = round(float(correct[has].mean()), 3)
    pred, true = cells > 0, dense_targets(masks, TIMM_KWARGS["patch_size"]) > 0.5
    accuracy["cells_iou"] = round(float((pred & true).sum() / (pred | true).sum()), 3)
    return accuracy


def pretrain(
    out_path,
    *,
    steps: int = 8000,
    batch: int = 64,
    lr: float = 1e-3,
    dense_weight: float = 10.0,
    seed: int = 0,
    blank_patches: float = 0.0,
    progress: bool = True,
) -> dict:
    """Train the demo ViT on random stills; writes `out_path` (timm state dict) and a JSON beside it.

    `blank_patches` (experimental, 0: off, as the shipped backbone): blank that share of the patches
    (the normalised mean colour) in half of each batch, while the dense head must still tell which
    cells of them the object covers. Only the neighbouring patches can tell, which pulls some heads
    towards local attention (docs/research/stability.md, "Why: the demo backbone's attention is flat").
    """
    from tqdm import tqdm

    from zeroi2v.fileio import atomic_save_safetensors, atomic_write_json

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    size, patch = TIMM_KWARGS["img_size"], TIMM_KWARGS["patch_size"]
    forward = StillsNet()
    model, splits = forward.vit, forward.splits
    optimizer = torch.optim.AdamW(forward.parameters(), lr=lr, weight_decay=0.05)
    start = time.time()
    forward.train()
    bar = tqdm(range(steps), desc="pretraining the image backbone", disable=not progress, dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:  # warm-up then cosine
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        images, labels, masks = random_images(batch, size, rng)
        blank = blank_patch_mask(batch, size // patch, blank_patches) if blank_patches > 0 else None
        logits, cells = forward(images, blank)
        y = torch.from_numpy(labels)
        attr_loss = sum(
            F.cross_entropy(logits[:, splits[i] : splits[i + 1]], y[:, i], ignore_index=IGNORE)
            for i in range(len(TARGETS))
        )
        dense_loss = F.binary_cross_entropy_with_logits(cells, dense_targets(masks, patch))
        loss = attr_loss + dense_weight * dense_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            bar.set_postfix(attributes=f"{attr_loss.item():.3f}", cells=f"{dense_loss.item():.4f}")

    accuracy = held_out_accuracy(forward.eval(), seed + 1)
    out_path = Path(out_path)
    atomic_save_safetensors(out_path, model.state_dict())
    info = {
        "backbone": BACKBONE,
        "timm_kwargs": TIMM_KWARGS,
        "targets": TARGETS,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
        **({"blank_patches": blank_patches} if blank_patches else {}),
        "seconds": round(time.time() - start, 1),
        "held_out_accuracy": accuracy,
    }
    atomic_write_json(out_path.with_suffix(".json"), info)
    return info


def cached_backbone(cache_dir=None, progress: bool = True, **kwargs) -> Path:
    """The pretrained demo backbone: the copy shipped in the package, else a cached one, else train it.

    Passing pretraining kwargs (e.g. `steps=30` for smoke tests) skips the shipped copy.
    """
    if SHIPPED.is_file() and not kwargs:
        return SHIPPED
    cache = Path(cache_dir or Path.home() / ".cache" / "zeroi2v")
    name = "demo_vit" + "".join(f"_{k}{v}" for k, v in sorted(kwargs.items())) + ".safetensors"
    path = cache / name
    if not path.is_file():
        pretrain(path, progress=progress, **kwargs)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zeroi2v.pretrain",
        description="Regenerate the demo's image-pretrained ViT (shipped as zeroi2v/assets/demo_vit.safetensors).",
    )
    parser.add_argument("--out", default=str(SHIPPED))
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blank-patches",
        type=float,
        default=0.0,
        help="experimental: share of patches blanked in half of each batch (0: off, as shipped)",
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        parser.error(f"--steps and --batch must be >= 1, got {args.steps} and {args.batch}")
    if not 0 <= args.blank_patches < 1:
        parser.error(f"--blank-patches must be in [0, 1), got {args.blank_patches}")
    out = Path(args.out)
    if args.blank_patches and out.resolve() == SHIPPED.resolve():
        parser.error("--blank-patches makes an experimental backbone: give --out, so the shipped one stays")
    if out.is_dir():
        parser.error(f"--out {out} is a folder; give the .safetensors file to write")
    try:  # find out now, not after 20 minutes of training, that the file cannot be written
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(f"cannot create the folder of --out {out}: {error.strerror or error}")
    if not os.access(out.parent, os.W_OK):
        parser.error(f"cannot write into {out.parent} (--out)")
    print(
        json.dumps(
            pretrain(args.out, steps=args.steps, batch=args.batch, seed=args.seed, blank_patches=args.blank_patches),
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
