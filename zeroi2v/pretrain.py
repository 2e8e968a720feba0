"""Image pretraining of the demo backbone, so the demo needs no downloads.

ZeroI2V adapts an *image-pretrained* ViT; a randomly initialised frozen ViT with linear adapters
cannot learn motion. The demo therefore first trains a small timm ViT as an ordinary image
classifier on procedurally generated still images (the same visual world as the synthetic motion
videos: textured backgrounds, shapes of random colour, position, size and brightness). Its targets
are what an image model should know: which shape, where it is (x and y bins), how big and how bright
it is (one softmax head per attribute). The result is saved in timm's own layout (safetensors) and
loaded through `pretrained=` like any downloaded image checkpoint.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zeroi2v.data.synthetic import draw_frame

BACKBONE = "vit_tiny_patch16_224"
TIMM_KWARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 128, "depth": 4, "num_heads": 4}
TARGETS = {"shape": 3, "x": 8, "y": 8, "size": 4, "brightness": 4}  # one softmax group each


def random_images(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size, 3) uint8 still images and (n, 5) attribute labels."""
    images, labels = [], []
    for _ in range(n):
        shape = int(rng.integers(3))
        radius = rng.uniform(0.12, 0.44) * size  # covers the sizes of growing/shrinking videos
        x, y = rng.uniform(0.05, 0.95, 2) * size
        gain = rng.uniform(0.35, 1.65)
        images.append(draw_frame(rng, size, shape=shape, x=x, y=y, radius=radius, gain=gain))
        labels.append([shape, min(7, int(x / size * 8)), min(7, int(y / size * 8)),
                       min(3, int((radius / size - 0.12) / 0.32 * 4)), min(3, int((gain - 0.35) / 1.3 * 4))])
    return np.stack(images), np.array(labels)


def pretrain(out_path, *, steps: int = 1200, batch: int = 128, lr: float = 2e-3, seed: int = 0,
             progress: bool = True) -> dict:
    """Train the demo ViT on random images; writes `out_path` (timm state dict) + a JSON beside it."""
    import timm
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = timm.create_model(BACKBONE, pretrained=False, num_classes=sum(TARGETS.values()), **TIMM_KWARGS)
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    splits = np.cumsum([0] + list(TARGETS.values()))
    start = time.time()
    model.train()
    bar = tqdm(range(steps), desc="pretraining the image backbone", disable=not progress, dynamic_ncols=True)
    for step in bar:
        for group in optimizer.param_groups:  # warm-up then cosine
            group["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        images, labels = random_images(batch, TIMM_KWARGS["img_size"], rng)
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
        if rng.random() < 0.5:  # the videos' classes are mirror-symmetric; flip x-bins with the image
            x = x.flip(-1)
            labels[:, 1] = 7 - labels[:, 1]
        logits = model(x)
        y = torch.from_numpy(labels)
        loss = sum(F.cross_entropy(logits[:, splits[i]:splits[i + 1]], y[:, i]) for i in range(len(TARGETS)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    images, labels = random_images(512, TIMM_KWARGS["img_size"], np.random.default_rng(seed + 1))
    with torch.no_grad():
        logits = model((torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std)
    accuracy = {name: float((logits[:, splits[i]:splits[i + 1]].argmax(1).numpy() == labels[:, i]).mean())
                for i, name in enumerate(TARGETS)}
    from zeroi2v.fileio import atomic_save_safetensors, atomic_write_json

    out_path = Path(out_path)
    atomic_save_safetensors(out_path, model.state_dict())
    info = {"backbone": BACKBONE, "timm_kwargs": TIMM_KWARGS, "targets": TARGETS, "steps": steps,
            "seconds": round(time.time() - start, 1), "held_out_accuracy": accuracy}
    atomic_write_json(out_path.with_suffix(".json"), info)
    return info


def cached_backbone(cache_dir=None, progress: bool = True, **kwargs) -> Path:
    """The pretrained demo backbone: the copy shipped in the package, else a cached one, else train it."""
    shipped = Path(__file__).parent / "assets" / "demo_vit.safetensors"
    if shipped.is_file() and not kwargs:
        return shipped
    cache = Path(cache_dir or Path.home() / ".cache" / "zeroi2v")
    path = cache / "demo_vit.safetensors"
    if not path.is_file():
        pretrain(path, progress=progress, **kwargs)
    return path


if __name__ == "__main__":  # regenerate the shipped backbone: python -m zeroi2v.pretrain
    target = Path(__file__).parent / "assets" / "demo_vit.safetensors"
    target.parent.mkdir(exist_ok=True)
    print(json.dumps(pretrain(target), indent=2))
