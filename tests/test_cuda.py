"""On a GPU (`pytest -m cuda`; skipped without one, always collected).

- STDHA equals a slow per-head gather, restated here from the definition (each temporal head's
  queries of frame t attend to all keys/values of frame t+Δt, frame t itself at the clip ends), under
  each SDPA backend (flash, memory-efficient, math) in bf16 and fp32, forward and input gradient.
- merged == unmerged on CUDA (fp32 and bf16).
- a bf16-autocast training step matches the fp32 step.
- Inductor compiles the training step (forward + backward) and the merged model in one graph, equal
  to eager.
- the bench's training peak memory comes from the CUDA allocator.
- a 1-process `torchrun` run over NCCL trains on generated videos (needs PyAV to write them).

Tolerances (max abs error relative to max |reference|):
  fp32: 1e-4 (TF32 off); bf16: 3e-2 (8-bit mantissa, errors of ~4e-3 per rounding accumulate over the
  qkv projection, the softmax and the output projection).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zeroi2v

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m cuda on a GPU host)"),
]

REPO = Path(__file__).resolve().parents[1]
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}
TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=128, num_heads=2)  # head_dim 64: flash-eligible


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 means fp32 here: no TF32 in matmuls or convolutions."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def scaled_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|."""
    ref = ref.double()
    return ((out.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()


def slow_stdha(attn, x: torch.Tensor, num_frames: int, offsets) -> torch.Tensor:
    """STDHA from its definition, in fp64, one head and one frame at a time (no shared code with
    `zeroi2v.stdha`): x (B·T, N, C) -> attention layer output (B·T, N, C)."""
    BT, N, C = x.shape
    H, d = attn.num_heads, C // attn.num_heads
    w, b = attn.qkv.weight.double(), attn.qkv.bias.double() if attn.qkv.bias is not None else None
    qkv = torch.nn.functional.linear(x.double(), w, b).view(BT // num_frames, num_frames, N, 3, H, d)
    out = torch.empty(BT // num_frames, num_frames, N, H, d, dtype=torch.float64, device=x.device)
    for h in range(H):
        dt = offsets[h] if h < len(offsets) else 0
        for t in range(num_frames):
            src = t + dt if 0 <= t + dt < num_frames else t  # boundary "keep": the head's own frame
            q, k, v = qkv[:, t, :, 0, h], qkv[:, src, :, 1, h], qkv[:, src, :, 2, h]  # (B, N, d)
            weights = torch.softmax(q @ k.transpose(1, 2) / d**0.5, dim=-1)
            out[:, t, :, h] = weights @ v
    merged = out.reshape(BT, N, C)
    return torch.nn.functional.linear(
        merged, attn.proj.weight.double(), attn.proj.bias.double() if attn.proj.bias is not None else None
    )


def backends():
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["flash", "efficient", "math"])
def test_stdha_equals_slow_gather_under_each_sdpa_backend(backend, dtype):
    import timm
    from torch.nn.attention import sdpa_kernel

    from zeroi2v.stdha import STDHAttention

    if backend == "flash" and dtype == torch.float32:
        pytest.skip("flash attention has no fp32 kernel")
    torch.manual_seed(0)
    T, offsets = 8, (-1, 1, 2)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, depth=1)  # 12 heads of 64, 197 tokens
    attn = STDHAttention(vit.blocks[0].attn, T, offsets).cuda().to(dtype).eval()
    x = torch.randn(2 * T, 197, 768, device="cuda", dtype=dtype, requires_grad=True)
    with sdpa_kernel([backends()[backend]]):  # only this kernel: an unsupported case raises, never falls back
        out = attn(x)
        out.float().square().sum().backward()
    ref_x = x.detach().double().requires_grad_(True)
    ref = slow_stdha(attn, ref_x, T, offsets)
    ref.square().sum().backward()
    err = scaled_error(out, ref)
    assert err <= TOL[dtype], f"{backend} {dtype}: output error {err:.2e}"
    grad_err = scaled_error(x.grad, ref_x.grad)
    assert grad_err <= TOL[dtype], f"{backend} {dtype}: input-gradient error {grad_err:.2e}"


def tiny_model(**kwargs):
    torch.manual_seed(0)
    model = zeroi2v.create_model(
        "vit_tiny_patch16_224", num_frames=8, num_classes=10, head_offsets=(-1, 1), **{**TINY, **kwargs}
    )
    with torch.no_grad():  # trained-like adapters: the merge must reproduce them, not the image model
        for name, p in model.named_parameters():
            if "adapter" in name or "temporal_embed" in name:
                p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_merged_equals_unmerged_on_cuda(dtype):
    model = tiny_model().cuda().eval()
    merged = zeroi2v.reparameterize(model)  # verified on the GPU in fp32 (raises MergeError otherwise)
    assert merged.merge_error is not None and merged.merge_error < 1e-4
    x = torch.randn(4, 3, 8, 32, 32, device="cuda")
    with torch.no_grad():
        ref = model.double()(x.double())
        out = merged.to(dtype)(x.to(dtype))
    assert scaled_error(out, ref) <= TOL[dtype]


def test_bf16_autocast_training_step_matches_fp32():
    """One training step's loss and gradients under bf16 autocast vs fp32 (same weights and batch).
    Stated tolerance: loss within 2% relative, every trainable tensor's gradient within 5% relative
    L2 error, the whole gradient's cosine similarity >= 0.995."""
    model = tiny_model(head_dropout=0.0).cuda().train()
    x = torch.randn(4, 3, 8, 32, 32, device="cuda")
    y = torch.randint(0, 10, (4,), device="cuda")
    results = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        results[name] = (loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (loss32, g32), (loss16, g16) = results["fp32"], results["bf16"]
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32)
    flat32 = torch.cat([g.flatten() for g in g32.values()])
    flat16 = torch.cat([g16[n].flatten() for n in g32])
    assert torch.nn.functional.cosine_similarity(flat32, flat16, dim=0) >= 0.995
    for n, g in g32.items():
        if g.norm() > 1e-6:
            rel = ((g16[n] - g).norm() / g.norm()).item()
            assert rel <= 0.05, f"{n}: bf16 gradient differs by {rel:.1%}"


def test_inductor_compiles_training_step_and_merged_model_on_cuda():
    model = tiny_model(head_dropout=0.0).cuda().train()
    x = torch.randn(2, 3, 8, 32, 32, device="cuda")
    y = torch.randint(0, 10, (2,), device="cuda")

    def step(forward):
        model.zero_grad(set_to_none=True)
        out = forward(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    torch._dynamo.reset()
    out, grads = step(model)
    c_out, c_grads = step(torch.compile(model, fullgraph=True))
    assert scaled_error(c_out, out) <= TOL[torch.float32]
    for n in grads:
        assert scaled_error(c_grads[n], grads[n]) <= TOL[torch.float32], n
    merged = zeroi2v.reparameterize(model.eval())
    with torch.no_grad():
        assert scaled_error(torch.compile(merged, fullgraph=True)(x), merged(x)) <= TOL[torch.float32]
    torch._dynamo.reset()


def test_training_peak_memory_from_cuda_allocator():
    from zeroi2v.cost_tables import train_step_child

    spec = dict(
        method="zeroi2v",
        freeze=True,
        amp="bf16",
        checkpointing=False,
        backbone="vit_tiny_patch16_224",
        frames=8,
        batch=4,
        device="cuda",
        steps=2,
        timm_kwargs=TINY,
    )
    frozen = train_step_child(spec)
    full = train_step_child({**spec, "freeze": False})
    assert frozen["peak_mem_mb"] > frozen["resident_mb"] > 0  # activations on top of weights + Adam state
    assert full["peak_mem_mb"] > frozen["peak_mem_mb"]
    assert torch.cuda.max_memory_allocated() > 0


def test_torchrun_one_process_nccl_training(tmp_path):
    pytest.importorskip(
        "av",
        reason="PyAV is not installed, so no test videos can be written (the GPU image has "
        "none: carry its wheel as benchmarks/gpu_check.sh explains)",
    )
    import torch.distributed as dist
    import yaml

    from zeroi2v.data.synthetic import make_motion_dataset

    if not dist.is_nccl_available():
        pytest.skip("this PyTorch build has no NCCL")
    data = make_motion_dataset(
        tmp_path / "data", train_per_class=4, val_per_class=2, num_frames=16, size=32, num_classes=2, progress=False
    )
    cfg = {
        "output": str(tmp_path / "run"),
        "model": {
            "backbone": "vit_tiny_patch16_224",
            "num_frames": 8,
            "head_offsets": [-1, 1],
            "timm_kwargs": {"patch_size": 8, "depth": 2, "num_heads": 2, "embed_dim": 128},
        },
        "data": {
            "root": data["root"],
            "train_list": data["train_list"],
            "val_list": data["val_list"],
            "sampling": "uniform",
            "img_size": 32,
            "test_clips": 1,
            "rand_augment": False,
        },
        "train": {"epochs": 2, "batch_size": 4, "lr": 1.0e-3, "warmup_epochs": 0, "num_workers": 1, "amp": "bf16"},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        "CI": "true",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "NCCL_DEBUG": "VERSION",
        "OMP_NUM_THREADS": "2",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "1",
            "-m",
            "zeroi2v",
            "train",
            str(tmp_path / "cfg.yaml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NCCL version" in result.stdout + result.stderr  # the process group really ran over NCCL
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    assert (tmp_path / "run" / "model.safetensors").is_file()
