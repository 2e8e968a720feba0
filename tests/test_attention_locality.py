"""benchmarks.attention_locality measures what it says: uniform attention reads as uniform."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def locality_module():
    return load_benchmark("attention_locality")


def test_flat_attention_reads_as_uniform(locality_module):
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=2,
    ).eval()
    with torch.no_grad():
        for block in model.blocks:  # zero queries and keys: every token attends to every token equally
            block.attn.qkv.weight[:128].zero_()
            block.attn.qkv.bias[:128].zero_()
    images = locality_module.synthetic_frames("complex", videos=2, frames=4, size=32, seed=0)
    table = locality_module.locality(model, images)
    n = 17  # 4x4 patches + class token
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    uniform_distance = np.linalg.norm(grid[:, None] - grid[None], axis=-1).mean()
    assert len(table) == 2 and all(len(heads) == 2 for heads in table)
    for heads in table:
        for row in heads:
            assert row["own"] == pytest.approx(1 / n, abs=1e-6)
            assert row["distance"] == pytest.approx(uniform_distance, abs=1e-5)
            assert row["entropy"] == pytest.approx(1.0, abs=1e-5)


def test_report_names_the_backbone_and_the_uniform_reference(locality_module, tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not really weights")
    table = [[{"own": 0.5, "distance": 0.7, "entropy": 0.3}]]
    text = locality_module.report(table, 17, (4, 4), weights, "python -m benchmarks.attention_locality")
    assert "w.safetensors" in text and f"{1 / 17:.3f}" in text and "| 0 | 0 | 0.500 | 0.70 | 0.30 |" in text
    assert math.isfinite(float(text.split("distance ")[1].split(",")[0]))
