"""The fused STDHA kernel (`zeroi2v.kernels.stdha_attention`) on the CPU, under Triton's interpreter.

`TRITON_INTERPRET=1` must be set before Triton compiles anything, so the kernel runs in a subprocess
(`python -m tests.test_kernels GROUP`, which prints its measurements as one JSON line). It is compared
with a restatement written here from the method's definition (per clip, frame and head, float64 loops),
not with zeroi2v's own STDHA code. Without Triton these tests skip; the PyTorch path and the switch are
tested in-process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")

# name: (clips B, frames T, heads H, tokens N, head size d, offsets Δt per head, boundary)
CASES = {
    "N197-d64-keep": (2, 4, 6, 197, 64, (2, -3, 1, 0, -1), "keep"),
    "N197-d64-zero": (2, 4, 6, 197, 64, (2, -3, 1, 0, -1), "zero"),
    "N50-d32-keep": (3, 3, 4, 50, 32, (-1, 1), "keep"),
    "N50-d32-zero": (3, 3, 4, 50, 32, (1, -1, 2), "zero"),
    "N17-d24-keep": (2, 5, 3, 17, 24, (4, -2, 1), "keep"),
    "N17-d24-zero": (2, 5, 3, 17, 24, (0, -4, 6), "zero"),
    "N65-d16-spatial": (2, 2, 2, 65, 16, (), "keep"),
}


def restated(q, k, v, offsets, num_frames, boundary):
    """STDHA from its definition: head h of frame t attends to the keys and values of frame t+Δt_h; out of
    the clip, the own frame ("keep") or zero keys and values ("zero"). Float64, one (frame, head) at a time."""
    BT, H, N, d = q.shape
    offsets = list(offsets) + [0] * (H - len(offsets))
    q, k, v = q.double(), k.double(), v.double()
    out = torch.empty(BT, H, N, d, dtype=torch.float64)
    for clip in range(BT // num_frames):
        for t in range(num_frames):
            for h in range(H):
                row = clip * num_frames + t
                src = t + offsets[h]
                if 0 <= src < num_frames or boundary == "keep":
                    src = src if 0 <= src < num_frames else t
                    keys, values = k[clip * num_frames + src, h], v[clip * num_frames + src, h]
                else:
                    keys = values = torch.zeros(N, d, dtype=torch.float64)
                weights = torch.softmax(q[row, h] @ keys.T / math.sqrt(d), dim=-1)
                out[row, h] = weights @ values
    return out


def fused_views(B, T, H, N, d, dtype=torch.float32, seed=0):
    """q, k, v as STDHA passes them: strided (B·T, H, N, d) views of one fused qkv projection output."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B * T, N, 3, H, d, generator=g).to(dtype)
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


def error(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def run_interpreted(group: str, timeout: int = 900) -> dict:
    from tests.conftest import ENV

    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_kernels", group],
        env={**ENV, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- what the subprocess runs (under TRITON_INTERPRET=1) -----------------------------------------------


def check_fp32() -> dict:
    from zeroi2v.kernels import stdha_attention

    errors = {}
    for name, (B, T, H, N, d, offsets, boundary) in CASES.items():
        q, k, v = fused_views(B, T, H, N, d)
        out = stdha_attention(q, k, v, offsets, T, boundary)
        assert out.shape == q.shape and out.transpose(1, 2).is_contiguous(), out.stride()
        errors[name] = error(out, restated(q, k, v, offsets, T, boundary))
    # contiguous, separate q, k, v are read through their own strides as well
    B, T, H, N, d, offsets, boundary = CASES["N50-d32-zero"]
    q, k, v = (x.contiguous() for x in fused_views(B, T, H, N, d, seed=1))
    errors["contiguous-inputs"] = error(
        stdha_attention(q, k, v, offsets, T, boundary), restated(q, k, v, offsets, T, boundary)
    )
    return errors


def stdha_layer(dtype):
    import timm

    from zeroi2v.stdha import STDHAttention

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_heads=4, depth=1, img_size=32, patch_size=8)
    layer = STDHAttention(vit.blocks[0].attn, num_frames=4, head_offsets=(-1, 1, 2), boundary="keep")
    layer.fused_kernel = True  # switched on (off by default until measured on a GPU)
    return layer.to(dtype).eval()


def check_half() -> dict:
    """bf16/fp16 through the kernel (the interpreter computes in fp32) and STDHAttention's choice of path."""
    from zeroi2v.kernels import stdha_attention

    errors = {}
    for dtype in (torch.bfloat16, torch.float16):
        B, T, H, N, d, offsets, boundary = CASES["N50-d32-zero"]
        q, k, v = fused_views(B, T, H, N, d, dtype=dtype)
        errors[f"kernel-{dtype}"] = error(
            stdha_attention(q, k, v, offsets, T, boundary), restated(q, k, v, offsets, T, boundary)
        )
    attn = stdha_layer(torch.bfloat16)
    x = torch.randn(2 * 4, 17, 192).to(torch.bfloat16)
    with torch.no_grad():
        qkv = attn.qkv(x).reshape(8, 17, 3, 4, 48)
        uses = {"bf16-no-grad": attn.use_kernel(qkv, None, False), "fp32": attn.use_kernel(qkv.float(), None, False)}
        uses["mask"] = attn.use_kernel(qkv, torch.ones(17, 17, dtype=torch.bool), False)
        fused = attn(x)
        attn.fused_kernel = False
        uses["switched-off"] = attn.use_kernel(qkv, None, False)
        shifted = attn(x)
        attn.fused_kernel = True
    uses["grad"] = attn.use_kernel(attn.qkv(x).reshape(8, 17, 3, 4, 48), None, False)
    errors["layer-kernel-vs-shift"] = error(fused, shifted)
    return {"errors": errors, "uses": uses}


def check_compile() -> dict:
    """`torch.compile(fullgraph=True)` (Inductor) through the custom op equals eager."""
    from zeroi2v.kernels import stdha_attention

    B, T, H, N, d, offsets, boundary = 1, 2, 2, 17, 16, (1,), "zero"

    def f(qkv):
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return stdha_attention(q * 2.0, k, v, offsets, T, boundary).transpose(1, 2).reshape(B * T, N, H * d) + 1.0

    qkv = torch.randn(B * T, N, 3, H, d)
    compiled = torch.compile(f, fullgraph=True)(qkv)
    attn = stdha_layer(torch.bfloat16)  # bf16 inference: STDHAttention takes the kernel
    x = torch.randn(4, 17, 192).to(torch.bfloat16)
    with torch.no_grad():
        assert attn.use_kernel(attn.qkv(x).reshape(4, 17, 3, 4, 48), None, False)
        eager_layer = attn(x)
        compiled_layer = torch.compile(attn, fullgraph=True)(x)
    return {"op": error(compiled, f(qkv)), "layer-bf16": error(compiled_layer, eager_layer)}


# --- the tests -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp32_errors():
    return run_interpreted("fp32")


@needs_triton
@pytest.mark.parametrize("name", [*CASES, "contiguous-inputs"])
def test_kernel_equals_float64_restatement_in_fp32(fp32_errors, name):
    assert fp32_errors[name] <= 1e-4, fp32_errors


@needs_triton
def test_kernel_in_half_precision_and_stdha_layer_uses_it_only_for_half_inference():
    result = run_interpreted("half")
    errors, uses = result["errors"], result["uses"]
    assert errors["kernel-torch.bfloat16"] <= 2e-2 and errors["kernel-torch.float16"] <= 4e-3, errors
    assert errors["layer-kernel-vs-shift"] <= 3e-2, errors
    assert uses == {"bf16-no-grad": True, "fp32": False, "mask": False, "switched-off": False, "grad": False}


@needs_triton
@pytest.mark.slow
def test_compile_fullgraph_through_the_kernel_equals_eager():
    errors = run_interpreted("compile")
    assert errors["op"] <= 1e-5 and errors["layer-bf16"] <= 1e-2, errors


@needs_triton
@pytest.mark.parametrize("arch", [80, 90])
def test_kernel_builds_for_ampere_and_hopper_without_register_spills(arch):
    """Built offline with Triton's own ptxas (no GPU needed): spills would put local-memory traffic in the loop."""
    from zeroi2v.kernels import registers

    if registers.ptxas_path() is None:
        pytest.skip("Triton's wheel has no ptxas")
    for dtype, head_dim in (("bf16", 64), ("fp16", 64), ("bf16", 128)):
        usage = registers.ptxas_usage(arch=arch, dtype=dtype, head_dim=head_dim)
        assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0 and 0 < usage["registers"] <= 255, usage


@pytest.mark.parametrize("name", ["N50-d32-zero", "N17-d24-keep"])
def test_pytorch_path_where_triton_cannot_run_equals_restatement(name, monkeypatch):
    import zeroi2v.kernels as kernels

    monkeypatch.setattr(kernels, "INTERPRET", False)
    B, T, H, N, d, offsets, boundary = CASES[name]
    q, k, v = fused_views(B, T, H, N, d)
    out = kernels.stdha_attention(q, k, v, offsets, T, boundary)
    assert out.transpose(1, 2).is_contiguous()
    assert error(out, restated(q, k, v, offsets, T, boundary)) <= 1e-5


def test_stdha_attention_refuses_inconsistent_arguments():
    from zeroi2v.kernels import stdha_attention

    q, k, v = fused_views(1, 4, 2, 5, 16)
    for args in [((1, 2, 3), 4, "keep"), ((1,), 3, "keep"), ((1,), 4, "wrap")]:
        with pytest.raises(ValueError):
            stdha_attention(q, k, v, *args)
    with pytest.raises(ValueError):
        stdha_attention(q, k[:, :, :3], v, (1,), 4)


def test_imports_without_triton_and_the_switch_turns_the_kernel_off():
    from tests.conftest import ENV

    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, zeroi2v.kernels as K, zeroi2v.stdha as S\n"
        "assert not K.HAS_TRITON and not S.kernel_enabled()\n"
        "q = torch.randn(4, 2, 5, 16)\n"
        "assert not K.triton_runs_on(q) and K.stdha_attention(q, q, q, (1,), 2).shape == q.shape\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**ENV, "TRITON_INTERPRET": "1", "ZEROI2V_STDHA_KERNEL": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


@needs_triton
def test_kernel_bench_writes_the_register_table_and_refuses_to_time_without_a_gpu(tmp_path):
    from tests.conftest import ENV, REPO

    def bench(*args):
        command = [sys.executable, "-m", "benchmarks.kernel_bench", "--out", str(tmp_path), *args]
        return subprocess.run(command, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)

    if not torch.cuda.is_available():
        proc = bench()
        assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr, proc.stderr[-2000:]
    proc = bench("--registers-only")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "kernel.md").read_text()
    assert "| sm_90 | 64 |" in text and json.loads((tmp_path / "kernel.json").read_text())["registers"]


if __name__ == "__main__":
    print(json.dumps({"fp32": check_fp32, "half": check_half, "compile": check_compile}[sys.argv[1]]()))


def test_the_kernel_is_off_unless_switched_on(monkeypatch):
    """Off by default until measured faster on a GPU; ZEROI2V_STDHA_KERNEL=1 switches it on."""
    from timm.layers import Attention

    from zeroi2v.stdha import STDHAttention, kernel_enabled

    def layer():
        return STDHAttention(Attention(64, num_heads=4), num_frames=4, head_offsets=(1, -1))

    monkeypatch.delenv("ZEROI2V_STDHA_KERNEL", raising=False)
    assert not kernel_enabled() and not layer().fused_kernel
    monkeypatch.setenv("ZEROI2V_STDHA_KERNEL", "1")
    assert kernel_enabled() and layer().fused_kernel
