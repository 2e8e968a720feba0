"""Write docs/training.md: every shipped config's training recipe next to the reference's.

    python -m benchmarks.recipes        # a few seconds; builds tiny models only, reads no data or weights

"This repository" is read from the configs themselves: each config is loaded, its optimizer groups
come from `zeroi2v.train.param_groups` on a shrunken model of the same kind (same trainable set and
names, so the same multipliers and decay), its augmentation chain from
`zeroi2v.data.transforms.train_transform(...).steps` built with the config's data keys. "Reference"
restates the reference implementation's configs (REFERENCE below). A row whose two sides differ is
marked and its reason is named. The document is regenerated, never typed by hand.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from zeroi2v.build import build_model
from zeroi2v.config import load_config
from zeroi2v.data.spec import specs_from_config
from zeroi2v.data.transforms import train_transform
from zeroi2v.train import param_groups

REPO = Path(__file__).resolve().parents[1]

CONFIGS = REPO / "zeroi2v" / "configs"
OUT = REPO / "docs" / "training.md"
NOT_RECIPES = {"demo"}  # the CPU demo's config is not a published setting
# A model of the config's kind small enough to build in milliseconds: one block, 8 heads (enough for
# the 7 temporal heads of SSv2 ViT-L), no weights. Parameter names and the trainable set are the same.
SHRINK = [
    "model.pretrained=null",
    "model.timm_kwargs={depth: 1, embed_dim: 64, num_heads: 8, patch_size: 8}",
    "data.img_size=16",
]

# --- the reference (MMAction2 fork) --------------------------------------------------------------------
K400_CHAIN = (
    "resize short side 256",
    "RandAugment 4 × 7 (p 0.5, σ 0.5)",
    "RandomResizedCrop 224 (area 0.08–1)",
    "flip 0.5",
    "normalise (CLIP mean/std)",
)
SSV2_CHAIN = (
    "resize short side 256",
    "RandomResizedCrop 224 (area 0.08–1)",
    "flip 0.5 + direction label map",
    "RandAugment 4 × 7 (p 0.5, σ 0.5)",
    "RandomErasing 0.25 const",
    "normalise (CLIP mean/std)",
)
K400_L32_CHAIN = K400_CHAIN[:4] + ("RandomErasing 0.25 rand",) + K400_CHAIN[4:]
BACKBONE_X01 = (("adapters", 0.1), ("classifier", 1.0), ("final norm", 0.1), ("temporal embedding", 0.1))
ALL_X1 = (("adapters", 1.0), ("classifier", 1.0), ("final norm", 1.0), ("temporal embedding", 1.0))
NO_DECAY = (0.05, ("final norm", "temporal embedding"))


def _ref(
    source, sampling, rate, clips, accum, mults, epochs, chain, dropout, scale, offsets, views, smoothing=0.0, **notes
):
    """One reference setting; `notes` (by row key) say where a value comes from; `differs`: rows this
    repository changes on purpose (the reason is in the note)."""
    return dict(
        source=source,
        sampling=sampling,
        lr=rate,
        batch=(clips, accum),
        lr_mult=mults,
        weight_decay=NO_DECAY,
        optimizer=("AdamW", (0.9, 0.999), None),
        schedule=(epochs, 2.5, 0.1, 0.0),
        augmentation=chain,
        adapters=(scale, dropout),
        offsets=tuple(offsets),
        head=(0.5, smoothing),
        views=views,
        precision="fp16 + dynamic loss scaling",
        notes=notes,
    )


_PUB = "the published config of this setting"
_AUTO32 = "3e-4 at auto_scale_lr base 32, which MMEngine scales by 2 clips × 8 GPUs / 32, not counting the accumulation"
_FEWSHOT = (
    "no published few-shot config; this is the reference's {label} u8 recipe, whose lr (3e-4) is not "
    "auto-scaled. {k} videos × {classes} classes = {n} training videos: the reference's global batch of 128 "
    "would give {steps128} full-batch steps per epoch, {batch} gives {steps} (the batch is 8 for K = 2 and 16 "
    "otherwise, so that every K-shot split trains at least 12 steps per epoch)"
)
REFERENCE = {
    "k400_vitb16_8x16x1": _ref(
        _PUB,
        ("dense", 8, 16),
        3e-4,
        64,
        1,
        ALL_X1,
        40,
        K400_CHAIN,
        0.1,
        0.5,
        [-1, 1],
        (3, 1),
        batch="8 clips × 8 GPUs; lr 3e-4 at auto_scale_lr base 64",
    ),
    "k400_vitl14_8x16x1": _ref(
        _PUB,
        ("dense", 8, 16),
        3e-4,
        64,
        1,
        BACKBONE_X01,
        40,
        K400_CHAIN,
        0.1,
        0.5,
        [-1, -1, 1, 1],
        (3, 1),
        batch="8 clips × 8 GPUs; lr 3e-4 at auto_scale_lr base 64",
        lr_mult="paramwise_cfg backbone lr_mult 0.1: every parameter under the backbone module",
    ),
    "k400_vitl14_32x4x1": _ref(
        _PUB,
        ("dense", 32, 4),
        1.5e-4,
        32,
        2,
        BACKBONE_X01,
        40,
        K400_L32_CHAIN,
        0.1,
        0.5,
        [-1, -1, 1, 1, -2, -2],
        (3, 1),
        lr=_AUTO32,
        batch="2 clips × 8 GPUs × accumulative_counts 2",
        lr_mult="paramwise_cfg backbone lr_mult 0.1: every parameter under the backbone module",
    ),
    "ssv2_vitb16_u16": _ref(
        _PUB,
        ("uniform", 16, None),
        3e-4,
        32,
        1,
        ALL_X1,
        50,
        SSV2_CHAIN,
        0.0,
        1.0,
        [-1, 1, -2, 2],
        (1, 3),
        0.1,
        batch="4 clips × 8 GPUs; auto-scaling off",
    ),
    "ssv2_vitb16_u8": _ref(
        "no published u8 config: its SSv2 ViT-B/16 u16 recipe at 8 frames",
        ("uniform", 8, None),
        3e-4,
        32,
        1,
        ALL_X1,
        50,
        SSV2_CHAIN,
        0.0,
        1.0,
        [-1, 1, -2, 2],
        (1, 3),
        0.1,
        batch="4 clips × 8 GPUs; auto-scaling off",
    ),
    "ssv2_vitl14_u32": _ref(
        _PUB,
        ("uniform", 32, None),
        1.5e-4,
        32,
        2,
        BACKBONE_X01,
        50,
        SSV2_CHAIN,
        0.1,
        1.0,
        [-1, -1, 1, 1, -2, 2, -3],
        (1, 3),
        0.1,
        lr=_AUTO32,
        batch="2 clips × 8 GPUs × accumulative_counts 2",
        lr_mult="paramwise_cfg backbone lr_mult 0.1: every parameter under the backbone module",
        adapters="dropout_rate not set: the backbone's default 0.1",
    ),
}
for _ds, _label, _classes in (("ucf101", "UCF101", 101), ("hmdb51", "HMDB51", 51)):
    for _t in (8, 32):
        REFERENCE[f"{_ds}_vitb16_u{_t}_split1"] = _ref(
            _PUB,
            ("uniform", _t, None),
            3e-4,
            128,
            1,
            ALL_X1,
            40,
            K400_CHAIN,
            0.1,
            0.5,
            [-1, 1] if _t == 8 else [-1, 1, -2, 2],
            (2, 3) if (_ds, _t) == ("hmdb51", 32) else (1, 3),
            batch="16 clips × 8 GPUs; auto-scaling off",
        )
    for _k in (2, 4, 8, 16):
        _batch = 8 if _k == 2 else 16
        REFERENCE[f"{_ds}_fewshot_k{_k}"] = _ref(
            f"no published few-shot config: its {_label} u8 split-1 recipe",
            ("uniform", 8, None),
            3e-4,
            128,
            1,
            ALL_X1,
            40,
            K400_CHAIN,
            0.1,
            0.5,
            [-1, 1],
            (1, 3),
            batch=_FEWSHOT.format(
                label=_label,
                k=_k,
                classes=_classes,
                n=_k * _classes,
                batch=_batch,
                steps128=_k * _classes // 128,
                steps=_k * _classes // _batch,
            ),
            differs={"batch"},
        )

PAPER = {  # published top-1 and GFLOPs (all test views) of the settings the paper reports
    "k400_vitb16_8x16x1": ("83.0", "422"),
    "k400_vitl14_8x16x1": ("86.3", "1946"),
    "k400_vitl14_32x4x1": ("87.2", "7783"),
    "ssv2_vitl14_u32": ("72.2", "7783"),
}
# Differences that remain in every config, with their reason (rows marked ≠ refer to these).
PRECISION_WHY = (
    "`train.amp: auto` uses bf16 on GPUs that support it (fp16 + dynamic loss scaling elsewhere): bf16 "
    "has fp32's range, so no step is skipped for overflow and no scale is tuned; "
    "`--set train.amp=fp16` reproduces the reference (fp16, dynamic loss scaling, no clipping)"
)


# --- this repository, read from the configs -----------------------------------------------------------
def category(name: str) -> str:
    if name == "temporal_embed":
        return "temporal embedding"
    if ".adapter_" in name:
        return "adapters"
    if name.startswith("backbone.norm.") or name.startswith("backbone.fc_norm."):
        return "final norm"
    if name.startswith("head."):
        return "classifier"
    return name


def optimizer_view(cfg) -> tuple[tuple, tuple]:
    """(lr multiplier per trainable category, (weight decay, categories without decay)) from the groups
    `zeroi2v.train.param_groups` makes for this config's model (shrunken: same names, same trainable set)."""
    model = build_model(cfg.model_config(cfg.model.num_classes or 2))
    mults, decay, exempt = {}, set(), set()
    for group in param_groups(model, cfg.train.weight_decay, cfg.train.lr_mult):
        for name in group["names"]:
            mults.setdefault(category(name), set()).add(group["lr_mult"])
            (exempt if group["weight_decay"] == 0 else decay).add(category(name))
            if group["weight_decay"]:
                rate = group["weight_decay"]
    mixed = {c for c, m in mults.items() if len(m) > 1}
    if mixed or exempt & decay:
        raise SystemExit(f"categories with mixed multipliers or decay: {sorted(mixed | (exempt & decay))}")
    return tuple(sorted((c, m.pop()) for c, m in mults.items())), (rate, tuple(sorted(exempt)))


def augmentation_view(cfg) -> tuple[str, ...]:
    """The training chain in the order it runs, from `train_transform(...).steps` with the config's data keys."""
    d, m = cfg.data, cfg.model
    chain = train_transform(
        d.img_size, (0.5,) * 3, (0.5,) * 3, specs_from_config(d, m.num_frames, (0.5,) * 3, (0.5,) * 3)[1]
    )
    ra = next((op for op in chain.ops if type(op).__name__ == "RandAugment"), None)
    words = {
        "resize": f"resize short side {d.short_side or round(d.img_size * 256 / 224)}",
        "rand_augment": ra and f"RandAugment {ra.num_layers} × {ra.magnitude:g} (p {ra.prob:g}, σ {ra.sigma:g})",
        "random_resized_crop": f"RandomResizedCrop {d.img_size} (area {d.crop_scale[0]:g}–{d.crop_scale[1]:g})",
        "flip": "flip 0.5" + (" + direction label map" if d.flip_label_map else ""),
        "random_erasing": f"RandomErasing {d.random_erasing:g} {d.erasing_mode}",
        "normalize": "normalise (CLIP mean/std)"
        if d.mean is None and "clip" in m.backbone
        else f"normalise (mean {d.mean}, std {d.std})",
    }
    return tuple(words[step] for step in chain.steps)


def ours(name: str) -> dict:
    full = load_config(CONFIGS / f"{name}.yaml")
    small = load_config(CONFIGS / f"{name}.yaml", SHRINK)
    m, d, t = full.model, full.data, full.train
    lr_mult, weight_decay = optimizer_view(small)
    return dict(
        sampling=(d.sampling, m.num_frames, d.frame_interval if d.sampling == "dense" else None),
        lr=t.lr,
        batch=(t.batch_size, t.accum_steps),
        lr_mult=lr_mult,
        weight_decay=weight_decay,
        optimizer=("AdamW", tuple(t.betas), t.clip_grad),
        schedule=(t.epochs, t.warmup_epochs, t.warmup_start, t.min_lr),
        augmentation=augmentation_view(full),
        adapters=(m.adapter_scale, m.adapter_dropout),
        offsets=tuple(m.head_offsets),
        head=(m.head_dropout, t.label_smoothing),
        views=(d.test_clips, d.test_crops),
        precision={
            "auto": "bf16 where the GPU supports it, else fp16 + dynamic loss scaling",
            "fp16": "fp16 + dynamic loss scaling",
            "bf16": "bf16",
            "none": "fp32",
        }[t.amp],
        img_size=d.img_size,
        shots=d.shots,
        cfg=full,
    )


# --- formatting ---------------------------------------------------------------------------------------
ROWS = [  # (key, label, formatter)
    (
        "sampling",
        "frames, sampling",
        lambda v: f"{v[1]} frames, " + (f"dense every {v[2]}" if v[0] == "dense" else "uniform (one per segment)"),
    ),
    ("lr", "lr (peak, for the global batch)", lambda v: re.sub(r"\.?0*e-0*", "e-", f"{v:.1e}")),
    (
        "batch",
        "global batch",
        lambda v: f"{v[0]}" + (f" ({v[1]} accumulation steps of {v[0] // v[1]})" if v[1] > 1 else ""),
    ),
    ("lr_mult", "lr multipliers", lambda v: ", ".join(f"{c} ×{m:g}" for c, m in v)),
    ("weight_decay", "weight decay", lambda v: f"{v[0]:g}; none on {', '.join(v[1])}"),
    (
        "optimizer",
        "optimizer",
        lambda v: (
            f"{v[0]} β {v[1][0]:g}/{v[1][1]:g}, " + ("no gradient clipping" if v[2] is None else f"clip {v[2]:g}")
        ),
    ),
    (
        "schedule",
        "epochs, schedule",
        lambda v: (
            f"{v[0]} epochs; warm-up {v[1]:g} epochs from {v[2]:g}× (per step) "
            f"× cosine to {v[3]:g} over all epochs (per epoch)"
        ),
    ),
    ("augmentation", "training augmentation, in order", lambda v: " → ".join(v)),
    ("adapters", "adapter scale, dropout", lambda v: f"{v[0]:g}, {v[1]:g}"),
    ("offsets", "STDHA offsets (heads 0..k-1)", lambda v: "[" + ", ".join(f"{o:+d}" for o in v) + "]"),
    ("head", "head dropout, label smoothing", lambda v: f"{v[0]:g}, {v[1]:g}"),
    (
        "views",
        "test views",
        lambda v: (
            f"{v[0]} clip{'s' if v[0] > 1 else ''} × {v[1]} "
            + ("center crop" if v[1] == 1 else "crops")
            + ", short side 224, softmax averaged"
        ),
    ),
    ("precision", "mixed precision", str),
]


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_section(name: str) -> list[str]:
    mine, ref = ours(name), REFERENCE[name]
    notes, deliberate = ref["notes"], ref["notes"].get("differs", set())
    title = title_of(mine)
    paper = PAPER.get(name)
    lines = [
        f"### `{name}` — {title}" + (f" (paper: {paper[0]} top-1, {paper[1]} GFLOPs)" if paper else ""),
        "",
        f"Reference: {ref['source']}.",
        "",
        "| setting | this repository | reference | |",
        "|---|---|---|---|",
    ]
    for key, label, show in ROWS:
        a, b = show(mine[key]), show(ref[key])
        if key in notes and key not in deliberate:
            b += f" — {notes[key]}"
        same = mine[key] == ref[key]
        mark = "=" if same else "≠ difference 1" if key == "precision" else "≠ see below" if key in deliberate else "≠"
        if not same and key not in deliberate and key != "precision":
            raise SystemExit(f"{name}: {label} differs from the reference without a stated reason: {a!r} vs {b!r}")
        lines.append(f"| {label} | {cell(a)} | {cell(b)} | {mark} |")
    if "batch" in deliberate:
        lines += ["", f"Batch: {notes['batch']}."]
    return lines + [""]


def title_of(mine) -> str:
    cfg = mine["cfg"]
    data = re.sub(r"_.*", "", Path(cfg.output).name)
    dataset = {
        "k400": "Kinetics-400",
        "ssv2": "Something-Something v2",
        "ucf101": "UCF101 split 1",
        "hmdb51": "HMDB51 split 1",
    }[data]
    tower = "CLIP ViT-L/14" if "large" in cfg.model.backbone else "CLIP ViT-B/16"
    shots = f", {mine['shots']}-shot" if mine["shots"] else ""
    return f"{dataset}, {tower}, {cfg.model.num_frames} frames{shots}"


def names() -> list[str]:
    order = ("k400", "ssv2", "ucf101", "hmdb51")
    found = sorted(
        (p.stem for p in CONFIGS.glob("*.yaml") if p.stem not in NOT_RECIPES),
        key=lambda n: (
            order.index(n.split("_")[0]) if n.split("_")[0] in order else len(order),
            "fewshot" in n,
            re.sub(r"\d+", lambda m: m.group().zfill(4), n),
        ),
    )
    missing = sorted(set(found) - set(REFERENCE))
    if missing:
        raise SystemExit(f"configs without reference values in benchmarks/recipes.py: {missing}")
    return found


HEADER = """# Training and reproducing the published settings

Generated by `python -m benchmarks.recipes` from the shipped configs (`configs/`, the same files as
`zeroi2v/configs/`); do not edit by hand. Every published setting has a ready config; the only keys
you edit are paths: `data.root`, `data.train_list`, `data.val_list` and `model.pretrained` (which
file: `docs/weights.md`). `zeroi2v train NAME` finds a shipped config by name
(`zeroi2v train --list-configs`).

| config | setting | test views | paper top-1 | GFLOPs (all views) |
|---|---|---|---|---|
"""

COMMON = """## What every config shares

- AdamW, β 0.9/0.999, weight decay 0.05 with none on the temporal embedding and the final norm (the
  trainable embeddings and norms; adapter and classifier biases are decayed, as in the reference), no
  gradient clipping.
- Warm-up linear from 0.1× over 2.5 epochs, updated every step, multiplied by a cosine over all
  epochs, updated every epoch, to 0 — the reference's LinearLR × CosineAnnealingLR.
- Adapters: ratio 0.25, four per block, down-projection trunc-normal(0.02) with zero bias,
  up-projection zero; classifier normal(0.01), zero bias; head dropout 0.5.
- `train.lr_mult` maps parameter-name prefixes to multipliers (the longest matching key wins; the
  classifier is `head.`, the ViT `backbone.`, the temporal embedding the top-level `temporal_embed`).
  A key with `*` or `?` is a glob over parameter names: `{"*.attn.qkv.adapter_in": 0.25}` slows the
  q/k/v-input adapter of every block (what `docs/research/stability.md` tries against divergence).
  The ViT-L configs set `{backbone: 0.1, temporal_embed: 0.1}`: everything the reference keeps under
  its backbone module (adapters, temporal embedding, final norm) at 0.1× and the classifier at 1×.
  The run logs each group (multiplier, decay, tensor count) when it starts.
- RandAugment is pytorchvideo's (as the reference wraps it): 4 distinct ops of 14, each applied with
  probability 0.5 at a level drawn from N(7, 0.5) on a 0–10 scale. The reference hands it uint8
  frames while its constants are on the 0–1 scale, so Rotate/Shear/Translate fill with 0.5 (black
  after rounding) and Solarize's threshold (0.3 at level 7) inverts every pixel above 0; both are
  reproduced as the reference does them, since they shaped the published numbers.
- RandomErasing is MMAction2's: one box per clip (area 2–33 %, aspect 0.3–3.3) on the uint8 frames,
  before normalisation; `const` fills grey 128, `rand` uniform noise.

## Differences that remain, and why

"""

DIFFERENCES = [
    f"**Mixed precision.** {PRECISION_WHY}.",
    "**RandomResizedCrop** is torchvision's: the same area (0.08–1) and log-uniform aspect (3/4–4/3) ranges "
    "and the same 10 tries, but a different fallback when all 10 fail (torchvision: the whole frame, or a "
    "central crop at the nearest allowed aspect; MMAction2: a central square), and crop and resize to "
    "224×224 are one antialiased bilinear step (MMAction2: crop, then an OpenCV bilinear resize without "
    "antialiasing). The short-side resize before it is antialiased too.",
    "**Last partial batch.** Each epoch uses whole global batches only (the reference's sampler also "
    "feeds the last, smaller batch); at most `batch_size - 1` clips of an epoch are left out, a "
    "different set each epoch.",
    "**ViT-L 32-frame learning rate.** The reference sets 3e-4 with `auto_scale_lr` (base 32), which "
    "MMEngine multiplies by (GPUs × clips per GPU) / 32 = 16 / 32 on the 8 GPUs × 2 clips it was run with "
    "(gradient accumulation is not counted), so the effective rate is 1.5e-4 at the global batch of 32 "
    "set here. Here `train.lr` is never scaled automatically: it is the rate for `train.batch_size`.",
    "**Few-shot.** The reference publishes no few-shot config; these use the UCF101/HMDB51 u8 recipe "
    "with a batch small enough for at least 12 steps per epoch on the smallest split (its lr, 3e-4, is "
    "not auto-scaled in the reference either).",
    "**Seeds.** The reference draws a random seed per run; here `train.seed` (0) fixes initialisation, "
    "data order, augmentation and few-shot draws, so a rerun gives the same weights.",
]

RUNNING = """## One GPU, several GPUs, several machines

```bash
# one process (a GPU if there is one, else the CPU)
zeroi2v train k400_vitb16_8x16x1 --set data.root=/data/k400/videos \\
    data.train_list=/data/k400/train.txt data.val_list=/data/k400/val.txt model.pretrained=/weights/ViT-B-16.pt

# N GPUs on one node: the same command under torchrun (DDP, NCCL)
torchrun --standalone --nproc_per_node N -m zeroi2v train k400_vitb16_8x16x1 --set ...

# 2 nodes × 8 GPUs: run on each node (node_rank 0 and 1)
torchrun --nnodes 2 --nproc_per_node 8 --node_rank $NODE_RANK --rdzv_backend c10d \\
    --rdzv_endpoint $MASTER_ADDR:29500 -m zeroi2v train k400_vitb16_8x16x1 --set ...
```

`train.batch_size` is the **global** batch: each of the N processes takes
`batch_size / (N × train.accum_steps)` clips per micro-step, and the optimizer steps once per
`train.accum_steps` micro-steps, so the recipe and its learning rate do not change with the number of
GPUs (the batch must divide evenly; the run says so in one line when it does not). The reference ran
every setting on 8 GPUs: the ViT-L 32-frame configs (global batch 32, `accum_steps: 2`) give 2 clips
per GPU per micro-step on 8 GPUs, 4 on 4 GPUs; raise `train.accum_steps` when a GPU cannot hold its
share, and keep `train.grad_checkpointing: true` (the ViT-L configs set it) to trade compute for
activation memory. Only rank 0 writes files; training metrics are averaged over all ranks; validation
is sharded so that every video is evaluated exactly once.

With dropout off, a 2-process run reproduces the single-process run at the same global batch to float
rounding (`tests/test_engine.py` checks it on CPU with gloo).

## What a run directory holds

```
runs/k400_vitb16_8x16x1/
  config.yaml            the fully resolved config (rerun = resume)
  metrics.jsonl          one line per finished epoch: train_loss, lr, skipped_videos, val_top1/top5/...
  training_curves.png    loss and val top-1 per epoch
  checkpoint/            last checkpoint: model-*.safetensors + state-*.pt (optimizer, scaler, RNG, position)
  best/                  model directory of the best validation epoch
  model.safetensors, model.json, classes.txt   the final model (the run dir is a model dir)
  metrics.json, per_class_accuracy.json, confusion_matrix.png   written by `zeroi2v eval`
```

## Resume, evaluation, released checkpoints

- Rerunning the same `zeroi2v train` command on an unfinished run resumes it exactly (model,
  optimizer, scaler, RNG, epoch and position inside the epoch). SIGTERM/SIGINT (preemption) save a
  checkpoint at the next step (during an evaluation: at its next batch, keeping the epoch's steps;
  under torchrun every process stops at the same step or batch, even when the signal reached only
  one of them) and exit with code 143/130, also when the signal reaches the whole
  process group, as SLURM, `timeout` and a terminal's Ctrl-C send it: DataLoader workers leave it to
  the main process (on SIGTERM a worker keeps serving for up to 10 s, then exits; a worker that the
  signal reaches while it is still starting dies of it, which the main process, having the same
  signal, takes as the same stop; under torchrun that case is still an error). A second run on the
  same output directory is refused. Ctrl-C in `zeroi2v demo` stops the whole demo; a rerun starts over.
- `zeroi2v eval RUN` runs the config's multi-view test (`data.test_clips × data.test_crops` views,
  softmax averaged) and writes `metrics.json`.
- `zeroi2v merge RUN OUT` folds the adapters; `zeroi2v export OUT model.onnx` for deployment.
- Checkpoints released with the paper: `zeroi2v convert-official CKPT OUT --preset NAME` takes the
  temporal-head offsets, adapter scale, frames and classes from the shipped config `NAME` (for example
  `ssv2_vitl14_u32`), which the checkpoint does not store, and refuses in one line a checkpoint whose
  tensors contradict that config (class count, temporal-embedding length). A 174-class (SSv2)
  checkpoint is refused without a preset rather than converted with the K400 settings.
- Few-shot: `data.shots: K` draws K training videos per class with `train.seed` (the same draw every
  time), writes it to `few_shot_train.txt` in the run directory, and validates on the full split.
"""


def overview_row(name: str) -> str:
    mine = ours(name)
    paper = PAPER.get(name, ("—", "—"))
    clips, crops = mine["views"]
    return f"| `{name}` | {title_of(mine)} | {clips} × {crops} | {paper[0]} | {paper[1]} |"


def render() -> str:
    found = names()
    parts = [HEADER + "\n".join(overview_row(n) for n in found) + "\n\n", COMMON]
    parts.append("".join(f"{i}. {text}\n" for i, text in enumerate(DIFFERENCES, 1)))
    parts.append(
        "\n## Each config next to the reference\n\n= : the same as the reference. ≠ : different, "
        "for the reason given (a numbered difference above, or the note under the table).\n\n"
    )
    for name in found:
        parts.append("\n".join(config_section(name)) + "\n")
    parts.append(RUNNING)
    return "".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/training.md is not up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.is_file() else ""
        print(
            "docs/training.md is up to date"
            if current == text
            else "docs/training.md is out of date: run python -m benchmarks.recipes"
        )
        return 0 if current == text else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)} ({len(names())} configs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
