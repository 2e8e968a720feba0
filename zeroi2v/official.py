"""Import the checkpoints released with the ZeroI2V paper (MMAction2 / MMEngine format).

Their backbone is OpenAI-CLIP shaped (`backbone.conv1`, `backbone.transformer.resblocks.{i}.attn.in_proj_*`,
...), so the backbone goes through timm's own OpenAI-CLIP converter after renaming `backbone.` to
`visual.`. The four adapters map onto our adapter slots:

    T_Adapter_in    -> attn.qkv.adapter_in   (before attention)
    S_Adapter       -> attn.proj.adapter_out (after attention)
    MLP_Adapter     -> mlp.fc1.adapter_in    (before the MLP)
    MLP_Adapter_out -> mlp.fc2.adapter_out   (after the MLP)

with `D_fc1`/`D_fc2` -> `down`/`up`. Width, depth, patch and input size, frame count and adapter
presence/ratio are read off the tensors; heads = width / 64. The adapter scale and the temporal head
offsets are not stored in the checkpoint: they default to the reference K400 values (0.5; ViT-B: heads
0,1 -> -1,+1, ViT-L: heads 0,1 -> -1 and 2,3 -> +1) and are overridable, either as `head_offsets` or
as the reference config's own `stdha_cfg` (channel folds, see `head_offsets_from_stdha_cfg`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from timm.models.vision_transformer import checkpoint_filter_fn

from zeroi2v.build import save_pretrained
from zeroi2v.config import load_config
from zeroi2v.errors import UserError
from zeroi2v.model import ZeroI2V, create_model
from zeroi2v.reparam import reparameterize
from zeroi2v.weights import read_state_dict

ADAPTER_SLOTS = {
    "T_Adapter_in": ("attn.qkv.adapter_in", "attn_in"),
    "S_Adapter": ("attn.proj.adapter_out", "attn_out"),
    "MLP_Adapter": ("mlp.fc1.adapter_in", "mlp_in"),
    "MLP_Adapter_out": ("mlp.fc2.adapter_out", "mlp_out"),
}
ADAPTER_LAYERS = {"D_fc1": "down", "D_fc2": "up"}
IGNORED = ("backbone.proj",)  # CLIP's text projection: unused by the video head
# timm names of the OpenAI CLIP towers, by (width, depth, patch); other shapes use the B/16 recipe with overrides.
TIMM_CLIP_TOWERS = {
    (768, 12, 16): "vit_base_patch16_clip_quickgelu_224",
    (768, 12, 32): "vit_base_patch32_clip_quickgelu_224",
    (1024, 24, 14): "vit_large_patch14_clip_quickgelu_224",
}


def default_head_offsets(num_heads: int, num_frames: int) -> list[int]:
    """Reference K400 settings: 2 temporal heads for ViT-B, 4 for ViT-L (and Δt=-2 on 2 more at 32 frames)."""
    if num_heads >= 16:
        return [-1, -1, 1, 1] + ([-2, -2] if num_frames >= 32 else [])
    return [-1, 1] if num_heads >= 2 and num_frames >= 2 else []


# The two ways the reference configs write `stdha_cfg`: `STDHA` (K400, UCF/HMDB, SSv2 B/16) and `STDHA_long`
# (the 32-frame ViT-L runs). Defaults are the reference's own.
STDHA_CFG_DEFAULTS = {
    "shift_div": 12,
    "shift_stride": 1,
    "long_shift_div": -1,
    "long_shift_right": False,
    "shift1_div": None,
    "shift2_div": -1,
    "shift3_div": -1,
    "shift3_right": False,
    "shift4_div": -1,
    "shift4_right": False,
    "divide_head": False,
    "shift_pattern": "kv",
}


def head_offsets_from_stdha_cfg(stdha_cfg: dict, width: int, head_dim: int = 64) -> list[int]:
    """The reference's channel-fold description of STDHA as per-head offsets (Δt for heads 0..k-1).

    The reference shifts contiguous channel folds of K and V, one after the other from channel 0:
    `STDHA`: fold = width // shift_div read at Δt = -shift_stride, the next fold at +shift_stride, then
    width // long_shift_div channels at Δt = -2 (and as many at +2 with long_shift_right).
    `STDHA_long` (any `shiftN_div` key): width // shift1_div channels at -1 then +1, width // shift2_div at
    -2 then +2, width // shift3_div at -3 (then +3 with shift3_right), width // shift4_div at -4 (+4).
    Each fold must be whole heads (head_dim channels), which it is in every published config.
    """
    if not isinstance(stdha_cfg, dict):
        raise UserError(f"stdha_cfg must be a mapping such as {{shift_div: 12}}, got {stdha_cfg!r}")
    unknown = sorted(set(stdha_cfg) - set(STDHA_CFG_DEFAULTS))
    if unknown:
        raise UserError(f"stdha_cfg: unknown keys {unknown}; known: {sorted(STDHA_CFG_DEFAULTS)}")
    cfg = {**STDHA_CFG_DEFAULTS, **stdha_cfg}
    if cfg["divide_head"] or cfg["shift_pattern"] != "kv":
        raise UserError(
            "stdha_cfg: divide_head=True and shift_pattern='qkv' are not implemented by the reference "
            "either; only whole-head K/V folds map onto head_offsets"
        )

    def channels(div) -> int:
        if not isinstance(div, int) or isinstance(div, bool):
            raise UserError(f"stdha_cfg: fold divisors must be integers, got {div!r}")
        return width // div if div > 0 else 0

    long_form = any(k.startswith("shift") and k[5:6].isdigit() for k in stdha_cfg)
    if long_form:
        folds = [(channels(cfg["shift1_div"] if cfg["shift1_div"] is not None else 8), -1)]
        folds.append((folds[0][0], 1))
        folds += [(channels(cfg["shift2_div"]), -2), (channels(cfg["shift2_div"]), 2)]
        folds.append((channels(cfg["shift3_div"]), -3))
        if cfg["shift3_right"]:
            folds.append((channels(cfg["shift3_div"]), 3))
        folds.append((channels(cfg["shift4_div"]), -4))
        if cfg["shift4_right"]:
            folds.append((channels(cfg["shift4_div"]), 4))
    else:
        stride = cfg["shift_stride"]
        if not isinstance(stride, int) or stride < 1:
            raise UserError(f"stdha_cfg: shift_stride must be a positive integer, got {stride!r}")
        fold = channels(cfg["shift_div"])
        folds = [(fold, -stride), (fold, stride), (channels(cfg["long_shift_div"]), -2)]
        if cfg["long_shift_right"]:
            folds.append((channels(cfg["long_shift_div"]), 2))
    offsets: list[int] = []
    for size, dt in folds:
        if size % head_dim:
            raise UserError(
                f"stdha_cfg {stdha_cfg}: a fold of {size} channels is not whole heads of {head_dim} "
                "channels; zeroi2v's STDHA assigns whole heads"
            )
        offsets += [dt] * (size // head_dim)
    if len(offsets) * head_dim > width:
        raise UserError(
            f"stdha_cfg {stdha_cfg}: the folds cover {len(offsets) * head_dim} channels, more than the width {width}"
        )
    return offsets


def describe_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """create_model arguments read off a reference state dict."""
    try:
        conv = state["backbone.conv1.weight"]
        pos = state["backbone.positional_embedding"]
    except KeyError as e:
        raise UserError(f"not a ZeroI2V/MMAction2 CLIP checkpoint: no {e.args[0]} in its state_dict") from None
    width, patch = conv.shape[0], conv.shape[-1]
    grid = int(round((pos.shape[0] - 1) ** 0.5))
    if grid * grid != pos.shape[0] - 1:
        raise UserError(f"positional_embedding of {pos.shape[0]} tokens is not a square grid plus a class token")
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"backbone\.transformer\.resblocks\.(\d+)\.", k)))
    temporal = state.get("backbone.temporal_embedding")
    num_frames = int(temporal.shape[-2]) if temporal is not None else 8
    positions, ratios = [], set()
    for name, (_, position) in ADAPTER_SLOTS.items():
        key = f"backbone.transformer.resblocks.0.{name}.D_fc1.weight"
        if key in state:
            positions.append(position)
            ratios.add(state[key].shape[0] / width)
    if len(ratios) > 1:
        raise UserError(f"adapters of different widths in one checkpoint are not supported: ratios {sorted(ratios)}")
    head = state.get("cls_head.fc_cls.weight")
    num_heads = width // 64
    timm_name = TIMM_CLIP_TOWERS.get((width, depth, patch), "vit_base_patch16_clip_quickgelu_224")
    timm_kwargs = dict(img_size=grid * patch, patch_size=patch, embed_dim=width, depth=depth, num_heads=num_heads)
    mlp_hidden = state["backbone.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    if mlp_hidden != 4 * width:
        timm_kwargs["mlp_ratio"] = mlp_hidden / width
    if "data_preprocessor.mean" in state:  # 0-255 scale in MMAction2
        mean = [round(float(v) / 255, 6) for v in state["data_preprocessor.mean"].flatten()]
        std = [round(float(v) / 255, 6) for v in state["data_preprocessor.std"].flatten()]
        timm_kwargs["pretrained_cfg_overlay"] = dict(mean=mean, std=std)
    return dict(
        backbone=timm_name,
        num_frames=num_frames,
        num_classes=int(head.shape[0]) if head is not None else 0,
        head_offsets=default_head_offsets(num_heads, num_frames),
        adapter_ratio=ratios.pop() if ratios else 0.0,
        adapter_scale=0.5,
        adapter_positions=positions or None,
        temporal_embedding=temporal is not None,
        timm_kwargs=timm_kwargs,
    )


def convert_state_dict(state: dict[str, torch.Tensor], model: ZeroI2V) -> dict[str, torch.Tensor]:
    """Reference keys -> ours: the backbone through timm's OpenAI-CLIP filter, adapters/head by name."""
    clip, out, unknown = {}, {}, []
    for key, value in state.items():
        if key.startswith(IGNORED) or key.startswith("data_preprocessor."):
            continue
        if key == "backbone.temporal_embedding":
            out["temporal_embed"] = value.reshape(value.shape[-2], value.shape[-1])
        elif key.startswith("cls_head.fc_cls."):
            out["head." + key.rsplit(".", 1)[1]] = value
        elif m := re.match(r"backbone\.transformer\.resblocks\.(\d+)\.(\w+)\.(D_fc[12])\.(weight|bias)$", key):
            block, adapter, layer, kind = m.groups()
            if adapter not in ADAPTER_SLOTS:
                unknown.append(key)
                continue
            out[f"backbone.blocks.{block}.{ADAPTER_SLOTS[adapter][0]}.{ADAPTER_LAYERS[layer]}.{kind}"] = value
        elif key.startswith("backbone."):
            clip["visual." + key[len("backbone.") :]] = value
        else:
            unknown.append(key)
    if unknown:
        raise UserError(
            f"unrecognised keys in the reference checkpoint: {unknown[:3]}" + (" ..." if len(unknown) > 3 else "")
        )
    for key, value in checkpoint_filter_fn(clip, model.backbone).items():
        if not key.startswith("head."):
            out["backbone." + key] = value
    return out


SSV2_CLASSES = 174
PRESET_KEYS = (
    "num_frames",
    "head_offsets",
    "adapter_scale",
    "adapter_dropout",
    "stdha_blocks",
    "boundary",
)  # what a config says about a checkpoint that its tensors do not


def preset_overrides(preset: str | os.PathLike, state: dict[str, torch.Tensor]) -> dict:
    """The model settings of a config (`--preset`), checked against the checkpoint's tensor shapes."""
    cfg = load_config(preset)
    found = describe_checkpoint(state)
    name = Path(preset).stem
    if cfg.model.num_classes is not None and cfg.model.num_classes != found["num_classes"]:
        raise UserError(
            f"preset {name} has {cfg.model.num_classes} classes but the checkpoint's classifier has "
            f"{found['num_classes']}: wrong --preset for this checkpoint"
        )
    if found["temporal_embedding"] and found["num_frames"] != cfg.model.num_frames:
        raise UserError(
            f"preset {name} is for {cfg.model.num_frames} frames but the checkpoint's temporal embedding "
            f"has {found['num_frames']}: wrong --preset for this checkpoint"
        )
    if (
        cfg.model.adapter_ratio
        and found["adapter_ratio"]
        and abs(cfg.model.adapter_ratio - found["adapter_ratio"]) > 1e-6
    ):
        raise UserError(
            f"preset {name} has adapter_ratio {cfg.model.adapter_ratio} but the checkpoint's adapters "
            f"have {found['adapter_ratio']:g}: wrong --preset for this checkpoint"
        )
    return {key: getattr(cfg.model, key) for key in PRESET_KEYS}


def load_official_checkpoint(path: str | os.PathLike, preset: str | os.PathLike | None = None, **overrides) -> ZeroI2V:
    """A ZeroI2V model with the weights of a reference checkpoint; overrides go to `create_model`.

    The checkpoint does not store the temporal head offsets or the adapter scale. `preset` (a config
    file, e.g. `configs/ssv2_vitl14_u32.yaml`) supplies them with the frame count, checked against the
    tensors; so do explicit overrides: `head_offsets` (SSv2 B/16: [-1, 1, -2, 2]) or the reference
    config's own `stdha_cfg`, and `adapter_scale` (1.0 for SSv2). With neither, the K400 settings
    apply, and a checkpoint with SSv2's 174 classes is refused rather than converted wrongly.
    """
    overrides = dict(overrides)
    state = read_state_dict(path)
    args = describe_checkpoint(state)
    if args["adapter_positions"] is None:
        args.pop("adapter_positions")
    if preset is not None:
        overrides = {**preset_overrides(preset, state), **overrides}
    elif args["num_classes"] == SSV2_CLASSES and not {"head_offsets", "stdha_cfg"} & set(overrides):
        raise UserError(
            f"{path} has {SSV2_CLASSES} classes (Something-Something v2), whose temporal heads and adapter "
            "scale differ from the K400 defaults: pass --preset ssv2_vitb16_u8 (or another ssv2_* config)"
        )
    if "stdha_cfg" in overrides:
        if "head_offsets" in overrides:
            raise UserError("give either head_offsets or stdha_cfg, not both")
        width = args["timm_kwargs"]["embed_dim"]
        overrides["head_offsets"] = head_offsets_from_stdha_cfg(overrides.pop("stdha_cfg"), width)
    timm_overrides = overrides.pop("timm_kwargs", None) or {}
    args["timm_kwargs"] = {**args["timm_kwargs"], **timm_overrides}
    args.update(overrides)
    model = create_model(**args)
    converted = convert_state_dict(state, model)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if unexpected or missing:
        raise UserError(
            f"{path}: checkpoint does not fit the inferred model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


def convert_official(
    ckpt_path, out_dir, overrides: dict | None = None, merge: bool = False, preset: str | os.PathLike | None = None
) -> dict:
    """`zeroi2v convert-official`: reference checkpoint -> our model directory (optionally merged)."""
    model = load_official_checkpoint(ckpt_path, preset=preset, **(overrides or {}))
    info = {"config": model.config, "merged": False, "merge_error": None}
    if merge:
        model = reparameterize(model)
        info.update(merged=True, merge_error=model.merge_error)
    save_pretrained(model, Path(out_dir))
    return info
