"""Run configuration: YAML file + `--set a.b=value` overrides, validated into one nested dict.

The defaults reproduce the reference K400 ViT-B/16 recipe (PAPER.md §5): a config file only says
what differs. Unknown keys, wrong types and inconsistent values are one-line `UserError`s (with the
closest valid key suggested for typos). The fully resolved config is saved as `config.yaml` in the
run directory, so a run can always be reproduced and resumed from it.
"""
from __future__ import annotations

import copy
import difflib
import math
import re
from pathlib import Path

import yaml

from zeroi2v.errors import UserError

class _Loader(yaml.SafeLoader):
    """Safe YAML where `3e-4` is a float, as in YAML 1.2 and Python (PyYAML's 1.1 rules read a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)


DEFAULTS: dict = {
    "output": "runs/default",
    "model": {
        "method": "zeroi2v",           # zeroi2v | aim | st_adapter | joint (peer baselines, zeroi2v/baselines)
        "backbone": "vit_base_patch16_clip_quickgelu_224",
        "pretrained": None,            # path to image weights (see docs/weights.md)
        "num_frames": 8,
        "num_classes": None,           # null: from the data (classes.txt / largest label + 1)
        "head_offsets": [-1, 1],       # STDHA Δt for heads 0..k-1
        "adapter_ratio": 0.25,
        "adapter_scale": 0.5,
        "adapter_positions": ["attn_in", "attn_out", "mlp_in", "mlp_out"],
        "adapter_dropout": 0.0,
        "temporal_embedding": True,
        "freeze": True,                # false: full fine-tuning
        "head_dropout": 0.5,
        "drop_path_rate": 0.0,
        "boundary": "keep",            # STDHA at clip ends: keep own frame (reference) | zero
        "timm_kwargs": {},
    },
    "data": {
        "root": None,
        "train_list": None,
        "val_list": None,
        "sampling": "dense",           # dense | uniform
        "frame_interval": 16,
        "test_clips": 3,
        "test_crops": 1,               # 1 center | 3 three-crop
        "img_size": 224,
        "short_side": None,            # train-time resize before cropping; null: img_size·256/224
        "crop_scale": [0.08, 1.0],     # RandomResizedCrop area range
        "shots": None,                 # K: K-shot training subset per class (seeded by train.seed)
        "rand_augment": True,
        "flip": True,
        "flip_label_map": None,        # null | auto (swap classes named left/right, SSv2)
        "random_erasing": 0.0,
        "mean": None,                  # null: the backbone's pretraining statistics
        "std": None,
        "backend": "auto",             # auto | pyav | torchcodec
        "max_broken_fraction": 0.1,    # stop if more of an epoch's samples fail to decode
    },
    "train": {
        "epochs": 40,
        "batch_size": 64,              # global batch (all processes, after accumulation)
        "lr": 3.0e-4,                  # for train.batch_size; the reference is 3e-4 at 64, scale linearly
        "weight_decay": 0.05,
        "betas": [0.9, 0.999],
        "warmup_epochs": 2.5,
        "warmup_start": 0.1,           # warm-up starts at this fraction of lr
        "min_lr": 0.0,                 # cosine ends here
        "label_smoothing": 0.0,
        "accum_steps": 1,
        "clip_grad": None,             # max grad norm, or null
        "amp": "auto",                 # auto (bf16/fp16 on GPU, off on CPU) | bf16 | fp16 | none
        "grad_checkpointing": False,
        "seed": 0,
        "num_workers": 4,
        "eval_every": 1,               # validate every N epochs (single center view)
        "max_bad_steps": 0,            # non-finite losses skipped before the run stops
    },
}

# Keys whose default is null (or that accept several types) and the types they take.
TYPES = {
    "model.pretrained": (str, type(None)), "model.num_classes": (int, type(None)),
    "model.timm_kwargs": (dict,), "data.root": (str, type(None)), "data.train_list": (str, type(None)),
    "data.val_list": (str, type(None)), "data.short_side": (int, type(None)), "data.shots": (int, type(None)),
    "data.flip_label_map": (str, type(None)), "data.mean": (list, type(None)), "data.std": (list, type(None)),
    "train.clip_grad": (int, float, type(None)), "model.adapter_ratio": (int, float),
    "model.adapter_scale": (int, float), "train.lr": (int, float), "train.weight_decay": (int, float),
    "train.warmup_epochs": (int, float), "train.min_lr": (int, float), "train.label_smoothing": (int, float),
    "model.drop_path_rate": (int, float), "model.head_dropout": (int, float), "model.adapter_dropout": (int, float),
    "data.max_broken_fraction": (int, float), "train.warmup_start": (int, float),
}
CHOICES = {
    "data.sampling": ("dense", "uniform"), "data.test_crops": (1, 3), "train.amp": ("auto", "bf16", "fp16", "none"),
    "data.backend": ("auto", "pyav", "torchcodec"), "model.boundary": ("keep", "zero"),
    "data.flip_label_map": (None, "auto", "ssv2"),
    "model.method": ("zeroi2v", "aim", "st_adapter", "joint"),
}


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name != "model.timm_kwargs":
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


VALID_KEYS = set(flatten(DEFAULTS))
SECTIONS = ("model", "data", "train")


def _set(tree: dict, dotted: str, value) -> None:
    if dotted.startswith("model.timm_kwargs.") and len(dotted.split(".")) == 3:  # one timm argument
        current = tree["model"]["timm_kwargs"]
        tree["model"]["timm_kwargs"] = {**(current if isinstance(current, dict) else {}), dotted.split(".")[2]: value}
        return
    if dotted in SECTIONS:
        raise UserError(f"config {dotted}: expected a mapping of keys (e.g. {dotted}.{next(iter(DEFAULTS[dotted]))}), "
                        f"got {value!r}")
    if dotted not in VALID_KEYS:
        close = difflib.get_close_matches(dotted, sorted(VALID_KEYS), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown config key '{dotted}'{hint}")
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node[part]
    node[leaf] = value


def parse_override(text: str) -> tuple[str, object]:
    """`a.b=value`, value parsed as YAML (lists, null, booleans, numbers)."""
    if "=" not in text:
        raise UserError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {key}: cannot parse value {raw!r}") from None
    return key.strip(), value


def load_config(path=None, overrides=(), base: dict | None = None) -> dict:
    """DEFAULTS <- `base` <- YAML file <- overrides, then validated."""
    cfg = copy.deepcopy(DEFAULTS)
    for source in ([base] if base else []):
        for key, value in flatten(source).items():
            _set(cfg, key, value)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            data = _yaml(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a UTF-8 text (YAML) file") from None
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            raise UserError(f"{path}: invalid YAML" + (f" at line {where.line + 1}" if where else "")) from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: a config must be a mapping of sections (model, data, train)")
        data = {k: ({} if k in SECTIONS and v is None else v) for k, v in data.items()}  # an empty section
        for key, value in flatten(data).items():
            if isinstance(value, dict) and key in SECTIONS:
                continue
            _set(cfg, key, value)
    for text in overrides:
        _set(cfg, *parse_override(text))
    validate(cfg)
    return cfg


def validate(cfg: dict) -> None:
    """Types, choices and ranges of every key, and the checks between keys that need no model (the
    number of heads is checked by `create_model`)."""
    for key, value in flatten(cfg).items():
        default = flatten(DEFAULTS)[key]
        allowed = TYPES.get(key) or (type(default),)
        if isinstance(value, bool) and bool not in allowed:
            ok = False
        elif isinstance(value, int) and float in allowed:
            ok = True
        else:
            ok = isinstance(value, allowed)
        if not ok:
            names = "/".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise UserError(f"config {key}: expected {names}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"config {key}: must be a finite number, got {value}")
        if key in CHOICES and value not in CHOICES[key]:
            raise UserError(f"config {key}: must be one of {list(CHOICES[key])}, got {value!r}")
    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    positive = {"model.num_frames": m["num_frames"], "data.img_size": d["img_size"], "data.test_clips": d["test_clips"],
                "train.epochs": t["epochs"], "train.batch_size": t["batch_size"], "train.accum_steps": t["accum_steps"],
                "data.frame_interval": d["frame_interval"], "train.eval_every": t["eval_every"]}
    for key, value in positive.items():
        if value < 1:
            raise UserError(f"config {key}: must be >= 1, got {value}")
    if t["lr"] <= 0:
        raise UserError(f"config train.lr: must be > 0, got {t['lr']}")
    ranges = {  # key: (value, low, high, high inclusive)
        "model.adapter_ratio": (m["adapter_ratio"], 0, 16, True), "model.head_dropout": (m["head_dropout"], 0, 1, False),
        "model.adapter_dropout": (m["adapter_dropout"], 0, 1, False),
        "model.drop_path_rate": (m["drop_path_rate"], 0, 1, False),
        "train.label_smoothing": (t["label_smoothing"], 0, 1, False), "train.weight_decay": (t["weight_decay"], 0, 10, True),
        "train.warmup_epochs": (t["warmup_epochs"], 0, t["epochs"], True),
        "train.warmup_start": (t["warmup_start"], 0, 1, True), "train.min_lr": (t["min_lr"], 0, t["lr"], True),
        "data.max_broken_fraction": (d["max_broken_fraction"], 0, 1, True),
        "data.random_erasing": (d["random_erasing"], 0, 1, True),
    }
    for key, (value, low, high, inclusive) in ranges.items():
        if not (low <= value <= high if inclusive else low <= value < high):
            raise UserError(f"config {key}: must be in [{low}, {high}{']' if inclusive else ')'}, got {value}")
    _numbers("train.betas", t["betas"], 2, lambda b: 0 <= b < 1, "in [0, 1)")
    _numbers("data.crop_scale", d["crop_scale"], 2, lambda s: 0 < s <= 1, "in (0, 1]")
    if d["crop_scale"][0] > d["crop_scale"][1]:
        raise UserError(f"config data.crop_scale: must be [min, max] with min <= max, got {d['crop_scale']}")
    for key in ("mean", "std"):
        if d[key] is not None:
            _numbers(f"data.{key}", d[key], 3, (lambda v: v > 0) if key == "std" else (lambda v: True),
                     "> 0 (RGB, 0-1 scale)" if key == "std" else "(RGB, 0-1 scale)")
    unknown = [p for p in m["adapter_positions"] if p not in DEFAULTS["model"]["adapter_positions"]]
    if unknown:
        raise UserError(f"config model.adapter_positions: unknown {unknown}; "
                        f"choose from {DEFAULTS['model']['adapter_positions']}")
    if t["clip_grad"] is not None and t["clip_grad"] <= 0:
        raise UserError(f"config train.clip_grad: must be > 0 or null, got {t['clip_grad']}")
    if t["max_bad_steps"] < 0:
        raise UserError(f"config train.max_bad_steps: must be >= 0, got {t['max_bad_steps']}")
    if d["short_side"] is not None and d["short_side"] < d["img_size"]:
        raise UserError(f"config data.short_side={d['short_side']} is smaller than data.img_size={d['img_size']}")
    if not str(cfg["output"]).strip():
        raise UserError("config output: must be a directory path, got an empty string")
    if m["num_classes"] is not None and m["num_classes"] < 1:
        raise UserError(f"config model.num_classes: must be >= 1, got {m['num_classes']}")
    if not all(isinstance(o, int) and not isinstance(o, bool) for o in m["head_offsets"]):
        raise UserError(f"config model.head_offsets: must be a list of integers, got {m['head_offsets']}")
    bad = [o for o in m["head_offsets"] if abs(o) >= m["num_frames"]]
    if bad:
        raise UserError(f"config model.head_offsets: |Δt| must be < model.num_frames={m['num_frames']}, got {bad}")
    if d["shots"] is not None and d["shots"] < 1:
        raise UserError(f"config data.shots: must be >= 1 or null, got {d['shots']}")
    if t["num_workers"] < 0:
        raise UserError(f"config train.num_workers: must be >= 0, got {t['num_workers']}")
    named = re.search(r"patch(\d+)", m["backbone"])
    patch = m["timm_kwargs"].get("patch_size") or (int(named.group(1)) if named else None)
    if patch and d["img_size"] % patch:
        raise UserError(f"config data.img_size={d['img_size']} is not a multiple of the patch size {patch}")
    if "img_size" in m["timm_kwargs"] and m["timm_kwargs"]["img_size"] != d["img_size"]:
        raise UserError(f"config model.timm_kwargs.img_size={m['timm_kwargs']['img_size']} differs from data.img_size={d['img_size']}")


def _numbers(key: str, value: list, count: int, ok, what: str) -> None:
    """A list of `count` numbers, each satisfying `ok`."""
    if (len(value) != count or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not all(ok(v) for v in value)):
        raise UserError(f"config {key}: must be {count} numbers {what}, got {value}")


def model_kwargs(cfg: dict, num_classes: int | None = None) -> dict:
    """create_model arguments from a config (the image size comes from data.img_size)."""
    m = cfg["model"]
    timm_kwargs = {**m["timm_kwargs"], "img_size": cfg["data"]["img_size"]}
    return dict(backbone=m["backbone"], num_frames=m["num_frames"],
                num_classes=num_classes if num_classes is not None else m["num_classes"],
                pretrained=m["pretrained"], head_offsets=list(m["head_offsets"]), adapter_ratio=m["adapter_ratio"],
                adapter_scale=m["adapter_scale"], temporal_embedding=m["temporal_embedding"], freeze=m["freeze"],
                adapter_positions=list(m["adapter_positions"]), adapter_dropout=m["adapter_dropout"],
                head_dropout=m["head_dropout"], drop_path_rate=m["drop_path_rate"], boundary=m["boundary"],
                timm_kwargs=timm_kwargs)


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
