"""Interop: image weights in the layouts users have, and the reference ZeroI2V checkpoints.

The reference forward pass below is restated from the paper and the reference code with plain tensor ops
(channel-fold K/V shifting with clone-and-overwrite, as the MMAction2 code does); it never calls zeroi2v's model code.
"""

import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import zeroi2v
from zeroi2v.official import convert_official

CLIP = "vit_base_patch16_clip_quickgelu_224"
SMALL = dict(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2)


# ------------------------------------------------------------------ OpenAI layout, restated by hand
def to_openai_layout(timm_state: dict, depth: int, with_text: bool = True) -> dict:
    """A timm CLIP tower's state dict re-keyed the way OpenAI's CLIP stores it (`visual.*`)."""
    s, out = timm_state, {}
    out["visual.conv1.weight"] = s["patch_embed.proj.weight"]
    out["visual.class_embedding"] = s["cls_token"].reshape(-1)
    out["visual.positional_embedding"] = s["pos_embed"][0]
    for a, b in (("ln_pre", "norm_pre"), ("ln_post", "norm")):
        out[f"visual.{a}.weight"], out[f"visual.{a}.bias"] = s[f"{b}.weight"], s[f"{b}.bias"]
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"visual.transformer.resblocks.{i}."
        pairs = {
            "norm1": "ln_1",
            "norm2": "ln_2",
            "attn.proj": "attn.out_proj",
            "mlp.fc1": "mlp.c_fc",
            "mlp.fc2": "mlp.c_proj",
        }
        for a, b in pairs.items():
            out[dst + b + ".weight"], out[dst + b + ".bias"] = s[src + a + ".weight"], s[src + a + ".bias"]
        out[dst + "attn.in_proj_weight"], out[dst + "attn.in_proj_bias"] = (
            s[src + "attn.qkv.weight"],
            s[src + "attn.qkv.bias"],
        )
    width = s["cls_token"].shape[-1]
    out["visual.proj"] = torch.randn(width, 64)  # CLIP's image projection: must be dropped
    if with_text:
        out["token_embedding.weight"] = torch.randn(100, 64)
        out["text_projection"] = torch.randn(64, 64)
        out["logit_scale"] = torch.tensor(4.6)
    return out


class Holder(nn.Module):
    """Nested modules holding a flat state dict, so torch.jit can save it as a TorchScript archive."""

    def __init__(self, state: dict):
        super().__init__()
        for key, value in state.items():
            *path, leaf = key.split(".")
            module = self
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            module.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module")
def image_tower():
    torch.manual_seed(0)
    tower = timm.create_model(CLIP, pretrained=False, num_classes=0, **SMALL).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for p in tower.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return tower


def write_layout(tmp_path, tower, layout):
    state = tower.state_dict()
    if layout == "timm_safetensors":
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "timm_bin_with_head":
        path = tmp_path / "pytorch_model.bin"
        torch.save({**state, "head.weight": torch.randn(1000, 128), "head.bias": torch.randn(1000)}, path)
    elif layout == "open_clip_timm_trunk":
        path = tmp_path / "open_clip_model.safetensors"
        save_file({"visual.trunk." + k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "openai_state_dict":
        path = tmp_path / "ViT-B-16.pth"
        torch.save(to_openai_layout(state, SMALL["depth"]), path)
    elif layout == "openai_torchscript":
        path = tmp_path / "ViT-B-16.pt"
        torch.jit.save(torch.jit.script(Holder(to_openai_layout(state, SMALL["depth"]))), str(path))
    elif layout == "training_checkpoint":
        path = tmp_path / "checkpoint.pth"
        torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    return path


LAYOUTS = [
    "timm_safetensors",
    "timm_bin_with_head",
    "open_clip_timm_trunk",
    "openai_state_dict",
    "openai_torchscript",
    "training_checkpoint",
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_image_weights_reproduce_timm_features(tmp_path, image_tower, layout):
    path = write_layout(tmp_path, image_tower, layout)
    T = 3
    model = zeroi2v.create_model(
        CLIP, num_frames=T, num_classes=0, pretrained=str(path), head_offsets=(), temporal_embedding=False, **SMALL
    ).eval()
    video = torch.randn(2, 3, T, 32, 32)
    with torch.no_grad():
        frames = video.transpose(1, 2).reshape(2 * T, 3, 32, 32)
        per_frame = image_tower.forward_head(image_tower.forward_features(frames), pre_logits=True)
        expected = per_frame.view(2, T, -1).mean(1)
        err = (model(video) - expected).abs().max().item()
    print(f"{layout}: max abs error vs timm image features {err:.2e}")
    assert err < 1e-5


def test_image_weights_resize_position_embedding(tmp_path, image_tower):
    path = write_layout(tmp_path, image_tower, "openai_state_dict")
    model = zeroi2v.create_model(CLIP, num_frames=2, num_classes=5, pretrained=str(path), **{**SMALL, "img_size": 48})
    assert model.backbone.pos_embed.shape[1] == 1 + 6 * 6


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"this is not a checkpoint", "cannot read"),
    ],
)
def test_bad_weight_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(zeroi2v.UserError, match=message) as info:
        zeroi2v.create_model(CLIP, num_frames=2, num_classes=3, pretrained=str(path), **SMALL)
    assert "\n" not in str(info.value)


def test_truncated_and_foreign_weights(tmp_path, image_tower):
    good = write_layout(tmp_path, image_tower, "timm_safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(zeroi2v.UserError, match="cannot read"):
        zeroi2v.create_model(CLIP, num_frames=2, num_classes=3, pretrained=str(truncated), **SMALL)
    truncated_pt = tmp_path / "truncated.pth"
    torch.save(image_tower.state_dict(), truncated_pt)
    truncated_pt.write_bytes(truncated_pt.read_bytes()[:5000])
    with pytest.raises(zeroi2v.UserError, match="cannot read"):
        zeroi2v.create_model(CLIP, num_frames=2, num_classes=3, pretrained=str(truncated_pt), **SMALL)
    resnet = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), resnet)
    with pytest.raises(zeroi2v.UserError, match="does not match|could not convert"):
        zeroi2v.create_model(CLIP, num_frames=2, num_classes=3, pretrained=str(resnet), **SMALL)
    with pytest.raises(zeroi2v.UserError, match="does not fit"):
        zeroi2v.create_model(
            CLIP, num_frames=2, num_classes=3, pretrained=str(good), **{**SMALL, "embed_dim": 192, "num_heads": 3}
        )
    with pytest.raises(zeroi2v.UserError, match="not found"):
        zeroi2v.create_model(CLIP, num_frames=2, num_classes=3, pretrained=str(tmp_path / "nope.pth"), **SMALL)


class Unpicklable:
    """Stands for MMEngine objects in a checkpoint's `meta`: a class the loader must not import/run."""

    def __reduce__(self):
        return (print, ("code from a checkpoint ran!",))


# ---------------------------------------------------------------- reference checkpoints (MMAction2)
def reference_checkpoint(width, depth, patch, grid, T, classes, ratio=0.25, seed=0, num_tadapter=2):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.05):
        return torch.randn(*shape, generator=gen) * std

    D, hidden = width, int(width * ratio)
    sd = {
        "backbone.conv1.weight": r(D, 3, patch, patch, std=0.1),
        "backbone.class_embedding": r(D, std=0.5),
        "backbone.positional_embedding": r(grid * grid + 1, D, std=0.5),
        "backbone.temporal_embedding": r(1, T, D, std=0.5),
        "backbone.ln_pre.weight": 1 + r(D),
        "backbone.ln_pre.bias": r(D),
        "backbone.ln_post.weight": 1 + r(D),
        "backbone.ln_post.bias": r(D),
        "backbone.proj": r(D, 32),
        "cls_head.fc_cls.weight": r(classes, D, std=0.2),
        "cls_head.fc_cls.bias": r(classes),
        "data_preprocessor.mean": torch.tensor([122.769, 116.74, 104.04]).view(3, 1, 1, 1),
        "data_preprocessor.std": torch.tensor([68.493, 66.63, 70.321]).view(3, 1, 1, 1),
    }
    for i in range(depth):
        p = f"backbone.transformer.resblocks.{i}."
        sd.update(
            {
                p + "attn.in_proj_weight": r(3 * D, D, std=D**-0.5),
                p + "attn.in_proj_bias": r(3 * D),
                p + "attn.out_proj.weight": r(D, D, std=D**-0.5),
                p + "attn.out_proj.bias": r(D),
                p + "ln_1.weight": 1 + r(D),
                p + "ln_1.bias": r(D),
                p + "ln_2.weight": 1 + r(D),
                p + "ln_2.bias": r(D),
                p + "mlp.c_fc.weight": r(4 * D, D, std=D**-0.5),
                p + "mlp.c_fc.bias": r(4 * D),
                p + "mlp.c_proj.weight": r(D, 4 * D, std=(4 * D) ** -0.5),
                p + "mlp.c_proj.bias": r(D),
            }
        )
        names = ("T_Adapter_in", "S_Adapter", "MLP_Adapter") + (("MLP_Adapter_out",) if num_tadapter == 2 else ())
        for name in names:  # num_tadapter=1 configs of the reference have no MLP_Adapter_out
            sd.update(
                {
                    p + f"{name}.D_fc1.weight": r(hidden, D, std=D**-0.5),
                    p + f"{name}.D_fc1.bias": r(hidden),
                    p + f"{name}.D_fc2.weight": r(D, hidden, std=hidden**-0.5),
                    p + f"{name}.D_fc2.bias": r(D),
                }
            )
    return sd


def reference_forward(sd, video, folds, scale):
    """The method (paper §3, reference code) restated: CLIP ViT, adapters, channel-fold K/V shift
    (clone + overwrite)."""
    B, _, T, H, W = video.shape
    conv = sd["backbone.conv1.weight"]
    D, patch = conv.shape[0], conv.shape[-1]
    ln = lambda x, name: F.layer_norm(x, (D,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-5)  # noqa: E731

    def adapter(x, name):
        h = x @ sd[name + ".D_fc1.weight"].T + sd[name + ".D_fc1.bias"]
        return x + scale * (h @ sd[name + ".D_fc2.weight"].T + sd[name + ".D_fc2.bias"])

    x = F.conv2d(video.permute(0, 2, 1, 3, 4).reshape(B * T, 3, H, W), conv, stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["backbone.class_embedding"].expand(B * T, 1, D), x], dim=1) + sd["backbone.positional_embedding"]
    n = x.shape[1]
    x = (x.view(B, T, n, D) + sd["backbone.temporal_embedding"].view(1, T, 1, D)).view(B * T, n, D)
    x = ln(x, "backbone.ln_pre")
    depth = len({k.split(".")[3] for k in sd if k.startswith("backbone.transformer.resblocks.")})
    heads = D // 64
    for i in range(depth):
        p = f"backbone.transformer.resblocks.{i}."
        h = adapter(ln(x, p + "ln_1"), p + "T_Adapter_in")
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, dim=-1)

        def shift(t):
            t = t.view(B, T, n, D)
            out = t.clone()  # the reference: clone, then overwrite the shifted channel folds
            for c0, c1, dt in folds:
                if dt < 0:  # frame t reads frame t+dt (earlier)
                    out[:, -dt:, :, c0:c1] = t[:, :dt, :, c0:c1]
                else:
                    out[:, :-dt, :, c0:c1] = t[:, dt:, :, c0:c1]
            return out.view(B * T, n, D)

        k, v = shift(k), shift(v)
        q, k, v = (t.view(B * T, n, heads, 64).transpose(1, 2) for t in (q, k, v))
        attn = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(64), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B * T, n, D)
        out = out @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        x = x + adapter(out, p + "S_Adapter")
        h = adapter(ln(x, p + "ln_2"), p + "MLP_Adapter")
        h = h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        h = h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
        x = x + (adapter(h, p + "MLP_Adapter_out") if p + "MLP_Adapter_out.D_fc1.weight" in sd else h)
    cls = ln(x, "backbone.ln_post")[:, 0].view(B, T, D).mean(1)
    return cls @ sd["cls_head.fc_cls.weight"].T + sd["cls_head.fc_cls.bias"]


SETTINGS = {
    # ViT-B-like: shift_div 2 over 2 heads -> fold 0 reads t-1, fold 1 reads t+1 (default offsets)
    "B_like": dict(width=128, T=4, folds=[(0, 64, -1), (64, 128, 1)], overrides={}),
    # ViT-L-like: two folds per direction plus one fold at Δt = -2
    "L_like": dict(
        width=384,
        T=4,
        folds=[(0, 128, -1), (128, 256, 1), (256, 320, -2)],
        overrides={"head_offsets": [-1, -1, 1, 1, -2]},
    ),
    # the same, given as the reference config's own stdha_cfg (STDHA: shift_div 3 -> 128 channels,
    # long_shift_div 6 -> 64 channels at Δt = -2)
    "L_like_stdha_cfg": dict(
        width=384,
        T=4,
        folds=[(0, 128, -1), (128, 256, 1), (256, 320, -2)],
        overrides={"stdha_cfg": {"shift_div": 3, "long_shift_div": 6}},
    ),
    # STDHA_long with Δt = ±2 and -3 folds, 3 adapters per block (num_tadapter=1), adapter scale 1
    "long_3adapters": dict(
        width=384,
        T=8,
        num_tadapter=1,
        scale=1.0,
        folds=[(0, 64, -1), (64, 128, 1), (128, 192, -2), (192, 256, 2), (256, 320, -3)],
        overrides={"stdha_cfg": {"shift1_div": 6, "shift2_div": 6, "shift3_div": 6}, "adapter_scale": 1.0},
    ),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_official_checkpoint_matches_reference_forward(tmp_path, setting):
    cfg = SETTINGS[setting]
    sd = reference_checkpoint(
        cfg["width"], depth=2, patch=8, grid=4, T=cfg["T"], classes=6, num_tadapter=cfg.get("num_tadapter", 2)
    )
    path = tmp_path / "zeroi2v_ref.pth"
    torch.save(
        {
            "meta": {"epoch": 40, "mmengine_object": Unpicklable()},
            "state_dict": sd,
            "optimizer": {"state": {}, "param_groups": []},
        },
        path,
    )
    model = zeroi2v.load_official_checkpoint(path, **cfg["overrides"])
    assert model.num_frames == cfg["T"] and model.num_heads == cfg["width"] // 64
    assert model.data_config["mean"] == pytest.approx((0.481447, 0.457804, 0.408), abs=1e-5)
    video = torch.randn(2, 3, cfg["T"], 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = reference_forward(sd, video, cfg["folds"], scale=cfg.get("scale", 0.5))
        ours = model(video)
        merged = zeroi2v.reparameterize(model)
        ours_merged = merged(video)
    err, err_merged = (ref - ours).abs().max().item(), (ref - ours_merged).abs().max().item()
    print(
        f"{setting}: reference parity max abs error {err:.2e}, merged {err_merged:.2e} "
        f"(logit scale {ref.abs().max():.2f})"
    )
    assert ref.abs().max() > 0.5
    assert err <= 1e-4 and err_merged <= 1e-4
    # the directory written by convert-official reproduces it too
    info = convert_official(path, tmp_path / "converted", dict(cfg["overrides"]), merge=True)
    assert info["merged"] and info["merge_error"] <= 1e-4
    loaded = zeroi2v.load_pretrained(tmp_path / "converted")
    with torch.no_grad():
        assert (loaded(video) - ref).abs().max() <= 1e-4


def test_official_checkpoint_never_runs_pickled_code(tmp_path, capsys):
    sd = reference_checkpoint(128, depth=1, patch=8, grid=4, T=2, classes=3)
    path = tmp_path / "ckpt.pth"
    torch.save({"meta": Unpicklable(), "state_dict": sd}, path)
    zeroi2v.load_official_checkpoint(path)
    assert "code from a checkpoint ran" not in capsys.readouterr().out


def test_official_rejects_other_files(tmp_path, image_tower):
    path = write_layout(tmp_path, image_tower, "timm_safetensors")
    with pytest.raises(zeroi2v.UserError, match="not a ZeroI2V"):
        zeroi2v.load_official_checkpoint(path)


# The stdha_cfg of each published reference config and the head offsets the paper lists for it.
PUBLISHED_STDHA = [
    ("K400 ViT-B/16 8f", 768, {"shift_div": 12, "divide_head": False}, [-1, 1]),
    ("K400 ViT-L/14 8f", 1024, {"shift_div": 8}, [-1, -1, 1, 1]),
    ("K400 ViT-L/14 32f", 1024, {"shift_div": 8, "long_shift_div": 8}, [-1, -1, 1, 1, -2, -2]),
    ("SSv2 ViT-B/16 16f", 768, {"shift_div": 12, "long_shift_div": 12, "long_shift_right": True}, [-1, 1, -2, 2]),
    (
        "SSv2 ViT-L/14 32f",
        1024,
        {
            "divide_head": False,
            "shift1_div": 8,
            "shift2_div": 16,
            "shift3_div": 16,
            "shift3_right": False,
            "shift4_div": -1,
            "shift4_right": False,
        },
        [-1, -1, 1, 1, -2, 2, -3],
    ),
]


@pytest.mark.parametrize("name, width, stdha_cfg, expected", PUBLISHED_STDHA, ids=[p[0] for p in PUBLISHED_STDHA])
def test_reference_stdha_cfg_maps_to_paper_head_offsets(name, width, stdha_cfg, expected):
    from zeroi2v.official import head_offsets_from_stdha_cfg

    assert head_offsets_from_stdha_cfg(stdha_cfg, width) == expected


@pytest.mark.parametrize(
    "stdha_cfg, message",
    [
        ({"shift_div": 24}, "not whole heads"),
        ({"shift_div": 2, "long_shift_div": 4}, "more than the width"),
        ({"divide_head": True}, "not implemented"),
        ({"shift_dv": 12}, "unknown keys"),
        ("shift_div=12", "must be a mapping"),
    ],
)
def test_bad_stdha_cfg_is_a_one_line_error(stdha_cfg, message):
    from zeroi2v.official import head_offsets_from_stdha_cfg

    with pytest.raises(zeroi2v.UserError, match=message):
        head_offsets_from_stdha_cfg(stdha_cfg, 768)


def test_convert_official_cli_takes_the_reference_stdha_cfg(tmp_path, capsys):
    from zeroi2v.cli import main

    sd = reference_checkpoint(384, depth=1, patch=8, grid=4, T=4, classes=3)
    path = tmp_path / "ref.pth"
    torch.save({"state_dict": sd}, path)
    assert (
        main(
            [
                "convert-official",
                str(path),
                str(tmp_path / "out"),
                "--set",
                "stdha_cfg={shift_div: 3, long_shift_div: 6}",
            ]
        )
        == 0
    )
    assert "head_offsets=[-1, -1, 1, 1, -2]" in capsys.readouterr().out
    assert main(["convert-official", str(path), str(tmp_path / "out2"), "--set", "stdha_cfg={shift_div: 5}"]) == 2
    assert "not whole heads" in capsys.readouterr().err
    weights = (tmp_path / "out" / "model.safetensors").read_bytes()  # a second conversion into a model directory
    assert main(["convert-official", str(path), str(tmp_path / "out"), "--set", "stdha_cfg={shift_div: 3}"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == weights
    assert (
        main(["convert-official", str(path), str(tmp_path / "out"), "--force", "--set", "stdha_cfg={shift_div: 3}"])
        == 0
    )
