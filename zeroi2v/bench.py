"""`zeroi2v bench`: cost and speed tables, measured side by side in one process.

    zeroi2v bench                                   # CPU: ViT-S/16 and ViT-B/16 at 8 frames
    zeroi2v bench --device cuda --dtype bf16 --batch 32 --frames 8 16 32 \\
        --backbone vit_base_patch16_clip_quickgelu_224 vit_large_patch14_clip_quickgelu_224

Tables: inference (params, FLOPs, clips/s, latency, peak memory) of the plain timm image model on T
frames, ZeroI2V merged and unmerged, and the peer baselines (AIM, ST-Adapter, joint attention);
STDHA vs the same attention without temporal heads vs a reference-style implementation (full K/V
clone + manual softmax, as the paper's code); training step time and peak memory. Timings are
medians of interleaved rounds (every model once per round), so background load hits all alike;
compare ratios, and only within one run.

Output: `<out dir>/bench/cost.{md,json}` + PNG charts; `<out>` (docs/benchmarks.md) is then assembled
from the sections found in `<out dir>`: this one, `bench/accuracy.md` (benchmarks/accuracy.py) and
`benchmarks_decode.md` (benchmarks/decode.py). Generated, never typed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from zeroi2v.fileio import atomic_write, atomic_write_json, atomic_write_text

DEFAULT_BACKBONES = ["vit_small_patch16_224", "vit_base_patch16_clip_quickgelu_224"]
TINY = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 96, "num_heads": 6}
METHODS = ["plain image model", "ZeroI2V merged", "ZeroI2V unmerged", "AIM", "ST-Adapter", "joint attention"]


def build(method: str, backbone: str, frames: int, timm_kwargs: dict, num_classes: int = 400):
    import timm

    from zeroi2v.baselines import create_baseline
    from zeroi2v.reparam import reparameterize

    torch.manual_seed(0)
    if method == "plain image model":
        return timm.create_model(backbone, pretrained=False, num_classes=num_classes, **timm_kwargs)
    kw = dict(backbone=backbone, num_frames=frames, num_classes=num_classes, head_offsets=(-1, 1), **timm_kwargs)
    name = {"ZeroI2V merged": "zeroi2v", "ZeroI2V unmerged": "zeroi2v", "AIM": "aim", "ST-Adapter": "st_adapter",
            "joint attention": "joint"}[method]
    model = create_baseline(name, **kw)
    if method == "ZeroI2V merged":
        with torch.no_grad():  # trained-like adapters, so the merged weights are not the image model's
            for n, p in model.named_parameters():
                if "adapter" in n:
                    p.normal_(0, 0.02)
        model = reparameterize(model, atol=1e-3)
    return model


def clip_for(model, method, batch, frames, img, device, dtype):
    """Every model gets the decoded clips (B, 3, T, H, W); the image model runs their frames as images."""
    return torch.randn(batch, 3, frames, img, img, device=device, dtype=dtype)


def run(model, method, clip):
    if method == "plain image model":  # frames as a batch of images, the same rearrangement ZeroI2V makes
        B, C, T, H, W = clip.shape
        return model(clip.transpose(1, 2).reshape(B * T, C, H, W))
    return model(clip)


def rotated(names: list, round_: int) -> list:
    """The run order of one interleaved round, shifted by one each round (no position bias)."""
    k = round_ % len(names)
    return names[k:] + names[:k]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def inference_table(backbone, frames, batch, device, dtype, repeats, timm_kwargs) -> list[dict]:
    from zeroi2v.model import count_flops, count_params

    models, inputs, rows = {}, {}, {}
    for method in METHODS:
        model = build(method, backbone, frames, timm_kwargs).eval()
        params = count_params(model)
        flops = count_flops(model, num_frames=frames) if method == "plain image model" else count_flops(model)
        models[method] = model.to(device=device, dtype=dtype)
        img = (timm_kwargs.get("img_size") or model_img(model))
        inputs[method] = clip_for(model, method, batch, frames, img, device, dtype)
        rows[method] = {"method": method, "params": params, "gflops_per_clip": flops / 1e9, "times": [], "peak_mem_mb": None}
    with torch.no_grad():
        for method in METHODS:  # warm-up
            run(models[method], method, inputs[method])
        for round_ in range(repeats):  # interleaved rounds
            for method in rotated(METHODS, round_):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    before = torch.cuda.memory_allocated()
                sync(device)
                start = time.perf_counter()
                run(models[method], method, inputs[method])
                sync(device)
                rows[method]["times"].append(time.perf_counter() - start)
                if device.type == "cuda":  # this model's weights + the forward's peak (all models stay resident)
                    weights = sum(p.numel() * p.element_size() for p in models[method].parameters())
                    peak = (torch.cuda.max_memory_allocated() - before + weights) / 2**20
                    rows[method]["peak_mem_mb"] = max(peak, rows[method]["peak_mem_mb"] or 0.0)
    plain = rows["plain image model"]
    plain_times = list(plain["times"])
    out = []
    for method in METHODS:
        r = rows[method]
        # paired: this model's time against the image model's in the same round, median over rounds
        r["throughput_vs_plain"] = statistics.median(p / t for p, t in zip(plain_times, r["times"]))
        median = statistics.median(r.pop("times"))
        r.update(latency_ms=1000 * median, clips_per_s=batch / median, backbone=backbone, frames=frames, batch=batch,
                 embed_dim=models["plain image model"].embed_dim)
        out.append(r)
    for r in out:
        r["flops_vs_plain"] = r["gflops_per_clip"] / plain["gflops_per_clip"]
        r["extra_params_vs_plain"] = r["params"] - plain["params"]
    return out


def model_img(model):
    vit = getattr(model, "backbone", model)
    return vit.patch_embed.img_size[0]


# --- STDHA vs a reference-style implementation ----------------------------------------------------
# Restated from the reference's STDHA (an `nn.MultiheadAttention` subclass on CLIP's (tokens, batch, width)
# layout): packed in-projection made contiguous per q/k/v, K and V cloned and the shifted channel folds
# overwritten, (batch·heads, tokens, head_dim) views, softmax attention with two bmm's, output re-laid out.
def _reference_shift(t, num_frames, folds):
    """(N, B·T, C) -> the same with channel folds [c0, c1) read from frame t+Δt (clone, then overwrite)."""
    n, bt, c = t.shape
    t = t.view(n, bt // num_frames, num_frames, c)
    out = t.clone()
    for c0, c1, dt in folds:
        if dt < 0:
            out[:, :, -dt:, c0:c1] = t[:, :, :dt, c0:c1]
        else:
            out[:, :, :-dt, c0:c1] = t[:, :, dt:, c0:c1]
    return out.view(n, bt, c)


def _reference_attention_core(q, k, v, num_heads, num_frames, folds):
    """q, k, v (N, B·T, C) -> attention output (N·B·T, C), the reference's way."""
    n, bt, c = q.shape
    d = c // num_heads
    k, v = _reference_shift(k, num_frames, folds), _reference_shift(v, num_frames, folds)
    q, k, v = (t.contiguous().view(n, bt * num_heads, d).transpose(0, 1) for t in (q, k, v))
    weights = torch.bmm(q / d ** 0.5, k.transpose(-2, -1)).softmax(dim=-1)
    return torch.bmm(weights, v).transpose(0, 1).contiguous().view(n * bt, c)


def reference_style_attention(attn, x_lnd, num_frames, folds):
    """One attention layer as the reference computes it; input and output (N, B·T, C) (CLIP's layout)."""
    n, bt, c = x_lnd.shape
    qkv = attn.qkv(x_lnd).unflatten(-1, (3, c)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
    out = _reference_attention_core(qkv[0], qkv[1], qkv[2], attn.num_heads, num_frames, folds)
    return attn.proj(out).view(n, bt, c)


def stdha_table(backbone, frames, batch, device, dtype, repeats, timm_kwargs) -> dict:
    import timm

    from zeroi2v.stdha import STDHAttention

    vit = timm.create_model(backbone, pretrained=False, depth=1, **{k: v for k, v in timm_kwargs.items() if k != "depth"})
    raw = vit.blocks[0].attn
    d, heads = raw.head_dim, raw.num_heads
    ours = STDHAttention(raw, frames, (-1, 1)).to(device=device, dtype=dtype).eval()
    spatial = STDHAttention(raw, frames, ()).to(device=device, dtype=dtype).eval()
    folds = [(0, d, -1), (d, 2 * d, 1)]
    tokens = vit.patch_embed.num_patches + 1
    x = torch.randn(batch * frames, tokens, vit.embed_dim, device=device, dtype=dtype)
    x_lnd = x.transpose(0, 1).contiguous()  # the reference's layout (transposed once per network, not per layer)
    layer = {"STDHA (ours: SDPA, temporal heads gathered)": lambda: ours(x),
             "same attention, no temporal heads": lambda: spatial(x),
             "reference-style (clone K/V + manual softmax)":
                 lambda: reference_style_attention(ours, x_lnd, frames, folds).transpose(0, 1)}
    with torch.no_grad():  # the attention core: qkv projection output -> attention output (B·T, N, C)
        qkv = ours.qkv(x)   # ours shifts its temporal K/V channels in place: each call gets a fresh copy
        qkv_copies = [qkv.clone() for _ in range(repeats * 3 + 2)]
        ql, kl, vl = (t.permute(2, 0, 1, 3).reshape(tokens, x.shape[0], heads * d).contiguous()
                      for t in qkv.reshape(x.shape[0], tokens, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0))
    core = {"STDHA (ours: SDPA, temporal heads gathered)": lambda: ours.attend(qkv_copies.pop()),
            "same attention, no temporal heads": lambda: spatial.attend(qkv),
            "reference-style (clone K/V + manual softmax)": lambda: _reference_attention_core(
                ql, kl, vl, heads, frames, folds).view(tokens, x.shape[0], heads * d).transpose(0, 1)}
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    result = {"backbone": backbone, "frames": frames, "batch": batch, "tokens": tokens}
    for part, runs in (("layer", layer), ("core", core)):
        with torch.no_grad():
            err = (runs["STDHA (ours: SDPA, temporal heads gathered)"]() - runs["reference-style (clone K/V + manual softmax)"]()
                   ).abs().max().item()
        if not err <= tol:
            raise RuntimeError(f"STDHA differs from the reference-style implementation: max abs error {err:.2e} > {tol}")
        med = _interleaved_ms(runs, repeats * 3, device)
        ours_ms = med["STDHA (ours: SDPA, temporal heads gathered)"]
        result["max_abs_error" if part == "layer" else "core_max_abs_error"] = err
        result["rows" if part == "layer" else "core_rows"] = [
            {"implementation": k, "ms": v, "time_vs_ours": v / ours_ms} for k, v in med.items()]
    return result


def _interleaved_ms(runs: dict, rounds: int, device) -> dict:
    """Median milliseconds per call, every function once per round."""
    times = {k: [] for k in runs}
    with torch.no_grad():
        for f in runs.values():
            f()
        for round_ in range(rounds):
            for name in rotated(list(runs), round_):
                f = runs[name]
                sync(device)
                start = time.perf_counter()
                f()
                sync(device)
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


# --- training: each configuration in a fresh process, for an honest peak memory -------------------
TRAIN_CONFIGS = [("ZeroI2V (frozen backbone)", "zeroi2v", True, "none", False),
                 ("full fine-tuning", "zeroi2v", False, "none", False),
                 ("AIM", "aim", True, "none", False),
                 ("ST-Adapter", "st_adapter", True, "none", False),
                 ("joint attention (adapters)", "joint", True, "none", False),
                 ("ZeroI2V + bf16 autocast", "zeroi2v", True, "bf16", False),
                 ("ZeroI2V + activation checkpointing", "zeroi2v", True, "none", True),
                 ("full fine-tuning + activation checkpointing", "zeroi2v", False, "none", True)]


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def cpu_peak_bytes(step) -> int:
    """Peak of live tensor bytes allocated by `step()` above what was live before (CPU allocator).

    The CPU counterpart of `torch.cuda.max_memory_allocated`: the profiler records every allocation and
    free of PyTorch's CPU allocator; their running sum peaks where activations + gradients peak.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def train_step_child(spec: dict) -> dict:
    """Runs in a subprocess: AdamW steps; median step time and the training peak memory.

    Peak memory = weights + optimizer state + the step's peak of activations and gradients, from the
    allocator (`torch.cuda.max_memory_allocated` on a GPU, the profiler's allocation record on a CPU).
    """
    from zeroi2v.baselines import create_baseline
    from zeroi2v.model import param_groups

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    kwargs = dict(spec.get("model_kwargs", {}))
    model = create_baseline(spec["method"], backbone=spec["backbone"], num_frames=spec["frames"], num_classes=400,
                            head_offsets=kwargs.pop("head_offsets", (-1, 1)), freeze=spec["freeze"], **kwargs,
                            **spec["timm_kwargs"]).to(device)
    model.set_grad_checkpointing(spec["checkpointing"])
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4)
    img = spec["timm_kwargs"].get("img_size") or model_img(model)
    x = torch.randn(spec["batch"], 3, spec["frames"], img, img, device=device)
    y = torch.randint(0, 400, (spec["batch"],), device=device)

    def step():
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if spec["amp"] == "bf16" else torch.autocast(device.type, enabled=False)
        with ctx:
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    for _ in range(spec["steps"]):  # the first step also creates the optimizer state
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    state = [t for s in opt.state.values() for t in s.values()]
    resident = tensor_bytes(list(model.parameters()) + list(model.buffers()) + state + [x, y])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        sync(device)
        peak = resident + torch.cuda.max_memory_allocated() - before
    else:
        peak = resident + cpu_peak_bytes(step)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"step_s": statistics.median(times[1:] or times), "peak_mem_mb": peak / 2**20,
            "resident_mb": resident / 2**20, "trainable": trainable}


def train_table(backbone, frames, batch, device, steps, timm_kwargs) -> list[dict]:
    rows = []
    for name, method, freeze, amp, ckpt in TRAIN_CONFIGS:
        slow = amp == "bf16" and device.type == "cpu"  # emulated without bf16 hardware: minutes per step
        spec = dict(method=method, freeze=freeze, amp=amp, checkpointing=ckpt, backbone=backbone, frames=frames,
                    batch=batch, device=str(device), steps=1 if slow else steps, timm_kwargs=timm_kwargs)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.run([sys.executable, "-m", "zeroi2v.bench", "--child", json.dumps(spec)],
                              capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"training benchmark {name} failed: {proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"configuration": name, **result})
    full = next(r for r in rows if r["configuration"] == "full fine-tuning")
    for r in rows:
        r["memory_vs_full"] = r["peak_mem_mb"] / full["peak_mem_mb"] if full["peak_mem_mb"] > 0 else None
        r["time_vs_full"] = r["step_s"] / full["step_s"]
    return rows


# --- report ----------------------------------------------------------------------------------------
GPU_COMMAND = ("zeroi2v bench --device cuda --dtype bf16 --batch 32 --frames 8 16 32 "
               "--backbone vit_base_patch16_clip_quickgelu_224 vit_large_patch14_clip_quickgelu_224")


def environment(args, device) -> dict:
    import timm
    import torchvision
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    try:
        load = f", 1-min load average {os.getloadavg()[0]:.1f} at the end"
    except OSError:
        load = ""
    return {"machine": f"{platform.platform()}, {os.cpu_count()} CPU threads, {cpu}" + (f", {gpu}" if gpu else "") + load,
            "torch": torch.__version__, "timm": timm.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "torch_threads": torch.get_num_threads(), "device": str(device),
            "dtype": args.dtype, "command": "zeroi2v bench " + " ".join(args.argv), "date": time.strftime("%Y-%m-%d %H:%M")}


def checks(inference, stdha, training) -> list[dict]:
    """The paper's zero-extra-cost claims and this project's goals, as measured here."""
    out = []
    for table in inference:
        rows = {r["method"]: r for r in table}
        m, tag = rows["ZeroI2V merged"], f"{table[0]['backbone']}, {table[0]['frames']} frames"
        expect = table[0]["frames"] * table[0]["embed_dim"]
        out += [
            {"check": f"merged ZeroI2V throughput ≥ 0.98× image model ({tag})",
             "measured": f"{m['throughput_vs_plain']:.3f}×", "ok": m["throughput_vs_plain"] >= 0.98},
            {"check": f"merged ZeroI2V FLOPs = image model within 0.1% ({tag})",
             "measured": f"{100 * (m['flops_vs_plain'] - 1):+.4f}%", "ok": abs(m["flops_vs_plain"] - 1) <= 1e-3},
            {"check": f"merged ZeroI2V params = image model + T·D ({tag})",
             "measured": f"{m['extra_params_vs_plain']:+,} (T·D = {expect:,})", "ok": m["extra_params_vs_plain"] == expect},
        ]
    for s in stdha:
        ratio = next(r["time_vs_ours"] for r in s["core_rows"] if r["implementation"].startswith("reference"))
        whole = next(r["time_vs_ours"] for r in s["rows"] if r["implementation"].startswith("reference"))
        out.append({"check": f"STDHA attention ≥ 1.5× faster than reference-style ({s['backbone']}, {s['frames']} frames)",
                    "measured": f"{ratio:.2f}× (qkv → attention output; {whole:.2f}× for the whole layer with its shared "
                                f"projections; outputs equal, max abs diff {s['core_max_abs_error']:.1e})",
                    "ok": ratio >= 1.5})
    for t in training:
        zero = next(r for r in t["rows"] if r["configuration"].startswith("ZeroI2V (frozen"))
        if zero["memory_vs_full"] is not None:
            out.append({"check": f"ZeroI2V training peak memory ≤ 0.6× full fine-tuning ({t['backbone']}, batch {t['batch']})",
                        "measured": f"{zero['memory_vs_full']:.2f}×", "ok": zero["memory_vs_full"] <= 0.6})
    return out


def markdown(env, inference, stdha, training, check_rows, charts_) -> str:
    lines = ["## Cost and speed", "",
             "Generated by `zeroi2v bench` (never edited by hand). Randomly initialised backbones (cost does not "
             "depend on the weights). Timings are medians of interleaved rounds (every model once per round) in one "
             "process; compare ratios within a table, not across machines.", "",
             f"- machine: {env['machine']}", f"- versions: torch {env['torch']}, timm {env['timm']}, torchvision "
             f"{env['torchvision']}, Python {env['python']} ({env['torch_threads']} torch threads)",
             f"- device / dtype: {env['device']} / {env['dtype']}",
             f"- command: `{env['command']}`", f"- date: {env['date']}", ""]
    if env["device"] == "cpu":
        lines += ["No GPU was available when these tables were made: all numbers are CPU numbers. On a GPU run:", "",
                  f"```bash\n{GPU_COMMAND}\n```", ""]
    if check_rows:
        lines += ["### Checks", "", "| check | measured | |", "|---|---|---|"]
        lines += [f"| {c['check']} | {c['measured']} | {'pass' if c['ok'] else '**FAIL**'} |" for c in check_rows]
        lines.append("")
    for table in inference:
        first = table[0]
        lines += [f"### Inference: {first['backbone']}, {first['frames']} frames, batch {first['batch']}", "",
                  "The image model runs the T frames of each clip as a batch of images (the clips rearranged as ZeroI2V "
                  "rearranges them); ZeroI2V merged is the deployed model "
                  "(adapters folded, STDHA only re-indexes K/V). FLOPs from `torch.utils.flop_counter` "
                  "(a multiply-add = 2), attention included. Throughput vs image model: the median over rounds of the "
                  "image model's time divided by this model's time in the same round (paired, so load drifts "
                  "cancel); clips/s and latency: medians of the rounds.", "",
                  "| model | params | extra params vs image model | GFLOPs / clip | FLOPs vs image model | clips/s | "
                  "throughput vs image model | latency (ms) | peak memory (MiB) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in table:
            mem = f"{r['peak_mem_mb']:.0f}" if r["peak_mem_mb"] is not None else "n/a (CPU)"
            lines.append(f"| {r['method']} | {r['params']:,} | {r['extra_params_vs_plain']:+,} | {r['gflops_per_clip']:.2f} | "
                         f"{r['flops_vs_plain']:.4f}× | {r['clips_per_s']:.2f} | {r['throughput_vs_plain']:.3f}× | "
                         f"{r['latency_ms']:.1f} | {mem} |")
        lines.append("")
    if inference and env["device"] == "cpu":
        lines += ["Peak memory of inference is not reported on CPU: without a caching allocator to query, an RSS delta "
                  "of one forward pass among several models in one process is not meaningful. "
                  "`torch.cuda.max_memory_allocated` fills the column on a GPU.", ""]
    for s in stdha:
        lines += [f"### STDHA attention: {s['backbone']}, {s['frames']} frames × batch {s['batch']}, {s['tokens']} tokens", "",
                  "One attention layer, heads 0 and 1 temporal (Δt = -1, +1). Reference-style = the paper's MMAction2 "
                  "code path: clone K and V, overwrite the shifted channel folds, `softmax(q·kᵀ·scale)·v` by hand.", "",
                  f"Outputs equal: max abs difference {s['max_abs_error']:.2e} for the layer, "
                  f"{s['core_max_abs_error']:.2e} for the attention core (asserted). The core (qkv projection output → attention "
                  "output) is where the implementations differ; the whole layer adds the qkv and output projections, "
                  "identical in all three and dominant on a CPU.", "",
                  "| implementation | attention core: ms / call | time vs ours | whole layer: ms / call | time vs ours |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {c['implementation']} | {c['ms']:.2f} | {c['time_vs_ours']:.2f}× | {r['ms']:.2f} | "
                  f"{r['time_vs_ours']:.2f}× |" for c, r in zip(s["core_rows"], s["rows"])]
        lines.append("")
    for t in training:
        lines += [f"### Training step: {t['backbone']}, {t['frames']} frames, batch {t['batch']} (AdamW)", "",
                  "Each row in a fresh process. Peak memory = weights + optimizer state + the step's peak of "
                  "activations and gradients, read from PyTorch's allocator (`torch.cuda.max_memory_allocated` on a "
                  "GPU; on a CPU the profiler's record of every allocation and free). Median step time of the steps "
                  "after the first.", "",
                  "| configuration | trainable params | step (s) | step vs full FT | peak memory (MiB) | memory vs full FT |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in t["rows"]:
            mvf = f"{r['memory_vs_full']:.2f}×" if r["memory_vs_full"] is not None else "n/a"
            lines.append(f"| {r['configuration']} | {r['trainable']:,} | {r['step_s']:.2f} | {r['time_vs_full']:.2f}× | "
                         f"{r['peak_mem_mb']:.0f} | {mvf} |")
        lines.append("")
        if env["device"] == "cpu":
            lines += ["On CPU, bf16 speed depends on the processor's bf16 support (without it the kernels are "
                      "emulated and can be slower than fp32; its row times a single step); its memory effect holds "
                      "everywhere. GPU numbers: run the command above.", ""]
    lines += [f"![{n}](bench/{n})" for n in charts_]
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
        fig.suptitle(f"{table[0]['backbone']}, {table[0]['frames']} frames")
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
        fig.suptitle(f"training, {t['backbone']}, {t['frames']} frames, batch {t['batch']}")
        save(fig, f"training_{t['backbone']}_{t['frames']}.png")
    return names


SECTIONS = ("bench/cost.md", "bench/accuracy.md", "benchmarks_decode.md")  # relative to the doc's folder


def assemble(out: str | os.PathLike) -> str:
    """Write `out` (docs/benchmarks.md) from the generated sections beside it; missing ones are listed."""
    out = Path(out)
    parts = ["# Benchmarks", "", "Assembled from generated sections (never edited by hand): cost and speed "
             "(`zeroi2v bench`), accuracy at equal budget (`python benchmarks/accuracy.py`), video decoding "
             "(`python benchmarks/decode.py`). Rerun a script to refresh its section.", ""]
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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        print(json.dumps(train_step_child(json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(prog="zeroi2v bench", description="Cost and speed tables, side by side.")
    parser.add_argument("--backbone", nargs="+", default=None, help=f"timm names (default: {' '.join(DEFAULT_BACKBONES)})")
    parser.add_argument("--frames", nargs="+", type=int, default=[8])
    parser.add_argument("--batch", type=int, default=1, help="clips per forward pass in the inference/STDHA tables")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="inference/STDHA dtype")
    parser.add_argument("--what", nargs="+", choices=["inference", "stdha", "train", "all"], default=["all"])
    parser.add_argument("--repeats", type=int, default=11, help="interleaved timing rounds (median)")
    parser.add_argument("--train-batch", type=int, default=None, help="batch of the training table (default max(2, --batch))")
    parser.add_argument("--train-backbone", default=None, help="backbone of the training table (default: the last --backbone)")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--out", default="docs/benchmarks.md",
                        help="assembled Markdown file; this run's section, JSON and PNGs go beside it in bench/")
    parser.add_argument("--tiny", action="store_true", help="toy-size models (smoke test)")
    parser.add_argument("--render", action="store_true",
                        help="only rebuild the Markdown from the JSON of the last run (<out dir>/bench/cost.json)")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.render:
        return render(Path(args.out))
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    backbones = args.backbone or (["vit_base_patch16_clip_quickgelu_224"] if args.tiny else DEFAULT_BACKBONES)
    timm_kwargs = TINY if args.tiny else {}
    what = {"inference", "stdha", "train"} if "all" in args.what else set(args.what)
    from zeroi2v.model import create_model
    for backbone in backbones + ([args.train_backbone] if args.train_backbone else []):  # one-line errors first
        for frames in args.frames:
            create_model(backbone, num_frames=frames, num_classes=1, head_offsets=(-1, 1),
                         **{**timm_kwargs, "depth": 1})
    from tqdm import tqdm

    inference, stdha, training = [], [], []
    jobs = [(b, f) for b in backbones for f in args.frames]
    for backbone, frames in tqdm(jobs, desc="benchmarking", disable=os.environ.get("CI") == "true"):
        if "inference" in what:
            inference.append(inference_table(backbone, frames, args.batch, device, dtype, args.repeats, timm_kwargs))
        if "stdha" in what:
            stdha.append(stdha_table(backbone, frames, max(args.batch, 2), device, dtype, args.repeats, timm_kwargs))
    if "train" in what:
        backbone, batch = args.train_backbone or backbones[-1], args.train_batch or max(2, args.batch)
        training.append({"backbone": backbone, "frames": args.frames[0], "batch": batch,
                         "rows": train_table(backbone, args.frames[0], batch, device, args.train_steps, timm_kwargs)})
    env = environment(args, device)
    out = Path(args.out)
    bench_dir = out.parent / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    check_rows = checks(inference, stdha, training)
    section = markdown(env, inference, stdha, training, check_rows, charts(inference, training, bench_dir))
    atomic_write_text(bench_dir / "cost.md", section)
    atomic_write_json(bench_dir / "cost.json", {"environment": env, "checks": check_rows, "inference": inference,
                                                "stdha": stdha, "training": training})
    assemble(out)
    print(section)
    print(f"wrote {out} ({bench_dir / 'cost.md'}, {bench_dir / 'cost.json'})")
    return 0


def render(out: Path) -> int:
    """Rewrite the section and the assembled doc from cost.json (after a change to the wording)."""
    bench_dir = out.parent / "bench"
    data = json.loads((bench_dir / "cost.json").read_text())
    charts_ = sorted(p.name for p in bench_dir.glob("*.png"))
    section = markdown(data["environment"], data["inference"], data["stdha"], data["training"], data["checks"], charts_)
    atomic_write_text(bench_dir / "cost.md", section)
    assemble(out)
    print(f"wrote {out} from {bench_dir / 'cost.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
