"""The Markdown of `zeroi2v bench`: each section (environment, tables, checks, charts) and `docs/benchmarks.md`
assembled from the generated sections found beside it (`SECTIONS`)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from zeroi2v.cost_tables import REFERENCE
from zeroi2v.fileio import atomic_write, atomic_write_text

GPU_COMMAND = (
    "zeroi2v bench --device cuda --dtype bf16 --batch 32 --frames 8 16 32 "
    "--backbone vit_base_patch16_clip_quickgelu_224 vit_large_patch14_clip_quickgelu_224"
)


def environment(args, device) -> dict:
    import timm
    import torchvision

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    try:
        load = f", 1-min load average {os.getloadavg()[0]:.1f} at the end"
    except OSError:
        load = ""
    return {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU threads, {cpu}" + (f", {gpu}" if gpu else "") + load,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "dtype": args.dtype,
        "command": "zeroi2v bench " + " ".join(args.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def env_lines(env) -> list[str]:
    return [
        f"- machine: {env['machine']}",
        f"- versions: torch {env['torch']}, timm {env['timm']}, torchvision "
        f"{env['torchvision']}, Python {env['python']} ({env['torch_threads']} torch threads)",
        f"- device / dtype: {env['device']} / {env['dtype']}",
        f"- command: `{env['command']}`",
        f"- date: {env['date']}",
        "",
    ]


STATUS = {True: "pass", False: "**FAIL**", None: "n/a"}


def checks(inference, stdha, training, device: str = "cpu") -> list[dict]:
    """The paper's zero-extra-cost claims and this project's goals, as measured here.

    `ok` is None (n/a, with the reason in `measured`) where the measurement cannot test the claim:
    speed at toy size (fixed per-call costs dominate), the STDHA speed target off a GPU (it is set for
    GPU attention kernels), training memory of toy models.
    """
    out = []
    for table in inference:
        rows = {r["method"]: r for r in table}
        if "ZeroI2V merged" not in rows:
            continue
        m, first = rows["ZeroI2V merged"], table[0]
        tag = f"{first.get('model', first['backbone'])}, {first['frames']} frames"
        toy = first.get("toy", False)
        expect = first["frames"] * first["embed_dim"]
        speed = f"{m['throughput_vs_plain']:.3f}×"
        flops = 100 * (m["flops_vs_plain"] - 1)
        why_fewer = " (the classifier runs once per clip, the image model's once per frame)" if flops < -1e-3 else ""
        out += [
            {
                "check": f"merged ZeroI2V throughput ≥ 0.98× image model ({tag})",
                "measured": speed
                + (" (toy model: per-call overheads dominate, not a test of the claim)" if toy else ""),
                "ok": None if toy else m["throughput_vs_plain"] >= 0.98,
            },
            {
                "check": f"merged ZeroI2V adds no FLOPs: ≤ image model + 0.1% ({tag})",
                "measured": f"{flops:+.4f}%{why_fewer}",
                "ok": m["flops_vs_plain"] <= 1 + 1e-3,
            },
            {
                "check": f"merged ZeroI2V params = image model + T·D ({tag})",
                "measured": f"{m['extra_params_vs_plain']:+,} (T·D = {expect:,})",
                "ok": m["extra_params_vs_plain"] == expect,
            },
        ]
    for s in stdha:
        ratio = next(r["time_vs_ours"] for r in s["core_rows"] if r["implementation"] == REFERENCE)
        whole = next(r["time_vs_ours"] for r in s["rows"] if r["implementation"] == REFERENCE)
        on_gpu = s.get("device", device).startswith("cuda")
        note = "" if on_gpu else "; the 1.5× target is set for GPU attention kernels: n/a on CPU"
        out.append(
            {
                "check": f"STDHA attention ≥ 1.5× faster than reference-style ({s.get('model', s['backbone'])}, "
                f"{s['frames']} frames)",
                "measured": f"{ratio:.2f}× (qkv → attention output; {whole:.2f}× for the whole layer with its shared "
                f"projections; outputs equal, max abs diff {s['core_max_abs_error']:.1e}){note}",
                "ok": (ratio >= 1.5) if on_gpu else None,
            }
        )
    for t in training:
        zero = next(r for r in t["rows"] if r["configuration"].startswith("ZeroI2V (frozen"))
        if zero["memory_vs_full"] is not None:
            toy = t.get("toy", False)
            out.append(
                {
                    "check": f"ZeroI2V training peak memory ≤ 0.6× full fine-tuning ({t.get('model', t['backbone'])}, "
                    f"batch {t['batch']})",
                    "measured": f"{zero['memory_vs_full']:.2f}×"
                    + (" (toy model: not a test of the target)" if toy else ""),
                    "ok": None if toy else zero["memory_vs_full"] <= 0.6,
                }
            )
    return out


def markdown(env, inference, stdha, training, check_rows, charts_, chart_dir: str = "bench") -> str:
    title = "Cost and speed" if inference or stdha else "Training cost"
    lines = [
        f"## {title}",
        "",
        "Generated by `zeroi2v bench` (never edited by hand). Randomly initialised backbones (cost does not "
        "depend on the weights). Timings are medians of interleaved rounds (every model once per round) in one "
        "process; compare ratios within a table, not across machines.",
        "",
        *env_lines(env),
    ]
    if env["device"] == "cpu":
        lines += [
            "No GPU was available when these tables were made: all numbers are CPU numbers. On a GPU run:",
            "",
            f"```bash\n{GPU_COMMAND}\n```",
            "",
        ]
    if check_rows:
        lines += [
            "### Checks",
            "",
            "n/a: the measurement cannot test the claim here (reason in the row); the number is still shown.",
            "",
            "| check | measured | |",
            "|---|---|---|",
        ]
        lines += [f"| {c['check']} | {c['measured']} | {STATUS[c['ok']]} |" for c in check_rows]
        lines.append("")
    for table in inference:
        lines += inference_lines(table)
    if inference and env["device"] == "cpu":
        lines += [
            "Peak memory of inference is not reported on CPU: without a caching allocator to query, an RSS delta "
            "of one forward pass among several models in one process is not meaningful. "
            "`torch.cuda.max_memory_allocated` fills the column on a GPU.",
            "",
        ]
    for s in stdha:
        lines += stdha_lines(s)
    for t in training:
        lines += training_lines(t, env["device"])
    lines += [f"![{n}]({chart_dir}/{n})" for n in charts_]
    return "\n".join(lines) + "\n"


def inference_lines(table: list[dict]) -> list[str]:
    lines = []
    first = table[0]
    lines += [
        f"### Inference: {first.get('model', first['backbone'])}, {first['frames']} frames, batch {first['batch']}",
        "",
        "The image model runs the T frames of each clip as a batch of images (the clips rearranged as ZeroI2V "
        "rearranges them); ZeroI2V merged is the deployed model "
        "(adapters folded, STDHA only re-indexes K/V). FLOPs from `torch.utils.flop_counter` "
        "(a multiply-add = 2), attention included. Throughput vs image model: the median over rounds of the "
        "image model's time divided by this model's time in the same round (paired, so load drifts "
        "cancel); clips/s and latency: medians of the rounds.",
        "",
        "| model | params | extra params vs image model | GFLOPs / clip | FLOPs vs image model | clips/s | "
        "throughput vs image model | latency (ms) | peak memory (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        mem = f"{r['peak_mem_mb']:.0f}" if r["peak_mem_mb"] is not None else "n/a (CPU)"
        lines.append(
            f"| {r['method']} | {r['params']:,} | {r['extra_params_vs_plain']:+,} | {r['gflops_per_clip']:.2f} | "
            f"{r['flops_vs_plain']:.4f}× | {r['clips_per_s']:.2f} | {r['throughput_vs_plain']:.3f}× | "
            f"{r['latency_ms']:.1f} | {mem} |"
        )
    lines.append("")
    return lines


def stdha_lines(s: dict) -> list[str]:
    lines = []
    lines += [
        f"### STDHA attention: {s.get('model', s['backbone'])}, {s['frames']} frames × batch {s['batch']}, "
        f"{s['tokens']} tokens",
        "",
        "One attention layer, heads 0 and 1 temporal (Δt = -1, +1). Reference-style = the paper's MMAction2 "
        "code path: clone K and V, overwrite the shifted channel folds, `softmax(q·kᵀ·scale)·v` by hand.",
        "",
        f"Outputs equal: max abs difference {s['max_abs_error']:.2e} for the layer, "
        f"{s['core_max_abs_error']:.2e} for the attention core (asserted). The core (qkv projection output → "
        "attention output) is where the implementations differ; the whole layer adds the qkv and output projections, "
        "identical in all three."
        + (" Time vs ours: median of per-round paired ratios." if s["rows"][0].get("paired") else ""),
        "",
        "| implementation | attention core: ms / call | time vs ours | whole layer: ms / call | time vs ours |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c['implementation']} | {c['ms']:.2f} | {c['time_vs_ours']:.2f}× | {r['ms']:.2f} | "
        f"{r['time_vs_ours']:.2f}× |"
        for c, r in zip(s["core_rows"], s["rows"], strict=False)
    ]
    lines.append("")
    return lines


def training_lines(t: dict, device: str) -> list[str]:
    lines = []
    lines += [
        f"### Training step: {t.get('model', t['backbone'])}, {t['frames']} frames, batch {t['batch']} (AdamW)",
        "",
        "Each row in a fresh process. Peak memory = weights + optimizer state + the step's peak of "
        "activations and gradients, read from PyTorch's allocator (`torch.cuda.max_memory_allocated` on a "
        "GPU; on a CPU the profiler's record of every allocation and free). Median step time of the steps "
        "after the first.",
        "",
        "| configuration | trainable params | step (s) | step vs full FT | peak memory (MiB) | memory vs full FT |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in t["rows"]:
        mvf = f"{r['memory_vs_full']:.2f}×" if r["memory_vs_full"] is not None else "n/a"
        lines.append(
            f"| {r['configuration']} | {r['trainable']:,} | {r['step_s']:.2f} | {r['time_vs_full']:.2f}× | "
            f"{r['peak_mem_mb']:.0f} | {mvf} |"
        )
    lines.append("")
    if device == "cpu":
        lines += [
            "On CPU, bf16 speed depends on the processor's bf16 support (without it the kernels are "
            "emulated and can be slower than fp32; its row times a single step); its memory effect holds "
            "everywhere. GPU numbers: run the command above.",
            "",
        ]
    return lines


def compile_markdown(env, tables) -> str:
    lines = [
        "## torch.compile",
        "",
        "Generated by `zeroi2v bench --compile` (never edited by hand). The same model eager and through "
        "`torch.compile(model, fullgraph=True)` (Inductor, default mode; one graph: a graph break would fail), "
        "timed in interleaved rounds; speed-up = median over rounds of eager time / compiled time in the same "
        "round. Compile time = the first compiled call minus a compiled call. Inference runs the merged "
        "(deployed) model and the plain image model on the same clips' frames, all four in the same rounds; "
        "the training step is the unmerged model's forward, backward (with the training-memory savers) and "
        "AdamW step, from two identical copies. Max abs difference: compiled vs eager outputs "
        "(inference logits; the first step's loss).",
        "",
        *env_lines(env),
    ]
    if env["device"] == "cpu":
        lines += [
            "CPU numbers at a small size (2 shared cores here); the GPU check (`benchmarks/gpu_check.sh`) "
            "fills the GPU ones.",
            "",
        ]
    for t in tables:
        lines += [
            f"### {t['model']}, {t['frames']} frames, {t['device']}, {t['dtype']}",
            "",
            "| workload | batch | eager (ms) | compiled (ms) | speed-up | eager clips/s | compiled clips/s | "
            "compile time (s) | max abs difference |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['part']} | {r['batch']} | {r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | **{r['speedup']:.2f}×** | "
            f"{r['eager_clips_per_s']:.2f} | {r['compiled_clips_per_s']:.2f} | {r['compile_s']:.0f} | "
            f"{r['max_abs_difference']:.1e} |"
            for r in t["rows"]
        ]
        lines.append("")
        ratio = next((r["vs_image_model"] for r in t["rows"] if "vs_image_model" in r), None)
        if ratio:  # sections generated before this measurement existed have no such row
            lines += [
                f"Merged ZeroI2V throughput vs the plain image model in the same rounds: eager "
                f"**{ratio['eager']:.3f}×**, compiled (both compiled) **{ratio['compiled']:.3f}×**.",
                "",
            ]
    return "\n".join(lines) + "\n"


def charts(inference, training, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, name):
        fig.tight_layout()
        atomic_write(out_dir / name, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
        plt.close(fig)
        names.append(name)

    names = []
    for table in inference:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3))
        labels = [r["method"] for r in table]
        axes[0].barh(labels, [r["flops_vs_plain"] for r in table], color="tab:blue")
        axes[0].set_title("FLOPs vs image model")
        axes[1].barh(labels, [r["throughput_vs_plain"] for r in table], color="tab:green")
        axes[1].set_title("throughput vs image model")
        for ax in axes:
            ax.axvline(1.0, color="k", lw=0.8)
            ax.invert_yaxis()
        axes[1].set_yticks([])
        fig.suptitle(f"{table[0].get('model', table[0]['backbone'])}, {table[0]['frames']} frames")
        save(fig, f"inference_{table[0]['backbone']}_{table[0]['frames']}.png")
    for t in training:
        if any(r["memory_vs_full"] is None for r in t["rows"]):
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 3))
        labels = [r["configuration"] for r in t["rows"]]
        axes[0].barh(labels, [r["memory_vs_full"] for r in t["rows"]], color="tab:purple")
        axes[0].set_title("training peak memory vs full fine-tuning")
        axes[1].barh(labels, [r["time_vs_full"] for r in t["rows"]], color="tab:orange")
        axes[1].set_title("step time vs full fine-tuning")
        for ax in axes:
            ax.axvline(1.0, color="k", lw=0.8)
            ax.invert_yaxis()
        axes[1].set_yticks([])
        fig.suptitle(f"training, {t.get('model', t['backbone'])}, {t['frames']} frames, batch {t['batch']}")
        save(fig, f"training_{t['backbone']}_{t['frames']}.png")
    return names


# relative to the doc's folder; bench/gpu/gpu.md is written by benchmarks/gpu_check.sh
SECTIONS = (
    "bench/cost.md",
    "bench/compile.md",
    "bench/loader.md",
    "bench/gpu/gpu.md",
    "bench/accuracy.md",
    "benchmarks_decode.md",
)


ASSEMBLED_MARK = "Assembled from generated sections (never edited by hand)"  # how bench knows its own file


def assemble(out: str | os.PathLike) -> str:
    """Write `out` (docs/benchmarks.md) from the generated sections beside it; missing ones are listed."""
    out = Path(out)
    parts = [
        "# Benchmarks",
        "",
        f"{ASSEMBLED_MARK}: cost and speed "
        "(`zeroi2v bench`), `torch.compile` (`zeroi2v bench --compile`), whether the GPU waits for the loader "
        "(`zeroi2v bench --loader`), the GPU check (`benchmarks/gpu_check.sh`), accuracy at equal budget "
        "(`python -m benchmarks.accuracy`), video decoding (`python -m benchmarks.decode`). Rerun a script to "
        "refresh its section.",
        "",
    ]
    missing = []
    for rel in SECTIONS:
        path = out.parent / rel
        if not path.is_file():
            missing.append(rel)
            continue
        text = path.read_text().strip()
        if text.startswith("# "):  # a top-level title becomes a section
            text = "#" + text
        parts += [text, ""]
    if missing:
        parts.append(f"_Not generated yet: {', '.join(missing)}._\n")
    text = "\n".join(parts)
    atomic_write_text(out, text)
    return text
