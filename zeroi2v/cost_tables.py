"""The cost tables of `zeroi2v bench`: inference (params, FLOPs, clips/s, latency, memory) of the plain
image model, ZeroI2V merged and unmerged and the peers; STDHA vs spatial attention vs a reference-style
implementation (full K/V clone + manual softmax, as the paper's code); the training step of each method
(each in a fresh process, for an honest peak memory); eager vs `torch.compile`."""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from zeroi2v.build import build_model
from zeroi2v.model import model_config
from zeroi2v.timing import cpu_peak_bytes, cuda_peak_mb, interleaved_times, paired_ratio, sync, tensor_bytes

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
