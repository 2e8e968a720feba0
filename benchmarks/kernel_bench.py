"""STDHA's fused kernel on the GPU: its attention core vs SDPA without temporal heads vs the shift path.

    python -m benchmarks.kernel_bench --out docs/bench/gpu            # a CUDA GPU, bf16, ~2 minutes
    python -m benchmarks.kernel_bench --out /tmp/k --registers-only   # registers and spills only (no GPU)

For the attention shapes of ViT-B/16 and ViT-L/14 (224²) at 8/16/32 frames, times the attention core
(fused qkv output -> heads merged, (B·T, N, C), as the output projection reads them) of one
`STDHAttention` layer three ways, interleaved in the same rounds: no temporal heads (plain SDPA, the
image model's attention), two temporal heads (Δt = -1, 1) on the shift path (in-place K/V shift + SDPA;
compiled: gathered K/V + SDPA), and the same heads through the fused kernel (`zeroi2v.kernels`).
Eager and `torch.compile(fullgraph=True)`. Also the kernel's block configurations and its registers
and spills per architecture (built offline with Triton's ptxas). Writes <out>/kernel.md and kernel.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from zeroi2v.fileio import atomic_write_text
from zeroi2v.timing import interleaved_times, paired_ratio

SHAPES = {  # name: (width C, heads H, tokens N) at 224²
    "ViT-B/16": (768, 12, 197),
    "ViT-L/14": (1024, 16, 257),
}
PATHS = ("SDPA, no temporal heads", "shift path (Δt = -1, 1)", "fused kernel (Δt = -1, 1)")
CONFIGS = [
    (64, 64, 4, 2),
    (64, 64, 4, 3),
    (128, 64, 8, 3),
    (128, 64, 4, 2),
    (64, 32, 4, 2),
]  # block_m, block_n, warps, stages


def layers(width: int, heads: int, frames: int, device, dtype) -> dict:
    """The three attention layers of one shape, sharing one set of weights."""
    from timm.models.vision_transformer import Attention

    from zeroi2v.stdha import STDHAttention

    torch.manual_seed(0)
    raw = Attention(width, num_heads=heads, qkv_bias=True).to(device=device, dtype=dtype).eval()
    spatial, shift, fused = (STDHAttention(raw, frames, o) for o in ((), (-1, 1), (-1, 1)))
    shift.fused_kernel, fused.fused_kernel = False, True
    return dict(zip(PATHS, (spatial, shift, fused), strict=True))


def core(attn):
    """qkv (B·T, N, 3C) -> attention output with heads merged (B·T, N, C): what the projection reads."""

    def run(qkv):
        heads = attn.attend_heads(qkv)
        return heads.transpose(1, 2).reshape(qkv.shape[0], qkv.shape[1], -1)

    return run


def repeated(fn, x, calls: int):
    def run():
        for _ in range(calls):
            fn(x)

    return run


def time_shape(name, frames, batch, dtype, rounds, calls, compiled: bool) -> dict:
    width, heads, tokens = SHAPES[name]
    device = torch.device("cuda")
    mods = layers(width, heads, frames, device, dtype)
    qkv = torch.randn(batch * frames, tokens, 3 * width, device=device, dtype=dtype)
    with torch.no_grad():
        assert mods[PATHS[2]].use_kernel(qkv.view(batch * frames, tokens, 3, heads, -1), None, False)
        ref = core(mods[PATHS[1]])(qkv.clone())
        err = (core(mods[PATHS[2]])(qkv.clone()).float() - ref.float()).abs().max().item()
        fns = {p: core(m) for p, m in mods.items()}
        compile_s = {}
        if compiled:
            for p in PATHS:
                fns[p] = torch.compile(fns[p], fullgraph=True)
                start = time.perf_counter()
                fns[p](qkv.clone())
                torch.cuda.synchronize()
                compile_s[p] = time.perf_counter() - start
        # the shift path overwrites its input: each path gets its own copy (same values for all rounds' timing)
        inputs = {p: qkv.clone() for p in PATHS}
        times = interleaved_times({p: repeated(fns[p], inputs[p], calls) for p in PATHS}, rounds, device="cuda")
    ms = {p: 1e3 * statistics.median(t) / calls for p, t in times.items()}
    return dict(
        model=name,
        frames=frames,
        batch=batch,
        mode="compiled" if compiled else "eager",
        ms=ms,
        vs_sdpa={p: paired_ratio(times[p], times[PATHS[0]]) for p in PATHS},
        kernel_vs_shift=paired_ratio(times[PATHS[2]], times[PATHS[1]]),
        max_abs_diff_vs_shift=err,
        compile_s=compile_s,
    )


def time_configs(name, frames, batch, dtype, rounds, calls) -> list[dict]:
    """The kernel alone (eager) at each block configuration, interleaved."""
    from zeroi2v.kernels import source_frames
    from zeroi2v.kernels.stdha_triton import launch

    width, heads, tokens = SHAPES[name]
    qkv = torch.randn(batch * frames, tokens, 3, heads, width // heads, device="cuda", dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    src = source_frames(frames, [-1, 1] + [0] * (heads - 2), "keep", q.device)
    out = torch.empty(batch * frames, tokens, heads, width // heads, device="cuda", dtype=dtype).transpose(1, 2)
    runs = {}
    for bm, bn, w, s in CONFIGS:
        runs[(bm, bn, w, s)] = repeated(
            lambda _, c=(bm, bn, w, s): launch(
                q, k, v, out, src, block_m=c[0], block_n=c[1], num_warps=c[2], num_stages=c[3]
            ),
            None,
            calls,
        )
    times = interleaved_times(runs, rounds, device="cuda")
    return [
        dict(block_m=c[0], block_n=c[1], num_warps=c[2], num_stages=c[3], ms=1e3 * statistics.median(t) / calls)
        for c, t in times.items()
    ]


def registers() -> list[dict]:
    from zeroi2v.kernels.registers import ptxas_usage

    rows = []
    for arch in (80, 90):
        for head_dim in (64, 128):
            try:
                rows.append(dict(arch=arch, head_dim=head_dim, **ptxas_usage(arch=arch, head_dim=head_dim)))
            except Exception as e:  # reported in the section, not fatal: the timings still count
                rows.append(dict(arch=arch, head_dim=head_dim, error=f"{type(e).__name__}: {str(e)[:200]}"))
    return rows


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        "# STDHA fused kernel",
        "",
        f"Generated by `python -m benchmarks.kernel_bench` (never edited by hand) on {env['device']}, "
        f"torch {env['torch']}, Triton {env['triton']}, {env['dtype']}, {env['date']}. Attention core of one layer "
        "(fused qkv output -> heads merged, as the output projection reads them): medians over interleaved rounds; "
        "ratios are paired per round. Shift path = the in-place K/V shift + SDPA (compiled: K/V gathered + SDPA); "
        "kernel = `zeroi2v.kernels.stdha_attention`, no copy of K/V or of the output.",
        "",
    ]
    if result["timings"]:
        lines += [
            "| model | frames × batch | mode | SDPA, no temporal heads (ms) | shift path (ms, × SDPA) "
            "| fused kernel (ms, × SDPA) | kernel ≤ 1.02× SDPA | kernel vs shift | max abs diff |",
            "|---|---|---|---:|---:|---:|---|---:|---:|",
        ]
        for r in result["timings"]:
            ms, vs = r["ms"], r["vs_sdpa"]
            ok = "pass" if vs[PATHS[2]] <= 1.02 else "fail"
            lines.append(
                f"| {r['model']} | {r['frames']} × {r['batch']} | {r['mode']} | {ms[PATHS[0]]:.3f} "
                f"| {ms[PATHS[1]]:.3f} ({vs[PATHS[1]]:.3f}×) | {ms[PATHS[2]]:.3f} ({vs[PATHS[2]]:.3f}×) | {ok} "
                f"| {r['kernel_vs_shift']:.3f}× | {r['max_abs_diff_vs_shift']:.1e} |"
            )
        lines.append("")
    else:
        lines += ["_No timings: run on a CUDA GPU (this run made the register table only)._", ""]
    if result["configs"]:
        c0 = result["configs"][0]
        lines += [
            f"Block configurations of the kernel alone ({result['config_shape']}):",
            "",
            "| block_m × block_n | warps | stages | ms | × default |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {c['block_m']} × {c['block_n']} | {c['num_warps']} | {c['num_stages']} | {c['ms']:.3f} "
            f"| {c['ms'] / c0['ms']:.3f}× |"
            for c in result["configs"]
        ]
        lines.append("")
    lines += [
        "Registers and spills of the default configuration (built offline for each architecture; `ptxas -v`):",
        "",
        "| arch | head size | registers / thread | spill stores (B) | spill loads (B) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["registers"]:
        if "error" in r:
            lines.append(f"| sm_{r['arch']} | {r['head_dim']} | n/a ({r['error']}) | | |")
        else:
            lines.append(
                f"| sm_{r['arch']} | {r['head_dim']} | {r['registers']} | {r['spill_stores']} | {r['spill_loads']} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/bench/gpu", help="folder of kernel.md and kernel.json")
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=10, help="calls per timed run")
    parser.add_argument("--compile-frames", nargs="*", type=int, default=[8], help="frame counts also compiled")
    parser.add_argument("--registers-only", action="store_true", help="only the register table (no GPU needed)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from zeroi2v.kernels import HAS_TRITON

    if not HAS_TRITON:
        print("kernel_bench: Triton is not installed (pip install triton)", file=sys.stderr)
        return 2
    if not args.registers_only and not torch.cuda.is_available():
        print("kernel_bench: needs a CUDA GPU (use --registers-only without one)", file=sys.stderr)
        return 2
    import triton

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    result = dict(
        environment=dict(
            device=torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU",
            torch=torch.__version__,
            triton=triton.__version__,
            dtype=args.dtype,
            date=time.strftime("%Y-%m-%d %H:%M"),
        ),
        timings=[],
        configs=[],
        config_shape="",
        registers=registers(),
    )
    if not args.registers_only:
        for name in args.models:
            for frames in args.frames:
                for compiled in (False, True) if frames in args.compile_frames else (False,):
                    row = time_shape(name, frames, args.batch, dtype, args.rounds, args.calls, compiled)
                    result["timings"].append(row)
                    print(json.dumps(row))
        name, frames = args.models[0], args.frames[0]
        result["configs"] = time_configs(name, frames, args.batch, dtype, args.rounds, args.calls)
        result["config_shape"] = f"{name}, {frames} frames × batch {args.batch}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "kernel.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "kernel.md", markdown(result))
    print(f"wrote {out / 'kernel.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
