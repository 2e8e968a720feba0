"""Every setting, defined once: typed dataclasses with defaults, allowed values and checks.

`ModelConfig`, `DataConfig` and `TrainConfig` are the single source of each key's type, default,
range and meaning (the one-line `help` is what `docs/config.md` shows). A run is `Config(output,
model, data, train)`, read from YAML plus `--set a.b=value` overrides; `create_model` takes a
`ModelConfig` (or its fields as keyword arguments), and a saved `model.json` is that dataclass.

The defaults reproduce the reference K400 ViT-B/16 recipe: a config file only says what differs.
Unknown keys, wrong types and out-of-range values are one-line `UserError`s naming the key (with
the closest valid key suggested for typos). Only PyYAML is imported here, so the CLI stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zeroi2v.errors import UserError

METHODS = ("zeroi2v", "aim", "st_adapter", "joint")  # built by zeroi2v.build
ADAPTER_POSITIONS = ("attn_in", "attn_out", "mlp_in", "mlp_out")  # the method's four (the default)
EXTRA_ADAPTER_POSITIONS = ("qkv_out",)  # also zero-cost (folds into the QKV projection), not in the paper
ST_ADAPTER_POSITIONS = ("attn", "mlp")  # the peer's adapters: before the attention and/or before the MLP
BOUNDARY_MODES = ("keep", "zero")
BUILTIN_WEIGHTS = "builtin:demo_vit"  # the image ViT shipped in the package (zeroi2v/assets)
SHIPPED_CONFIGS = Path(__file__).parent / "configs"  # ready configs (the repository's configs/ links here)


def opt(default, help: str, *, choices=None, low=None, high=None, open_high=False, length=None, each=None):
    """A config field: default, one line of meaning, and the checks of its value.

    `low`/`high`: numeric range (`open_high`: high excluded); `length`/`each`: a list of that many
    numbers, each satisfying (predicate, words).
    """
    meta = dict(help=help, choices=choices, low=low, high=high, open_high=open_high, length=length, each=each)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls, vars(sys.modules[__name__]))


@dataclass
class ModelConfig:
    """The video model: a timm ViT with STDHA temporal heads and linear adapters."""

    method: str = opt(
        "zeroi2v",
        "zeroi2v, or a peer for comparison (aim, st_adapter, joint; they add inference cost)",
        choices=METHODS,
    )
    backbone: str = opt("vit_base_patch16_clip_quickgelu_224", "timm ViT name (OpenAI CLIP: the *_quickgelu variants)")
    pretrained: str | None = opt(None, f"image weights file (timm/open_clip/OpenAI CLIP), or '{BUILTIN_WEIGHTS}'")
    num_frames: int = opt(8, "frames per clip", low=1)
    num_classes: int | None = opt(
        None, "classifier size; null: from the data (classes.txt or largest label + 1)", low=0
    )
    head_offsets: list[int] = opt([-1, 1], "STDHA: Δt of heads 0..k-1 (|Δt| < num_frames); [] = no temporal heads")
    stdha_blocks: list[int] | None = opt(
        None, "indices of the blocks with temporal heads (negative from the end); null: every block"
    )
    adapter_ratio: float = opt(0.25, "adapter bottleneck width / embedding width; 0: no adapters", low=0, high=16)
    adapter_scale: float = opt(0.5, "adapter residual scale s in x + s·up(down(x))")
    adapter_positions: list[str] = opt(
        list(ADAPTER_POSITIONS),
        "where adapters sit: attn_in, attn_out, mlp_in, "
        "mlp_out (the method's); qkv_out: after the QKV "
        "projection, a separate map for q, k and v",
    )
    st_adapter_positions: list[str] = opt(
        ["attn"],
        "method st_adapter only: its adapters before the attention (attn) and/or the MLP (mlp) of each "
        "block; [attn, mlp] with adapter_ratio 0.5 is its official SSv2 setting",
    )
    adapter_dropout: float = opt(
        0.0, "dropout between the adapter's two layers (training only)", low=0, high=1, open_high=True
    )
    temporal_embedding: bool = opt(True, "learned per-frame embedding added to every token")
    freeze: bool = opt(
        True, "train only adapters, temporal embedding, final norm and classifier; false: full fine-tuning"
    )
    head_dropout: float = opt(0.5, "dropout before the classifier", low=0, high=1, open_high=True)
    drop_path_rate: float = opt(0.0, "stochastic depth of the backbone", low=0, high=1, open_high=True)
    boundary: str = opt(
        "keep", "STDHA at clip ends: keep the own frame's K/V (reference) or zero", choices=BOUNDARY_MODES
    )
    timm_kwargs: dict = opt({}, "passed on to timm.create_model (depth, patch_size, embed_dim, ...)")

    def check(self, in_config: bool = False) -> ModelConfig:
        """Types, ranges and the checks between model keys (heads vs the backbone: `create_model`).
        Messages name `config model.KEY` for a run config, the argument name for `create_model`."""
        check_fields(self, "config model." if in_config else "")
        key, name = ("config model.", "model.") if in_config else ("", "")
        bad = [o for o in self.head_offsets if abs(o) >= self.num_frames]
        if bad:
            raise UserError(f"{key}head_offsets: |Δt| must be < {name}num_frames={self.num_frames}, got {bad}")
        unknown = [p for p in self.adapter_positions if p not in ADAPTER_POSITIONS + EXTRA_ADAPTER_POSITIONS]
        if unknown:
            raise UserError(
                f"{key}adapter_positions: unknown adapter positions {unknown}; "
                f"choose from {list(ADAPTER_POSITIONS + EXTRA_ADAPTER_POSITIONS)}"
            )
        where = self.st_adapter_positions
        if not where or len(set(where)) < len(where) or not set(where) <= set(ST_ADAPTER_POSITIONS):
            raise UserError(
                f"{key}st_adapter_positions: one or both of {list(ST_ADAPTER_POSITIONS)}, each once, got {where}"
            )
        clash = sorted({"num_classes", "drop_path_rate", "pretrained"} & set(self.timm_kwargs))
        if clash:
            raise UserError(
                f"{key}timm_kwargs: {clash} are zeroi2v's own arguments (create_model / model.* config "
                "keys), not timm arguments"
            )
        return self


@dataclass
class DataConfig:
    """Where the videos are, how clips are sampled and augmented, and the test views."""

    root: str | None = opt(None, "folder that relative video paths in the annotation files start from")
    train_list: str | None = opt(
        None, "training annotations: list file, class-folder tree, SSv2 JSON or UCF101/HMDB51 split file"
    )
    val_list: str | None = opt(None, "validation annotations (same formats)")
    sampling: str = opt(
        "dense", "dense: T frames every frame_interval; uniform: one frame per T segments", choices=("dense", "uniform")
    )
    frame_interval: int = opt(16, "frame step of dense sampling", low=1)
    test_clips: int = opt(3, "temporal views per video at test time", low=1)
    test_crops: int = opt(1, "spatial views at test time: 1 center crop or 3 crops", choices=(1, 3))
    img_size: int = opt(224, "input resolution (square)", low=1)
    short_side: int | None = opt(
        None, "training resize of the short side before cropping; null: img_size·256/224", low=1
    )
    crop_scale: list[float] = opt(
        [0.08, 1.0], "RandomResizedCrop area range [min, max]", length=2, each=(lambda s: 0 < s <= 1, "in (0, 1]")
    )
    shots: int | None = opt(None, "K: train on K videos per class (few-shot, drawn with train.seed)", low=1)
    rand_augment: bool = opt(True, "RandAugment (pytorchvideo semantics: each op with probability 0.5)")
    rand_augment_layers: int = opt(4, "RandAugment ops per clip", low=1)
    rand_augment_magnitude: float = opt(7.0, "RandAugment magnitude on a 0-10 scale", low=0, high=10)
    augment_order: str = opt(
        "k400",
        "augmentation order: k400 (RandAugment before the crop; also UCF/HMDB) or "
        "ssv2 (crop, flip, RandAugment, erasing)",
        choices=("k400", "ssv2"),
    )
    flip: bool = opt(True, "random horizontal flip")
    flip_label_map: str | None = opt(
        None,
        "null: a flipped clip keeps its label; auto (or ssv2, the same): a flipped clip of a class named "
        "with left/right or clockwise/counter-clockwise takes the mirrored class's label (SSv2)",
        choices=(None, "auto", "ssv2"),
    )
    random_erasing: float = opt(0.0, "RandomErasing probability", low=0, high=1)
    erasing_mode: str = opt(
        "const", "RandomErasing fill: const (grey, before normalisation) or rand (noise)", choices=("const", "rand")
    )
    mean: list[float] | None = opt(
        None, "normalisation mean (RGB, 0-1); null: the backbone's", length=3, each=(lambda v: True, "(RGB, 0-1 scale)")
    )
    std: list[float] | None = opt(
        None,
        "normalisation std (RGB, 0-1); null: the backbone's",
        length=3,
        each=(lambda v: v > 0, "> 0 (RGB, 0-1 scale)"),
    )
    backend: str = opt(
        "auto",
        "video decoder: auto (torchcodec when it can be imported, else PyAV), pyav, or torchcodec (an error "
        "when missing)",
        choices=("auto", "pyav", "torchcodec"),
    )
    cache_frames: bool = opt(
        False,
        "decode each training/validation video once and keep its frames in memory "
        "(small datasets: no decoding after the first epoch)",
    )
    max_broken_fraction: float = opt(0.1, "stop when more of an epoch's videos cannot be decoded", low=0, high=1)
    filename_tmpl: str = opt(
        "img_{:05d}.jpg", "frame file names in rawframe folders (MMAction2's filename_tmpl; .jpg or .png)"
    )
    start_index: int = opt(1, "number of the first frame file in rawframe folders (MMAction2: 1)", low=0)
    repeat_clips: int = opt(
        1, "training clips sampled and augmented from each decoded video (MAE-ST repeated sampling)", low=1
    )
    gpu_augment: bool = opt(
        False,
        "training: RandAugment, crop, flip, erasing and normalisation run batched on the training device; "
        "the loader only decodes and resizes",
    )


@dataclass
class TrainConfig:
    """Optimisation, schedule and the run's mechanics."""

    epochs: int = opt(40, "training epochs", low=1)
    batch_size: int = opt(64, "global batch (all processes, after accumulation)", low=1)
    lr: float = opt(3.0e-4, "peak learning rate for train.batch_size (no automatic scaling)")
    lr_mult: dict = opt(
        {},
        "learning-rate multipliers by parameter-name prefix or glob, e.g. {backbone: 0.1}, {'*.qkv.adapter_in': 0.25}",
    )
    weight_decay: float = opt(0.05, "AdamW weight decay (none on embeddings and norms)", low=0, high=10)
    betas: list[float] = opt([0.9, 0.999], "AdamW betas", length=2, each=(lambda b: 0 <= b < 1, "in [0, 1)"))
    warmup_epochs: float = opt(2.5, "linear warm-up length (capped at the run length)", low=0)
    warmup_start: float = opt(0.1, "warm-up starts at this fraction of lr", low=0, high=1)
    min_lr: float = opt(0.0, "the cosine decays to this", low=0)
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing", low=0, high=1, open_high=True)
    accum_steps: int = opt(1, "gradient accumulation steps per optimizer step", low=1)
    clip_grad: float | None = opt(None, "max gradient norm; null: no clipping")
    amp: str = opt(
        "auto", "mixed precision: auto (bf16/fp16 on GPU, none on CPU)", choices=("auto", "bf16", "fp16", "none")
    )
    grad_checkpointing: bool = opt(False, "recompute every block in backward (least memory)")
    compile: bool = opt(False, "torch.compile the model (fullgraph)")
    tensorboard: bool = opt(False, "write TensorBoard event files to OUTPUT/tensorboard (needs tensorboard)")
    seed: int = opt(0, "seed of initialisation, data order, augmentation and few-shot draws")
    num_workers: int = opt(4, "DataLoader worker processes", low=0)
    eval_every: int = opt(1, "validate every N epochs (single center view)", low=1)
    max_bad_steps: int = opt(0, "non-finite losses skipped before the run stops", low=0)


@dataclass
class Config:
    """One run: where it writes, and its model, data and training settings."""

    output: str = opt("runs/default", "run directory")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self) -> Config:
        check_fields(self, "config ")
        self.model.check(in_config=True)
        check_fields(self.data, "config data.")
        check_fields(self.train, "config train.")
        m, d, t = self.model, self.data, self.train
        if not str(self.output).strip():
            raise UserError("config output: must be a directory path, got an empty string")
        if t.lr <= 0:
            raise UserError(f"config train.lr: must be > 0, got {t.lr}")
        if m.num_classes == 0:
            raise UserError("config model.num_classes: must be >= 1 or null (from the data), got 0")
        if t.min_lr > t.lr:
            raise UserError(f"config train.min_lr: must be in [0, {t.lr}] (train.lr), got {t.min_lr}")
        if t.clip_grad is not None and t.clip_grad <= 0:
            raise UserError(f"config train.clip_grad: must be > 0 or null, got {t.clip_grad}")
        bad = {k: v for k, v in t.lr_mult.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0}
        if bad or not all(isinstance(k, str) for k in t.lr_mult):
            raise UserError(
                f"config train.lr_mult: must map parameter-name prefixes or globs to numbers >= 0, got {t.lr_mult}"
            )
        if d.crop_scale[0] > d.crop_scale[1]:
            raise UserError(f"config data.crop_scale: must be [min, max] with min <= max, got {d.crop_scale}")
        check_filename_tmpl(d.filename_tmpl)
        if d.short_side is not None and d.short_side < d.img_size:
            raise UserError(f"config data.short_side={d.short_side} is smaller than data.img_size={d.img_size}")
        named = re.search(r"patch(\d+)", m.backbone)
        patch = m.timm_kwargs.get("patch_size") or (int(named.group(1)) if named else None)
        if isinstance(patch, int) and patch > 0 and d.img_size % patch:
            raise UserError(f"config data.img_size={d.img_size} is not a multiple of the patch size {patch}")
        if "img_size" in m.timm_kwargs and m.timm_kwargs["img_size"] != d.img_size:
            raise UserError(
                f"config model.timm_kwargs.img_size={m.timm_kwargs['img_size']} differs from data.img_size={d.img_size}"
            )
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_config(self, num_classes: int | None = None) -> ModelConfig:
        """The model part as `create_model` takes it: the input size comes from data.img_size."""
        return dataclasses.replace(
            self.model,
            num_classes=self.model.num_classes if num_classes is None else num_classes,
            timm_kwargs={**self.model.timm_kwargs, "img_size": self.data.img_size},
        )


def check_filename_tmpl(tmpl: str) -> None:
    """data.filename_tmpl must name one frame file per number, in the frame folder itself."""
    try:
        names = {tmpl.format(i) for i in (1, 2, 10, 100)}
    except (IndexError, KeyError, ValueError):
        names = set()
    if len(names) != 4 or "/" in tmpl or "\\" in tmpl:
        raise UserError(
            f"config data.filename_tmpl: must be a file name with one number field, e.g. 'img_{{:05d}}.jpg' "
            f"or '{{:06d}}.png', got {tmpl!r}"
        )


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


# --- checking values against the field definitions --------------------------------------------------
def _arms(tp) -> tuple:
    return typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else (tp,)


def _is(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_is(v, item) for v in value)
    return isinstance(value, origin or tp)


def _type_words(tp) -> str:
    return "/".join(
        "null"
        if a is type(None)
        else "mapping"
        if a is dict
        else f"list[{typing.get_args(a)[0].__name__}]"
        if typing.get_origin(a) is list
        else a.__name__
        for a in _arms(tp)
    )


def check_fields(obj, label: str) -> None:
    """Check each field of a config dataclass against its type and metadata; ints become floats where
    a float is expected. Messages start with `label` + the field name (`config data.img_size: ...`)."""
    for f in dataclasses.fields(obj):
        tp, value, meta, key = _hints(type(obj))[f.name], getattr(obj, f.name), f.metadata, f"{label}{f.name}"
        if dataclasses.is_dataclass(tp):
            continue
        arms = _arms(tp)
        if not any(_is(value, arm) for arm in arms):
            if any(typing.get_origin(a) is list for a in arms) and isinstance(value, list):
                item = typing.get_args(next(a for a in arms if typing.get_origin(a) is list))[0]
                if meta.get("length"):
                    raise UserError(f"{key}: must be {meta['length']} numbers {meta['each'][1]}, got {value}")
                words = {int: "integers", float: "numbers", str: "strings"}[item]
                raise UserError(f"{key}: must be a list of {words}, got {value}")
            raise UserError(f"{key}: expected {_type_words(tp)}, got {value!r}")
        if float in arms and isinstance(value, int):
            value = float(value)
            setattr(obj, f.name, value)
        if isinstance(value, list) and float in [typing.get_args(a)[0] for a in arms if typing.get_origin(a) is list]:
            value = [float(v) for v in value]
            setattr(obj, f.name, value)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key}: must be a finite number, got {value}")
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise UserError(f"{key}: must be one of {list(meta['choices'])}, got {value!r}")
        if meta.get("length") and value is not None:
            predicate, words = meta["each"]
            if len(value) != meta["length"] or not all(predicate(v) for v in value):
                raise UserError(f"{key}: must be {meta['length']} numbers {words}, got {value}")
        low, high = meta.get("low"), meta.get("high")
        if value is None or not isinstance(value, (int, float)) or (low is None and high is None):
            continue
        or_null = " or null" if type(None) in arms else ""
        if high is None and value < low:
            raise UserError(f"{key}: must be >= {low}{or_null}, got {value}")
        if high is not None and not (low <= value < high if meta["open_high"] else low <= value <= high):
            raise UserError(f"{key}: must be in [{low}, {high}{')' if meta['open_high'] else ']'}, got {value}")


def describe() -> list[tuple[str, str, object, str]]:
    """(key, type, default, meaning) of every config key, in definition order."""
    rows = [("output", "str", Config().output, dataclasses.fields(Config)[0].metadata["help"])]
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append(
                (f"{section}.{f.name}", _type_words(_hints(cls)[f.name]), getattr(cls(), f.name), f.metadata["help"])
            )
    return rows


def _choices(key: str):
    if "." not in key:
        return None
    section, name = key.split(".", 1)
    return next(f.metadata.get("choices") for f in dataclasses.fields(SECTIONS[section]) if f.name == name)


def config_markdown() -> str:
    """docs/config.md: every key with its type, default and meaning (generated: `python -m zeroi2v.config`)."""
    lines = [
        "# Config reference",
        "",
        "Generated from `zeroi2v/config.py` by `python -m zeroi2v.config docs/config.md`; do not edit.",
        "",
        "A run config is YAML with the sections `model`, `data`, `train` (and `output`); a file only says what "
        "differs from these defaults, which are the reference K400 ViT-B/16 recipe. `--set KEY=VALUE` "
        "overrides any key (repeatable; values are YAML; the last value of a key wins). Unknown keys are "
        "errors. Where a key allows only some values, they are listed (`allowed:`).",
        "",
        "**Paths.** Relative paths in a config file (`output`, `data.root`, `data.train_list`, "
        "`data.val_list`, `model.pretrained`) are relative to the config file's folder; `--set` values are "
        "relative to the current directory; the shipped configs used by name (`zeroi2v train "
        "k400_vitb16_8x16x1`) take theirs from the current directory. A run's `config.yaml` stores them "
        "absolute, so `zeroi2v train RUN/config.yaml` resumes the run from any directory. An `output` that is "
        "or lies inside the data (`data.root`, a class-folder tree) is refused.",
        "",
        "**CPU or GPU.** `zeroi2v train` has no device key: it uses the GPU when PyTorch sees one "
        "(`torch.cuda.is_available()`), else the CPU (`CUDA_VISIBLE_DEVICES=` hides the GPUs); under "
        "`torchrun`, process N uses GPU `LOCAL_RANK`. `train.amp: auto` then picks bf16/fp16 on the GPU and "
        "full precision on the CPU. `eval`, `predict` and `features` take `--device cpu|cuda|cuda:N`.",
        "",
    ]
    section = None
    for key, kind, default, meaning in describe():
        if key.split(".")[0] != section:
            section = key.split(".")[0]
            lines += ["", f"## {section}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        choices = _choices(key)
        if choices:
            meaning += " (allowed: " + ", ".join(f"`{'null' if c is None else c}`" for c in choices) + ")"
        lines.append(f"| `{key}` | {kind} | `{shown}` | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


# --- reading YAML and overrides -------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """Safe YAML where `3e-4` is a float, as in YAML 1.2 and Python (PyYAML's 1.1 rules read a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


VALID_KEYS = {"output"} | {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
MAPPING_KEYS = {"model.timm_kwargs", "train.lr_mult"}  # their own keys are free-form


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in MAPPING_KEYS:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def set_key(cfg: Config, dotted: str, value) -> None:
    """Set one dotted key; `model.timm_kwargs.depth=2` sets one entry of a mapping key."""
    head, _, leaf = dotted.rpartition(".")
    if head in MAPPING_KEYS:
        section, name = head.split(".")
        current = getattr(getattr(cfg, section), name)
        setattr(getattr(cfg, section), name, {**(current if isinstance(current, dict) else {}), leaf: value})
        return
    if dotted in SECTIONS:
        first = dataclasses.fields(SECTIONS[dotted])[0].name
        raise UserError(f"config {dotted}: expected a mapping of keys (e.g. {dotted}.{first}), got {value!r}")
    if dotted not in VALID_KEYS:
        close = difflib.get_close_matches(dotted, sorted(VALID_KEYS), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown config key '{dotted}'{hint}")
    if "." in dotted:
        section, name = dotted.split(".")
        setattr(getattr(cfg, section), name, value)
    else:
        setattr(cfg, dotted, value)


def parse_override(text: str) -> tuple[str, object]:
    """`a.b=value`, value parsed as YAML (lists, null, booleans, numbers)."""
    if "=" not in text:
        raise UserError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {key}: cannot parse value {raw!r}") from None
    return key.strip(), value


def read_yaml_file(path, what: str = "config") -> dict:
    """A YAML mapping from a file, every way it can be wrong a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a {what} file (YAML)")
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text (YAML) file") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        raise UserError(f"{path}: invalid YAML" + (f" at line {where.line + 1}" if where else "")) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of sections (model, data, train)")
    return data


PATH_KEYS = ("output", "data.root", "data.train_list", "data.val_list", "model.pretrained")


def resolve_path(value, folder: Path):
    """A path key's value made absolute: `~` expanded, a relative path taken from `folder`."""
    if not isinstance(value, str) or not value.strip() or value.startswith("builtin:"):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else Path(os.path.abspath(folder / path)))


def _path_folder(path) -> Path:
    """Where relative paths of a config file start: the file's folder, except for the shipped configs
    (templates used by name: the current directory)."""
    folder = Path(path).resolve().parent
    return Path.cwd() if folder == SHIPPED_CONFIGS.resolve() else Path(path).absolute().parent


def _run_folder(path) -> Path | None:
    """The run directory when `path` is a run's own config.yaml (a model.json of ours beside it)."""
    path = Path(path)
    marker = path.parent / "model.json"
    if path.name != "config.yaml" or not marker.is_file():
        return None
    try:
        return path.absolute().parent if '"zeroi2v"' in marker.read_text(encoding="utf-8") else None
    except (OSError, UnicodeDecodeError):
        return None


def load_config(path=None, overrides=(), base: dict | None = None) -> Config:
    """Defaults <- `base` <- YAML file <- overrides (in order, the last value of a key wins), checked.

    Path keys (`PATH_KEYS`) come out absolute: relative paths in the file are taken from the file's
    folder (the shipped configs: from the current directory), `--set` values and defaults from the
    current directory. A run's own config.yaml whose `output` is relative (written before 0.3) means
    its own folder."""
    cfg = Config()
    sources = [(base, Path.cwd())] if base else []
    if path is not None:
        data, run_folder = read_yaml_file(path), _run_folder(path)
        relative = isinstance(data.get("output"), str) and not Path(data["output"]).expanduser().is_absolute()
        if run_folder is not None and relative:
            data["output"] = str(run_folder)
        sources.append((data, _path_folder(path)))
    for source, folder in sources:
        source = {k: ({} if k in SECTIONS and v is None else v) for k, v in source.items()}  # an empty section
        for key, value in flatten(source).items():
            if not (key in SECTIONS and isinstance(value, dict)):
                set_key(cfg, key, resolve_path(value, folder) if key in PATH_KEYS else value)
    for text in overrides:
        key, value = parse_override(text)
        set_key(cfg, key, resolve_path(value, Path.cwd()) if key in PATH_KEYS else value)
    for key in PATH_KEYS:  # defaults (output: runs/default) from the current directory
        section, _, name = key.rpartition(".")
        holder = getattr(cfg, section) if section else cfg
        setattr(holder, name, resolve_path(getattr(holder, name), Path.cwd()))
    return cfg.check()


def check_output_outside_data(cfg: Config) -> None:
    """A run writes best/, checkpoint/, config.yaml and classes.txt into `output`: refuse an output that
    is, or lies inside, the data (data.root, a class-folder tree) or is the folder of a list file, before
    anything is written (a class tree would gain classes `best` and `checkpoint`)."""
    out = Path(os.path.abspath(Path(str(cfg.output)).expanduser()))
    d = cfg.data
    trees = [("data.root", d.root)] + [
        (k, v) for k, v in (("data.train_list", d.train_list), ("data.val_list", d.val_list)) if v and Path(v).is_dir()
    ]
    for key, value in trees:
        if value:
            tree = Path(os.path.abspath(value))
            if out == tree or tree in out.parents:
                raise UserError(
                    f"output {out} is inside the data ({key}={tree}); a run writes its own folders there: "
                    "choose an output outside the data"
                )
    for key, value in (("data.train_list", d.train_list), ("data.val_list", d.val_list)):
        if value and not Path(value).is_dir() and out == Path(os.path.abspath(value)).parent:
            raise UserError(f"output {out} is the folder of {key} ({value}); choose an output folder of its own")


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


if __name__ == "__main__":  # regenerate docs/config.md
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/config.md")
    target.write_text(config_markdown(), encoding="utf-8")
    print(f"wrote {target}")
