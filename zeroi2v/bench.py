"""`zeroi2v bench`: cost and speed tables, measured side by side in one process.

    zeroi2v bench                                   # CPU: ViT-S/16 and ViT-B/16 at 8 frames
    zeroi2v bench --device cuda --dtype bf16 --batch 32 --frames 8 16 32 \\
        --backbone vit_base_patch16_clip_quickgelu_224 vit_large_patch14_clip_quickgelu_224
    zeroi2v bench --compile                         # torch.compile on/off: merged inference, training step
    zeroi2v bench --loader                          # training loader's clips/s vs the model's, decoders

Tables: inference (params, FLOPs, clips/s, latency, peak memory) of the plain timm image model on T
frames, ZeroI2V merged and unmerged, and the peer baselines (AIM, ST-Adapter, joint attention);
STDHA vs the same attention without temporal heads vs a reference-style implementation (full K/V
clone + manual softmax, as the paper's code); training step time and peak memory; with `--compile`,
eager vs `torch.compile`; with `--loader`, the training loader (decode + augmentation, N workers)
vs the model's training throughput, and our frame sampler vs torchcodec and decord. Timings are
medians of interleaved rounds (every variant once per round, order rotated), so background load hits
all alike; compare ratios, and only within one run.

Output: `<section dir>/{cost,compile,loader}.{md,json}` + PNG charts (section dir: `<out dir>/bench`);
`<out>` (docs/benchmarks.md) is then assembled from the sections found beside it (`SECTIONS`).
Generated, never typed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from zeroi2v.build import build_model
from zeroi2v.fileio import atomic_write, atomic_write_json, atomic_write_text
from zeroi2v.model import model_config

DEFAULT_BACKBONES = ["vit_small_patch16_224", "vit_base_patch16_clip_quickgelu_224"]
TINY = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 96, "num_heads": 6}
METHODS = ["plain image model", "ZeroI2V merged", "ZeroI2V unmerged", "AIM", "ST-Adapter", "joint attention"]
BASELINE_NAME = {
    "ZeroI2V merged": "zeroi2v",
    "ZeroI2V unmerged": "zeroi2v",
    "AIM": "aim",
    "ST-Adapter": "st_adapter",
    "joint attention": "joint",
}


def model_label(backbone: str, timm_kwargs: dict) -> str:
    """The model actually measured: the timm name, and what `timm_kwargs` changed about it."""
    if not timm_kwargs:
        return backbone
    keys = {
        "depth": "depth {}",
        "embed_dim": "width {}",
        "num_heads": "{} heads",
        "img_size": "{} px",
        "patch_size": "patch {}",
    }
    parts = [fmt.format(timm_kwargs[k]) for k, fmt in keys.items() if k in timm_kwargs]
    parts += [f"{k}={v}" for k, v in timm_kwargs.items() if k not in keys]
    toy = " toy model" if is_toy(timm_kwargs) else ""
    return f"{backbone} resized ({', '.join(parts)}){toy}"


def is_toy(timm_kwargs: dict) -> bool:
    """Smaller than any real backbone: fixed per-call costs (classifier, layout changes) are not negligible."""
    return timm_kwargs.get("depth", 12) < 6 or timm_kwargs.get("embed_dim", 384) < 192


# --- timing -----------------------------------------------------------------------------------------
def rotated(names: list, round_: int) -> list:
    """The run order of one interleaved round, shifted by one each round (no position bias)."""
    k = round_ % len(names)
    return names[k:] + names[:k]


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_times(
    runs: dict[str, Callable[[], object]],
    rounds: int,
    device="cpu",
    warmup: int = 1,
    setup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function: `warmup` untimed calls each, then `rounds` rounds in which
    every function runs once (order rotated per round), so load drifts hit all alike. `setup[name]`,
    if given, runs untimed before each call of `name`. The one timing loop of the benchmarks (tables,
    training steps, decoders)."""
    setup = setup or {}
    for _ in range(warmup):
        for name, f in runs.items():
            setup.get(name, lambda: None)()
            f()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for round_ in range(rounds):
        for name in rotated(list(runs), round_):
            setup.get(name, lambda: None)()
            sync(device)
            start = time.perf_counter()
            runs[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator/denominator taken in the same round (load drifts cancel)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=False))


def cuda_peak_mb(fn: Callable[[], object], resident_bytes: int = 0) -> float:
    """`resident_bytes` + the peak that one call of `fn` allocates above what was live before (MiB)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before + resident_bytes) / 2**20


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


# --- inference ---------------------------------------------------------------------------------------
def build(method: str, backbone: str, frames: int, timm_kwargs: dict, num_classes: int = 400, device="cpu"):
    """One model of the inference table, on `device` (fp32; a merged model is verified there)."""
    import timm

    from zeroi2v.reparam import reparameterize

    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs (a ViT-L's init on a CPU takes seconds)
        if method == "plain image model":
            return timm.create_model(backbone, pretrained=False, num_classes=num_classes, **timm_kwargs)
        model = build_model(
            model_config(
                backbone,
                method=BASELINE_NAME[method],
                num_frames=frames,
                num_classes=num_classes,
                head_offsets=(-1, 1),
                **timm_kwargs,
            )
        )
    if method == "ZeroI2V merged":
        trained_like(model)
        model = reparameterize(model, atol=1e-3)
    return model


def trained_like(model) -> None:
    """Random adapters and temporal table, so a merged model's weights are not the image model's."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter" in name:
                p.normal_(0, 0.02)


def random_clips(batch, frames, img, device, dtype) -> torch.Tensor:
    """Decoded clips (B, 3, T, H, W): every model gets the same input; the image model runs their frames."""
    return torch.randn(batch, 3, frames, img, img, device=device, dtype=dtype)


def run(model, method, clip):
    if method == "plain image model":  # frames as a batch of images, the same rearrangement ZeroI2V makes
        B, C, T, H, W = clip.shape
        return model(clip.transpose(1, 2).reshape(B * T, C, H, W))
    return model(clip)


def model_img(model):
    vit = getattr(model, "backbone", model)
    return vit.patch_embed.img_size[0]


def inference_table(backbone, frames, batch, device, dtype, repeats, timm_kwargs, methods=METHODS) -> list[dict]:
    from zeroi2v.model import count_flops, count_params

    methods = ["plain image model"] + [m for m in methods if m != "plain image model"]
    models, inputs, rows = {}, {}, {}
    for method in methods:
        model = build(method, backbone, frames, timm_kwargs, device=device).eval()
        params = count_params(model)
        flops = count_flops(model, num_frames=frames) if method == "plain image model" else count_flops(model)
        models[method] = model.to(dtype=dtype)
        inputs[method] = random_clips(batch, frames, timm_kwargs.get("img_size") or model_img(model), device, dtype)
        rows[method] = {"method": method, "params": params, "gflops_per_clip": flops / 1e9, "peak_mem_mb": None}
    runs = {m: (lambda m=m: run(models[m], m, inputs[m])) for m in methods}
    with torch.no_grad():
        times = interleaved_times(runs, repeats, device)
        if torch.device(device).type == "cuda":  # this model's weights + one forward's peak (all models stay resident)
            for m in methods:
                rows[m]["peak_mem_mb"] = cuda_peak_mb(runs[m], tensor_bytes(models[m].parameters()))
    plain = rows["plain image model"]
    out = []
    for method in methods:
        r = rows[method]
        median = statistics.median(times[method])
        r.update(
            throughput_vs_plain=paired_ratio(times["plain image model"], times[method]),
            latency_ms=1000 * median,
            clips_per_s=batch / median,
            backbone=backbone,
            model=model_label(backbone, timm_kwargs),
            toy=is_toy(timm_kwargs),
            frames=frames,
            batch=batch,
            embed_dim=models["plain image model"].embed_dim,
            flops_vs_plain=r["gflops_per_clip"] / plain["gflops_per_clip"],
            extra_params_vs_plain=r["params"] - plain["params"],
        )
        out.append(r)
    return out


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
    weights = torch.bmm(q / d**0.5, k.transpose(-2, -1)).softmax(dim=-1)
    return torch.bmm(weights, v).transpose(0, 1).contiguous().view(n * bt, c)


def reference_style_attention(attn, x_lnd, num_frames, folds):
    """One attention layer as the reference computes it; input and output (N, B·T, C) (CLIP's layout)."""
    n, bt, c = x_lnd.shape
    qkv = attn.qkv(x_lnd).unflatten(-1, (3, c)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
    out = _reference_attention_core(qkv[0], qkv[1], qkv[2], attn.num_heads, num_frames, folds)
    return attn.proj(out).view(n, bt, c)


def stdha_core(attn, qkv: torch.Tensor) -> torch.Tensor:
    """STDHA's attention core: fused qkv output (B·T, N, 3C) -> heads' outputs merged (B·T, N, C).
    Shifts the temporal heads' K/V of `qkv` in place (each call needs a fresh copy)."""
    heads = attn.attend_heads(qkv)  # (B·T, H, N, d)
    return heads.transpose(1, 2).flatten(2)


OURS, SPATIAL, REFERENCE = (
    "STDHA (ours: SDPA, temporal heads gathered)",
    "same attention, no temporal heads",
    "reference-style (clone K/V + manual softmax)",
)


def stdha_table(backbone, frames, batch, device, dtype, repeats, timm_kwargs) -> dict:
    import timm

    from zeroi2v.stdha import STDHAttention

    vit = timm.create_model(
        backbone, pretrained=False, depth=1, **{k: v for k, v in timm_kwargs.items() if k != "depth"}
    )
    raw = vit.blocks[0].attn
    d, heads = raw.head_dim, raw.num_heads
    ours = STDHAttention(raw, frames, (-1, 1)).to(device=device, dtype=dtype).eval()
    spatial = STDHAttention(raw, frames, ()).to(device=device, dtype=dtype).eval()
    folds = [(0, d, -1), (d, 2 * d, 1)]
    tokens = vit.patch_embed.num_patches + 1
    x = torch.randn(batch * frames, tokens, vit.embed_dim, device=device, dtype=dtype)
    x_lnd = x.transpose(0, 1).contiguous()  # the reference's layout (transposed once per network, not per layer)
    layer = {
        OURS: lambda: ours(x),
        SPATIAL: lambda: spatial(x),
        REFERENCE: lambda: reference_style_attention(ours, x_lnd, frames, folds).transpose(0, 1),
    }
    with torch.no_grad():  # the attention core: qkv projection output -> attention output (B·T, N, C)
        qkv = ours.qkv(x)
        ql, kl, vl = (
            t.permute(2, 0, 1, 3).reshape(tokens, x.shape[0], heads * d).contiguous()
            for t in qkv.reshape(x.shape[0], tokens, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        )
    fresh = {"qkv": qkv.clone()}  # ours shifts its temporal K/V channels in place: a fresh copy per call, untimed
    refill = {OURS: lambda: fresh.update(qkv=qkv.clone())}
    core = {
        OURS: lambda: stdha_core(ours, fresh["qkv"]),
        SPATIAL: lambda: stdha_core(spatial, qkv),
        REFERENCE: lambda: (
            _reference_attention_core(ql, kl, vl, heads, frames, folds)
            .view(tokens, x.shape[0], heads * d)
            .transpose(0, 1)
        ),
    }
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    result = {
        "backbone": backbone,
        "model": model_label(backbone, timm_kwargs),
        "toy": is_toy(timm_kwargs),
        "frames": frames,
        "batch": batch,
        "tokens": tokens,
        "device": str(device),
    }
    for part, runs, setup in (("layer", layer, {}), ("core", core, refill)):
        with torch.no_grad():
            setup.get(OURS, lambda: None)()
            err = (runs[OURS]() - runs[REFERENCE]()).abs().max().item()
            if not err <= tol:
                raise RuntimeError(
                    f"STDHA differs from the reference-style implementation: max abs error {err:.2e} > {tol}"
                )
            times = interleaved_times(runs, repeats * 3, device, setup=setup)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        result["max_abs_error" if part == "layer" else "core_max_abs_error"] = err
        result["rows" if part == "layer" else "core_rows"] = [
            {"implementation": k, "ms": v, "time_vs_ours": paired_ratio(times[k], times[OURS]), "paired": True}
            for k, v in med.items()
        ]
    return result


# --- training: each configuration in a fresh process, for an honest peak memory -------------------
TRAIN_CONFIGS = [
    ("ZeroI2V (frozen backbone)", "zeroi2v", True, "none", False),
    ("full fine-tuning", "zeroi2v", False, "none", False),
    ("AIM", "aim", True, "none", False),
    ("ST-Adapter", "st_adapter", True, "none", False),
    ("joint attention (adapters)", "joint", True, "none", False),
    ("ZeroI2V + bf16 autocast", "zeroi2v", True, "bf16", False),
    ("ZeroI2V + activation checkpointing", "zeroi2v", True, "none", True),
    ("full fine-tuning + activation checkpointing", "zeroi2v", False, "none", True),
]


def cpu_peak_bytes(step) -> int:
    """Peak of live tensor bytes allocated by `step()` above what was live before (CPU allocator).

    The CPU counterpart of `torch.cuda.max_memory_allocated`: the profiler records every allocation and
    free of PyTorch's CPU allocator (`profile_memory=True`); in the exported trace they are the
    `[memory]` events, whose running sum peaks where activations + gradients peak.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = sorted(
        (e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]
    )  # stable: ties keep order
    live = peak = 0
    for e in memory:
        live += e["args"]["Bytes"]
        peak = max(peak, live)
    return peak


def train_step_child(spec: dict) -> dict:
    """Runs in a subprocess: AdamW steps; median step time and the training peak memory.

    Peak memory = weights + optimizer state + the step's peak of activations and gradients, from the
    allocator (`torch.cuda.max_memory_allocated` on a GPU, the profiler's allocation record on a CPU).
    """
    from zeroi2v.memory import lean_training
    from zeroi2v.train import param_groups

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    kwargs = dict(spec.get("model_kwargs", {}))
    model = build_model(
        model_config(
            spec["backbone"],
            method=spec["method"],
            num_frames=spec["frames"],
            num_classes=400,
            head_offsets=kwargs.pop("head_offsets", (-1, 1)),
            freeze=spec["freeze"],
            **kwargs,
            **spec["timm_kwargs"],
        )
    ).to(device)
    lean_training(model)  # as the engine trains
    model.set_grad_checkpointing(spec["checkpointing"])
    opt = torch.optim.AdamW(param_groups(model, 0.05, {}), lr=1e-4)
    img = spec["timm_kwargs"].get("img_size") or model_img(model)
    x = torch.randn(spec["batch"], 3, spec["frames"], img, img, device=device)
    y = torch.randint(0, 400, (spec["batch"],), device=device)
    step = training_step(model, opt, x, y, spec["amp"])
    times = interleaved_times({"step": step}, spec["steps"], device, warmup=0)["step"]  # 1st step creates Adam state
    state = [t for s in opt.state.values() for t in s.values()]
    resident = tensor_bytes(list(model.parameters()) + list(model.buffers()) + state + [x, y])
    if device.type == "cuda":
        peak = cuda_peak_mb(step, resident) * 2**20
    else:
        peak = resident + cpu_peak_bytes(step)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "step_s": statistics.median(times[1:] or times),
        "peak_mem_mb": peak / 2**20,
        "resident_mb": resident / 2**20,
        "trainable": trainable,
    }


def training_step(model, opt, x, y, amp: str = "none", forward=None) -> Callable[[], float]:
    """One AdamW step (autocast when `amp` is bf16/fp16); returns the loss. `forward`: e.g. the
    compiled model (default: `model`)."""
    forward = model if forward is None else forward
    device_type = x.device.type
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def step() -> float:
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(forward(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def run_child(spec: dict, timeout: float = 1800) -> dict:
    """`train_step_child(spec)` in a fresh Python process (its own allocator, so its own peak)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "zeroi2v.bench", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"training benchmark failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_table(backbone, frames, batch, device, steps, timm_kwargs) -> list[dict]:
    rows = []
    for name, method, freeze, amp, ckpt in TRAIN_CONFIGS:
        slow = amp == "bf16" and device.type == "cpu"  # emulated without bf16 hardware: minutes per step
        spec = dict(
            method=method,
            freeze=freeze,
            amp=amp,
            checkpointing=ckpt,
            backbone=backbone,
            frames=frames,
            batch=batch,
            device=str(device),
            steps=1 if slow else steps,
            timm_kwargs=timm_kwargs,
        )
        rows.append({"configuration": name, **run_child(spec)})
    full = next(r for r in rows if r["configuration"] == "full fine-tuning")
    for r in rows:
        r["memory_vs_full"] = r["peak_mem_mb"] / full["peak_mem_mb"] if full["peak_mem_mb"] > 0 else None
        r["time_vs_full"] = r["step_s"] / full["step_s"]
    return rows


# --- torch.compile on/off ------------------------------------------------------------------------------
def compile_table(backbone, frames, batch, train_batch, device, dtype, repeats, timm_kwargs) -> dict:
    """Eager vs `torch.compile(fullgraph=True)` (Inductor), interleaved: the merged model's and the plain image
    model's inference, and the unmerged model's training step (AdamW; bf16 autocast when `dtype` is bf16)."""
    device = torch.device(device)
    rows = []
    for part in (_compile_inference, _compile_training):
        torch._dynamo.reset()
        rows += part(backbone, frames, batch, train_batch, device, dtype, repeats, timm_kwargs)
    torch._dynamo.reset()
    return {
        "backbone": backbone,
        "model": model_label(backbone, timm_kwargs),
        "frames": frames,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "rows": rows,
    }


def _compile_inference(backbone, frames, batch, train_batch, device, dtype, repeats, timm_kwargs) -> list[dict]:
    """The merged model and the plain image model (on the same clips' frames), each eager and compiled, all four
    in the same interleaved rounds: the merged model's speed relative to the image model, eager and compiled."""
    merged = build("ZeroI2V merged", backbone, frames, timm_kwargs, device=device).eval().to(dtype=dtype)
    image = build("plain image model", backbone, frames, timm_kwargs, device=device).eval().to(dtype=dtype)
    x = random_clips(batch, frames, timm_kwargs.get("img_size") or model_img(merged), device, dtype)
    pairs = {}
    for name, model in (("ZeroI2V merged", merged), ("plain image model", image)):
        compiled = torch.compile(model, fullgraph=True, dynamic=False)
        pairs[f"inference, {name}"] = (
            batch,
            lambda m=model, n=name: run(m, n, x),
            lambda c=compiled, n=name: run(c, n, x),
        )
    with torch.no_grad():
        rows, times = _compare(pairs, repeats, device)
    rows[0]["vs_image_model"] = {
        mode: paired_ratio(times[f"inference, plain image model/{mode}"], times[f"inference, ZeroI2V merged/{mode}"])
        for mode in ("eager", "compiled")
    }
    return rows


def _compile_training(backbone, frames, batch, train_batch, device, dtype, repeats, timm_kwargs) -> list[dict]:
    """Two identical copies of the unmerged model, each with its own AdamW state; one compiled."""
    from zeroi2v.memory import lean_training
    from zeroi2v.train import param_groups

    torch.manual_seed(0)
    eager = (
        lean_training(
            build_model(model_config(backbone, num_frames=frames, num_classes=400, head_offsets=(-1, 1), **timm_kwargs))
        )
        .to(device)
        .train()
    )
    eager.head_drop.p = 0.0  # deterministic, so the two copies' first losses can be compared
    twin = copy.deepcopy(eager)
    amp = "bf16" if dtype == torch.bfloat16 else "fp16" if dtype == torch.float16 else "none"
    x = random_clips(train_batch, frames, timm_kwargs.get("img_size") or model_img(eager), device, torch.float32)
    y = torch.randint(0, 400, (train_batch,), device=device)
    steps = [
        training_step(m, torch.optim.AdamW(param_groups(m, 0.05, {}), lr=1e-4), x, y, amp, forward=f)
        for m, f in ((eager, None), (twin, torch.compile(twin, fullgraph=True, dynamic=False)))
    ]
    name = f"training step (AdamW{', bf16 autocast' if amp == 'bf16' else ''}), ZeroI2V unmerged"
    rows, _ = _compare({name: (train_batch, steps[0], steps[1])}, max(3, repeats // 2), device)
    return rows


def _compare(pairs: dict, rounds, device) -> tuple[list[dict], dict]:
    """`pairs`: name -> (clips, eager, compiled). Compiles each (first compiled call = compile time), checks
    compiled and eager outputs agree, then times every function in the same interleaved rounds. Returns
    one row per pair and the raw times ("name/eager", "name/compiled")."""
    runs, rows = {}, []
    for name, (clips, eager, compiled) in pairs.items():
        sync(device)
        start = time.perf_counter()
        first_compiled = compiled()
        sync(device)
        compile_s = time.perf_counter() - start
        difference = (first_compiled.float() - eager().float()).abs().max().item()
        runs.update({f"{name}/eager": eager, f"{name}/compiled": compiled})
        rows.append({"part": name, "batch": clips, "compile_s": compile_s, "max_abs_difference": difference})
    times = interleaved_times(runs, rounds, device, warmup=1)
    for row in rows:
        e, c = times[f"{row['part']}/eager"], times[f"{row['part']}/compiled"]
        me, mc, clips = statistics.median(e), statistics.median(c), row["batch"]
        row.update(
            eager_ms=1000 * me,
            compiled_ms=1000 * mc,
            speedup=paired_ratio(e, c),
            eager_clips_per_s=clips / me,
            compiled_clips_per_s=clips / mc,
            compile_s=row["compile_s"] - mc,
        )
    return rows, times


# --- loader vs model ---------------------------------------------------------------------------------------
def write_test_video(
    path, seconds: float, fps: int, width: int, height: int, gop: int | None = None, seed: int = 0
) -> str:
    """A smooth random scene panning 3 px/frame with a bouncing square, H.264 (crf 23): content x264 has
    to encode, like real footage. `gop` None: x264's default keyframe interval (250)."""
    from fractions import Fraction

    import av
    import numpy as np

    frames, pan = int(seconds * fps), 3
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(1, height // 16), max(1, (width + pan * frames) // 16), generator=gen)
    scene = torch.nn.functional.interpolate(coarse, size=(height, width + pan * frames), mode="bicubic")
    scene = (scene[0].permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()
    side = min(60, min(width, height) // 2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", **({"g": str(gop)} if gop else {})}
        for i in range(frames):
            frame = scene[:, pan * i : pan * i + width].copy()
            t = i / fps
            x, y = int((width - side) * abs(np.sin(t))), int((height - side) * abs(np.cos(1.3 * t)))
            frame[y : y + side, x : x + side] = 255
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = i, Fraction(1, fps)
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def kinetics_like_videos(folder, count: int, seconds: float, short_side: int, fps: int = 30) -> list[str]:
    """`count` 16:9 H.264 files with the given short side (Kinetics is distributed at 340 px or more)."""
    width = int(round(short_side * 16 / 9 / 2)) * 2
    return [
        write_test_video(Path(folder) / f"video_{short_side}_{i}.mp4", seconds, fps, width, short_side, seed=i)
        for i in range(count)
    ]


def loader_clips_per_s(
    paths: list[str],
    workers: int,
    clips: int,
    batch: int = 8,
    backend: str = "pyav",
    frames: int = 8,
    interval: int = 16,
    img_size: int = 224,
    pin_memory: bool = False,
) -> float:
    """Clips/s of zeroi2v's training loader: VideoDataset (train: dense sampling, decode, RandAugment,
    random resized crop, flip, normalise) in a DataLoader with `workers` workers. The first batch
    (worker start-up, frame counting) is not timed."""
    from zeroi2v.data import VideoDataset, collate

    total = batch * (math.ceil(clips / batch) + 1)
    samples = [(paths[i % len(paths)], 0) for i in range(total)]
    dataset = VideoDataset(
        "",
        samples,
        num_frames=frames,
        sampling="dense",
        frame_interval=interval,
        train=True,
        img_size=img_size,
        backend=backend,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, num_workers=workers, collate_fn=collate, pin_memory=pin_memory, shuffle=False
    )
    it = iter(loader)
    next(it)
    start, seen = time.perf_counter(), 0
    for item in it:
        seen += len(item["label"])
    return seen / (time.perf_counter() - start)


def decoder_readers() -> dict[str, Callable | str]:
    """Readers of a clip's frames (uint8 (8, H, W, 3)) by index, as a training dataset calls them: a
    fresh decoder per clip, the frame count known. A string instead of a reader says why it is missing."""
    from zeroi2v.data.decode import read_frames

    readers: dict[str, Callable | str] = {
        "zeroi2v sampler (PyAV, seek and stop)": lambda path, idx: read_frames(path, idx, backend="pyav")
    }
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder

        if getattr(torchcodec, "ffmpeg_major_version", 0) is None:
            raise ImportError("torchcodec cannot load FFmpeg's shared libraries (install FFmpeg 4-8)")

        def torchcodec_reader(mode):
            return lambda path, idx: (
                VideoDecoder(path, seek_mode=mode, dimension_order="NHWC").get_frames_at([int(i) for i in idx]).data
            )

        for mode in ("approximate", "exact"):
            readers[f"torchcodec {torchcodec.__version__} (seek_mode={mode})"] = torchcodec_reader(mode)
    except Exception as e:  # noqa: BLE001 - not installed, or FFmpeg's shared libraries missing
        readers["torchcodec"] = f"not run: {_short_error(e)}"
    try:
        import decord

        readers[f"decord {decord.__version__}"] = lambda path, idx: torch.from_numpy(
            decord.VideoReader(path).get_batch([int(i) for i in idx]).asnumpy()
        )
    except Exception as e:  # noqa: BLE001
        readers["decord"] = f"not run: {_short_error(e)}"
    return readers


def _short_error(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}".rstrip(": ")


def decoder_table(paths: list[str], clips: int, rounds: int) -> list[dict]:
    """Our sampler vs torchcodec vs decord on the same files and the same dense 8x16 frame indices."""
    import numpy as np

    from zeroi2v.data.decode import num_frames
    from zeroi2v.data.sampling import sample_indices

    lengths = {p: num_frames(p, "pyav") for p in paths}
    readers = decoder_readers()
    usable = {}
    rows = []
    reference = {}
    for name, reader in readers.items():  # first check each reader: frames equal to ours on one clip per file
        if isinstance(reader, str):
            rows.append({"decoder": name, "note": reader})
            continue
        try:
            diffs = []
            for p in paths:
                idx = sample_indices(lengths[p], 8, "dense", 16, train=True, rng=np.random.default_rng(7)).reshape(-1)
                frames = torch.as_tensor(reader(p, idx))
                if p not in reference:
                    reference[p] = frames
                if frames.shape != reference[p].shape:
                    raise RuntimeError(f"returned shape {tuple(frames.shape)}, ours {tuple(reference[p].shape)}")
                diffs.append((frames.float() - reference[p].float()).abs().mean().item())
            usable[name] = reader
            rows.append({"decoder": name, "mean_abs_diff_vs_ours": max(diffs)})
        except Exception as e:  # noqa: BLE001
            rows.append({"decoder": name, "note": f"failed: {_short_error(e)}"})

    def run_clips(reader, rng):
        for i in range(clips):
            p = paths[i % len(paths)]
            reader(p, sample_indices(lengths[p], 8, "dense", 16, train=True, rng=rng).reshape(-1))

    rngs = {name: np.random.default_rng(0) for name in usable}  # the same index sequence for every decoder
    times = interleaved_times({n: (lambda n=n: run_clips(usable[n], rngs[n])) for n in usable}, rounds, warmup=0)
    ours = next(iter(usable))
    for row in rows:
        if row["decoder"] in times:
            t = times[row["decoder"]]
            row.update(clips_per_s=clips / statistics.median(t), vs_ours=paired_ratio(times[ours], t))
    return rows


def loader_table(args, device, timm_kwargs) -> dict:
    """The training loader's clips/s for several worker counts, with the user's remedies, next to the
    model's training clips/s on this machine; then the decoders at equal output frames."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = sorted(set(args.loader_workers or {1, max(1, cores // 2), cores}))
    backbone = args.train_backbone or (args.backbone or DEFAULT_BACKBONES)[-1]
    frames, batch = 8, args.train_batch or max(2, args.batch)
    result = {
        "cores": cores,
        "img_size": timm_kwargs.get("img_size", 224),
        "videos": args.loader_videos,
        "seconds": args.loader_seconds,
        "short_side": args.loader_short_side,
        "clips": args.loader_clips,
        "rounds": args.loader_rounds,
        "backbone": backbone,
        "model": model_label(backbone, timm_kwargs),
        "train_batch": batch,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        files = kinetics_like_videos(tmp, args.loader_videos, args.loader_seconds, args.loader_short_side)
        resized = 256 if args.loader_short_side > 256 else args.loader_short_side * 3 // 4  # the training short side
        small = kinetics_like_videos(tmp, args.loader_videos, args.loader_seconds, resized)
        from zeroi2v.data.decode import torchcodec_available

        configs = [(f"{w} worker{'s' if w != 1 else ''}", files, w, "pyav") for w in workers]
        top = max(workers)
        configs.append(
            (f"{top} worker{'s' if top != 1 else ''}, files pre-resized to short side {resized}", small, top, "pyav")
        )
        if torchcodec_available():
            configs.append(
                (f"{top} worker{'s' if top != 1 else ''}, data.backend: torchcodec", files, top, "torchcodec")
            )
        else:
            result["torchcodec_loader_note"] = "torchcodec cannot decode here (not installed or no FFmpeg libraries)"
        runs: dict[str, list[float]] = {name: [] for name, *_ in configs}
        pin = torch.device(device).type == "cuda"
        img = timm_kwargs.get("img_size", 224)
        for round_ in range(args.loader_rounds):
            for name, paths, w, backend in rotated(configs, round_):
                runs[name].append(
                    loader_clips_per_s(paths, w, args.loader_clips, backend=backend, img_size=img, pin_memory=pin)
                )
        for name, paths, w, backend in configs:
            result["rows"].append(
                {"loader": name, "workers": w, "clips_per_s": statistics.median(runs[name]), "runs": runs[name]}
            )
        result["decoders"] = decoder_table(files, args.loader_clips, args.loader_rounds)
    amp = "bf16" if args.dtype == "bf16" and torch.device(device).type == "cuda" else "none"
    spec = dict(
        method="zeroi2v",
        freeze=True,
        amp=amp,
        checkpointing=False,
        backbone=backbone,
        frames=frames,
        batch=batch,
        device=str(device),
        steps=args.train_steps,
        timm_kwargs=timm_kwargs,
    )
    model = run_child(spec)
    result["model_clips_per_s"] = batch / model["step_s"]
    result["model_amp"] = amp
    return result


# --- report ----------------------------------------------------------------------------------------
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
    if inference and env["device"] == "cpu":
        lines += [
            "Peak memory of inference is not reported on CPU: without a caching allocator to query, an RSS delta "
            "of one forward pass among several models in one process is not meaningful. "
            "`torch.cuda.max_memory_allocated` fills the column on a GPU.",
            "",
        ]
    for s in stdha:
        lines += [
            f"### STDHA attention: {s.get('model', s['backbone'])}, {s['frames']} frames × batch {s['batch']}, "
            f"{s['tokens']} tokens",
            "",
            "One attention layer, heads 0 and 1 temporal (Δt = -1, +1). Reference-style = the paper's MMAction2 "
            "code path: clone K and V, overwrite the shifted channel folds, `softmax(q·kᵀ·scale)·v` by hand.",
            "",
            f"Outputs equal: max abs difference {s['max_abs_error']:.2e} for the layer, "
            f"{s['core_max_abs_error']:.2e} for the attention core (asserted). The core (qkv projection output → attention "
            "output) is where the implementations differ; the whole layer adds the qkv and output projections, "
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
    for t in training:
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
        if env["device"] == "cpu":
            lines += [
                "On CPU, bf16 speed depends on the processor's bf16 support (without it the kernels are "
                "emulated and can be slower than fp32; its row times a single step); its memory effect holds "
                "everywhere. GPU numbers: run the command above.",
                "",
            ]
    lines += [f"![{n}]({chart_dir}/{n})" for n in charts_]
    return "\n".join(lines) + "\n"


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


def loader_verdict(result) -> str:
    best = max(
        result["rows"],
        key=lambda r: r["clips_per_s"] if "pre-resized" not in r["loader"] and "torchcodec" not in r["loader"] else -1,
    )
    model = result["model_clips_per_s"]
    if best["clips_per_s"] >= model:
        return (
            f"**The model bounds training here**: the loader delivers {best['clips_per_s']:.1f} clips/s with "
            f"{best['workers']} worker(s), {best['clips_per_s'] / model:.1f}× the {model:.2f} clips/s the model "
            "trains at; more loader speed would not make training faster."
        )
    need = math.ceil(best["workers"] * model / best["clips_per_s"])
    return (
        f"**The loader bounds training here**: {best['clips_per_s']:.1f} clips/s with {best['workers']} worker(s) vs "
        f"{model:.1f} clips/s the model could train at ({model / best['clips_per_s']:.1f}× more); at this rate per "
        f"worker it needs about {need} workers (cores), or cheaper clips (remedies below)."
    )


def loader_markdown(env, result) -> str:
    model_desc = f"{result['model']}, ZeroI2V frozen backbone, 8 frames, batch {result['train_batch']}, AdamW" + (
        ", bf16 autocast" if result["model_amp"] == "bf16" else ", fp32"
    )
    lines = [
        "## Loader vs model",
        "",
        "Generated by `zeroi2v bench --loader` (never edited by hand). Training clips/s of zeroi2v's loader "
        "(`VideoDataset` in train mode: dense 8×16 sampling, seek-and-stop decoding, RandAugment, random resized "
        f"crop to {result['img_size']}, flip, normalisation; `DataLoader` batches of 8, first batch not timed) on "
        f"{result['videos']} generated {result['seconds']:g} s 30 fps 16:9 H.264 files with a "
        f"{result['short_side']}-px short side (as Kinetics is distributed), next to the model's training "
        f"throughput on the same machine ({model_desc}). Medians of {result['rounds']} interleaved runs of "
        f"{result['clips']} clips. The loader and the model are measured one after the other (the loader needs "
        "the cores), so on a shared machine background load can favour either side.",
        "",
        *env_lines(env),
        f"- usable CPU cores: {result['cores']}",
        "",
        loader_verdict(result),
        "",
        "| loader | clips/s | vs model's training clips/s |",
        "|---|---:|---:|",
    ]
    model = result["model_clips_per_s"]
    lines += [f"| {r['loader']} | {r['clips_per_s']:.2f} | {r['clips_per_s'] / model:.2f}× |" for r in result["rows"]]
    lines += [f"| model training step ({model_desc}) | {model:.2f} | 1.00× |", ""]
    if result.get("torchcodec_loader_note"):
        lines += [f"torchcodec as the loader's backend: {result['torchcodec_loader_note']}.", ""]
    resized = next((r["loader"].rsplit(" ", 1)[-1] for r in result["rows"] if "pre-resized" in r["loader"]), "256")
    lines += [
        "Remedies where the loader bounds training, each measured above against the same files: more "
        "`train.num_workers` (one per free core; the rows' worker counts), files pre-resized to the training "
        "short side (`ffmpeg -i in.mp4 -vf scale=-2:256 out.mp4` once for the dataset; decoding cost scales "
        f"with pixels; here the same scene written at {resized} px), and `data.backend: torchcodec` where torchcodec "
        "and FFmpeg's libraries are installed (`pip install zeroi2v[torchcodec]`).",
        "",
        "### Decoders at equal output frames",
        "",
        "The same dense 8×16 frame indices from the same files, as a dataset calls a decoder: a fresh decoder "
        "per clip, the frame count known (ours caches it per file, as `VideoDataset` does), each library's "
        "default threading, single process. Mean abs diff: the largest over the files of the mean absolute "
        "pixel difference to our frames (0-255; colour conversion differs slightly between libraries, a "
        "wrong frame differs by far more).",
        "",
        "| decoder | clips/s | speed vs ours (paired) | mean abs diff vs ours | |",
        "|---|---:|---:|---:|---|",
    ]
    for r in result["decoders"]:
        if "clips_per_s" in r:
            lines.append(
                f"| {r['decoder']} | {r['clips_per_s']:.2f} | {r['vs_ours']:.2f}× | "
                f"{r['mean_abs_diff_vs_ours']:.2f} | |"
            )
        else:
            lines.append(f"| {r['decoder']} | | | | {r['note']} |")
    lines.append("")
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
        "(`zeroi2v bench`), `torch.compile` (`zeroi2v bench --compile`), loader vs model (`zeroi2v bench "
        "--loader`), the GPU check (`benchmarks/gpu_check.sh`), accuracy at equal budget "
        "(`python benchmarks/accuracy.py`), video decoding (`python benchmarks/decode.py`). Rerun a script to "
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


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="zeroi2v bench", description="Cost and speed tables, side by side.")
    parser.add_argument(
        "--backbone", nargs="+", default=None, help=f"timm names (default: {' '.join(DEFAULT_BACKBONES)})"
    )
    parser.add_argument("--frames", nargs="+", type=int, default=[8])
    parser.add_argument(
        "--batch", type=int, default=1, help="clips per forward pass in the inference/STDHA/compile tables"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="inference/STDHA dtype; the training step of --compile/--loader autocasts to it",
    )
    parser.add_argument(
        "--what",
        nargs="+",
        choices=["inference", "stdha", "train", "compile", "loader", "all"],
        default=None,
        help="tables to make (default: inference stdha train; all = those three)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile on/off (section compile.md)")
    parser.add_argument("--loader", action="store_true", help="training loader vs model, decoders (section loader.md)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS, help="models of the inference table")
    parser.add_argument(
        "--joint-frames",
        nargs="+",
        type=int,
        default=None,
        help="frame counts at which joint attention runs (its cost grows with T²; default: all)",
    )
    parser.add_argument("--repeats", type=int, default=11, help="interleaved timing rounds (median)")
    parser.add_argument(
        "--train-batch", type=int, default=None, help="batch of the training tables (default max(2, --batch))"
    )
    parser.add_argument(
        "--train-backbone", default=None, help="backbone of the training/loader tables (default: the last --backbone)"
    )
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--img-size", type=int, default=None, help="input size (timm img_size): smaller = faster")
    parser.add_argument(
        "--loader-workers",
        nargs="+",
        type=int,
        default=None,
        help="DataLoader worker counts (default: 1, half the cores, all cores)",
    )
    parser.add_argument("--loader-videos", type=int, default=4)
    parser.add_argument("--loader-seconds", type=float, default=10)
    parser.add_argument("--loader-short-side", type=int, default=340)
    parser.add_argument("--loader-clips", type=int, default=32, help="clips per timed loader run")
    parser.add_argument("--loader-rounds", type=int, default=3)
    parser.add_argument(
        "--out",
        default="docs/benchmarks.md",
        help="assembled Markdown file; this run's sections, JSON and PNGs go beside it in bench/",
    )
    parser.add_argument("--section-dir", default=None, help="where the sections go (default: <out dir>/bench)")
    parser.add_argument(
        "--name", default="cost", help="file name (without .md) of the inference/STDHA/training section (default: cost)"
    )
    parser.add_argument("--tiny", action="store_true", help="toy-size models (smoke test)")
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rebuild the Markdown from the JSON of the last run (<section dir>/*.json)",
    )
    args = parser.parse_args(argv)
    args.argv = argv
    counts = [
        "batch",
        "repeats",
        "train_batch",
        "train_steps",
        "img_size",
        "loader_videos",
        "loader_short_side",
        "loader_clips",
        "loader_rounds",
        "frames",
        "joint_frames",
    ]
    bad = []
    for name in counts:
        value = getattr(args, name)
        if any(v is not None and v < 1 for v in (value if isinstance(value, list) else [value])):
            bad.append(f"--{name.replace('_', '-')} must be >= 1")
    bad += ["--loader-seconds must be > 0"] * (args.loader_seconds <= 0)
    bad += ["--loader-workers must be >= 0"] * any(w < 0 for w in args.loader_workers or [])
    if bad:
        from zeroi2v.errors import UserError

        raise UserError("; ".join(bad))
    what = set(args.what or ([] if (args.compile or args.loader) else ["all"]))
    what |= {"compile"} if args.compile else set()
    what |= {"loader"} if args.loader else set()
    args.what = (what - {"all"}) | ({"inference", "stdha", "train"} if "all" in what else set())
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        print(json.dumps(train_step_child(json.loads(argv[1]))))
        return 0
    args = parse_args(argv)
    out = Path(args.out)
    section_dir = Path(args.section_dir) if args.section_dir else out.parent / "bench"
    if out.is_dir() or out.is_file() and ASSEMBLED_MARK not in out.read_text(encoding="utf-8", errors="replace")[:2000]:
        from zeroi2v.errors import UserError  # e.g. `zeroi2v bench` run in a project with its own docs/benchmarks.md

        raise UserError(
            f"--out {out} is {'a directory' if out.is_dir() else 'not a file zeroi2v bench wrote'}; "
            "refusing to overwrite it (give --out another Markdown file)"
        )
    if args.render:
        return render(out, section_dir)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        from zeroi2v.errors import UserError

        raise UserError("--device cuda asked for, but no GPU is visible to PyTorch")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    backbones = args.backbone or (["vit_base_patch16_clip_quickgelu_224"] if args.tiny else DEFAULT_BACKBONES)
    timm_kwargs = dict(TINY) if args.tiny else {}
    if args.img_size:
        timm_kwargs["img_size"] = args.img_size
    what = args.what
    from zeroi2v.model import create_model

    for backbone in backbones + ([args.train_backbone] if args.train_backbone else []):  # one-line errors first
        for frames in args.frames:
            create_model(
                backbone, num_frames=frames, num_classes=1, head_offsets=(-1, 1), **{**timm_kwargs, "depth": 1}
            )
    from tqdm import tqdm

    section_dir.mkdir(parents=True, exist_ok=True)
    env = environment(args, device)
    quiet = os.environ.get("CI") == "true"
    inference, stdha, training, compiled = [], [], [], []
    jobs = [(b, f) for b in backbones for f in args.frames]
    if what & {"inference", "stdha", "compile"}:
        for backbone, frames in tqdm(jobs, desc="benchmarking", disable=quiet):
            if "inference" in what:
                methods = [
                    m
                    for m in args.methods
                    if m != "joint attention" or args.joint_frames is None or frames in args.joint_frames
                ]
                inference.append(
                    inference_table(backbone, frames, args.batch, device, dtype, args.repeats, timm_kwargs, methods)
                )
            if "stdha" in what:
                stdha.append(
                    stdha_table(backbone, frames, max(args.batch, 2), device, dtype, args.repeats, timm_kwargs)
                )
            if "compile" in what:
                compiled.append(
                    compile_table(
                        backbone,
                        frames,
                        args.batch,
                        args.train_batch or max(2, args.batch),
                        device,
                        dtype,
                        args.repeats,
                        timm_kwargs,
                    )
                )
    if "train" in what:
        backbone, batch = args.train_backbone or backbones[-1], args.train_batch or max(2, args.batch)
        training.append(
            {
                "backbone": backbone,
                "model": model_label(backbone, timm_kwargs),
                "toy": is_toy(timm_kwargs),
                "frames": args.frames[0],
                "batch": batch,
                "rows": train_table(backbone, args.frames[0], batch, device, args.train_steps, timm_kwargs),
            }
        )
    env = {**env, **environment(args, device)}  # load average at the end
    chart_dir = os.path.relpath(section_dir, out.parent)
    written = []
    if what & {"inference", "stdha", "train"}:
        check_rows = checks(inference, stdha, training, str(device))
        section = markdown(
            env, inference, stdha, training, check_rows, charts(inference, training, section_dir), chart_dir
        )
        atomic_write_text(section_dir / f"{args.name}.md", section)
        atomic_write_json(
            section_dir / f"{args.name}.json",
            {"environment": env, "checks": check_rows, "inference": inference, "stdha": stdha, "training": training},
        )
        written.append(section)
    if compiled:
        section = compile_markdown(env, compiled)
        atomic_write_text(section_dir / "compile.md", section)
        atomic_write_json(section_dir / "compile.json", {"environment": env, "tables": compiled})
        written.append(section)
    if "loader" in what:
        result = loader_table(args, device, timm_kwargs)
        env = {**env, **environment(args, device)}
        section = loader_markdown(env, result)
        atomic_write_text(section_dir / "loader.md", section)
        atomic_write_json(section_dir / "loader.json", {"environment": env, **result})
        written.append(section)
    assemble(out)
    print("\n".join(written))
    print(f"wrote {out} (sections in {section_dir})")
    return 0


def render(out: Path, section_dir: Path) -> int:
    """Rewrite the sections and the assembled doc from their JSON (after a change to the wording)."""
    chart_dir = os.path.relpath(section_dir, out.parent)
    for path in sorted(section_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if "inference" not in data:
            continue
        names = {f"inference_{t[0]['backbone']}_{t[0]['frames']}.png" for t in data["inference"]}
        names |= {f"training_{t['backbone']}_{t['frames']}.png" for t in data["training"]}
        charts_ = sorted(n for n in names if (section_dir / n).is_file())
        check_rows = checks(data["inference"], data["stdha"], data["training"], data["environment"]["device"])
        atomic_write_text(
            path.with_suffix(".md"),
            markdown(
                data["environment"], data["inference"], data["stdha"], data["training"], check_rows, charts_, chart_dir
            ),
        )
    if (section_dir / "compile.json").is_file():
        data = json.loads((section_dir / "compile.json").read_text())
        atomic_write_text(section_dir / "compile.md", compile_markdown(data["environment"], data["tables"]))
    if (section_dir / "loader.json").is_file():
        data = json.loads((section_dir / "loader.json").read_text())
        atomic_write_text(section_dir / "loader.md", loader_markdown(data.pop("environment"), data))
    assemble(out)
    print(f"wrote {out} from the JSON in {section_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
