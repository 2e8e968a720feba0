"""Registers and spills of the STDHA kernel for a GPU architecture, without a GPU.

Triton compiles for any target offline; the `ptxas` shipped in Triton's wheel then reports (`-v`)
registers per thread and spill stores/loads: spills mean local-memory traffic in the inner loop.
Pointers and strides are declared 16-aligned, as Triton specialises them at launch for real tensors.
"""

import inspect
import re
import subprocess
import tempfile
from pathlib import Path

CONSTEXPR = ("HEAD_DIM", "BLOCK_M", "BLOCK_N", "D_PAD", "UPCAST", "IEEE")


def ptxas_path() -> Path | None:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    return path if path.is_file() else None


def ptxas_usage(
    arch: int = 90,
    dtype: str = "bf16",
    head_dim: int = 64,
    block_m: int = 64,
    block_n: int = 64,
    num_warps: int | None = None,
    num_stages: int = 2,
) -> dict:
    """{"registers", "spill_stores", "spill_loads"} (bytes for spills) of the kernel built for sm_<arch>."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from zeroi2v.kernels.stdha_triton import default_warps, stdha_fwd_kernel

    names = list(inspect.signature(stdha_fwd_kernel.fn).parameters)
    pointers = {"Q": f"*{dtype}", "K": f"*{dtype}", "V": f"*{dtype}", "Out": f"*{dtype}", "Src": "*i32"}
    signature = {
        n: pointers.get(n) or ("constexpr" if n in CONSTEXPR else "fp32" if n == "scale_log2" else "i32") for n in names
    }
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n in pointers or n.startswith("stride")}
    d_pad = max(16, triton.next_power_of_2(head_dim))
    constants = dict(HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, D_PAD=d_pad, UPCAST=False, IEEE=False)
    compiled = triton.compile(
        ASTSource(stdha_fwd_kernel, signature, constants, aligned),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": num_warps or default_warps(d_pad), "num_stages": num_stages},
    )
    ptxas = ptxas_path()
    if ptxas is None:
        raise RuntimeError("Triton's wheel has no ptxas")
    arch_name = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as folder:
        ptx = Path(folder) / "stdha.ptx"
        ptx.write_text(compiled.asm["ptx"])
        command = [str(ptxas), f"-arch={arch_name}", "-v", str(ptx), "-o", str(Path(folder) / "stdha.cubin")]
        out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"ptxas failed: {out.stderr.strip()[-500:]}")
    found = {
        "registers": re.search(r"Used (\d+) registers", out.stderr),
        "spill_stores": re.search(r"(\d+) bytes spill stores", out.stderr),
        "spill_loads": re.search(r"(\d+) bytes spill loads", out.stderr),
    }
    return {k: int(m.group(1)) if m else 0 for k, m in found.items()}
