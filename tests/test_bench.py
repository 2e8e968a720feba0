"""`zeroi2v bench`: STDHA equals the reference-style implementation, a toy-size smoke run, the doc assembly."""
import json
import os
import subprocess
import sys
from pathlib import Path

import timm
import torch

from zeroi2v.bench import assemble, reference_style_attention, train_step_child
from zeroi2v.stdha import STDHAttention

ROOT = Path(__file__).resolve().parents[1]


def test_stdha_equals_reference_style_implementation():
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, depth=1, img_size=32, patch_size=8,
                            embed_dim=192, num_heads=3)
    attn = STDHAttention(vit.blocks[0].attn, 4, (-1, 1)).eval()
    x = torch.randn(8, 17, 192)
    with torch.no_grad():
        ours = attn(x)
        ref = reference_style_attention(attn, x.transpose(0, 1), 4, [(0, 64, -1), (64, 128, 1)]).transpose(0, 1)
    assert (ours - ref).abs().max() < 1e-5


def test_bench_smoke_as_a_command(tmp_path):
    out = tmp_path / "docs" / "benchmarks.md"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks_decode.md").write_text("## Decoding\n\nseek-and-stop table\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    proc = subprocess.run([sys.executable, "-m", "zeroi2v.bench", "--tiny", "--what", "inference", "stdha",
                           "--repeats", "1", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks")
    assert "ZeroI2V merged" in text and "reference-style" in text and "machine:" in text and "command:" in text
    assert "seek-and-stop table" in text  # the decode section is merged in
    assert "bench/accuracy.md" in text  # listed as not generated yet
    data = json.loads((out.parent / "bench" / "cost.json").read_text())
    rows = {r["method"]: r for r in data["inference"][0]}
    assert set(rows) == {"plain image model", "ZeroI2V merged", "ZeroI2V unmerged", "AIM", "ST-Adapter", "joint attention"}
    assert rows["ZeroI2V merged"]["extra_params_vs_plain"] == 8 * 96  # the T×D temporal table only
    assert abs(rows["ZeroI2V merged"]["flops_vs_plain"] - 1) < 0.01  # (per-frame heads of the toy image model: <1%)
    for peer in ("ZeroI2V unmerged", "AIM", "ST-Adapter", "joint attention"):
        assert rows[peer]["flops_vs_plain"] > 1.02, peer  # each shows its extra cost
    assert data["stdha"][0]["max_abs_error"] < 1e-4
    assert any(c["check"].startswith("STDHA") for c in data["checks"])
    assert list((out.parent / "bench").glob("inference_*.png"))


def test_training_measurement_child():
    """One training configuration as the bench's subprocesses run it (frozen vs full: what trains)."""
    from zeroi2v.bench import TINY
    spec = dict(method="zeroi2v", freeze=True, amp="none", checkpointing=True, backbone="vit_base_patch16_224",
                frames=4, batch=1, device="cpu", steps=2, timm_kwargs=TINY)
    frozen = train_step_child(spec)
    full = train_step_child({**spec, "freeze": False, "checkpointing": False})
    assert frozen["step_s"] > 0 and frozen["peak_mem_mb"] > frozen["resident_mb"] > 0  # activations on top
    assert 0 < frozen["trainable"] < full["trainable"] / 2
    # Adam's two moments and the gradients of every weight: full fine-tuning holds far more
    assert full["resident_mb"] > 1.5 * frozen["resident_mb"] and full["peak_mem_mb"] > frozen["peak_mem_mb"]
    bf16 = train_step_child({**spec, "amp": "bf16", "checkpointing": False})
    assert bf16["peak_mem_mb"] > bf16["resident_mb"]


def test_assemble_orders_generated_sections(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "cost.md").write_text("## Cost and speed\n\ncost\n")
    (tmp_path / "bench" / "accuracy.md").write_text("# Accuracy at equal budget\n\nacc\n")
    text = assemble(tmp_path / "benchmarks.md")
    assert text.index("## Cost and speed") < text.index("## Accuracy at equal budget")  # titles demoted to sections
    assert "benchmarks_decode.md" in text  # missing section listed
    assert (tmp_path / "benchmarks.md").read_text() == text
