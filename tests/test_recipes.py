"""The published recipes as a run builds them, not as the configs say them.

ViT-L optimizer multipliers are read from the optimizer `zeroi2v.train.setup` builds; transform chains
from the datasets a run builds from each shipped config; adapter dropout from forward passes;
`convert-official --preset` from the converted model. Models are shrunk (one block, 8 heads of 8
channels, 16-pixel frames) but keep their parameter names and trainable set, so this stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import load_benchmark
from zeroi2v.build import build_model
from zeroi2v.cli import main
from zeroi2v.config import load_config
from zeroi2v.data.build import make_dataset
from zeroi2v.train import setup

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "zeroi2v" / "configs"
SHIPPED = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem != "demo")
VIT_L = ["k400_vitl14_8x16x1", "k400_vitl14_32x4x1", "ssv2_vitl14_u32"]
SHRINK = [
    "model.pretrained=null",
    "model.timm_kwargs={depth: 1, embed_dim: 64, num_heads: 8, patch_size: 8}",
    "data.img_size=16",
]

K400_CHAIN = ("resize", "rand_augment", "random_resized_crop", "flip", "normalize")
SSV2_CHAIN = ("resize", "random_resized_crop", "flip", "rand_augment", "random_erasing", "normalize")


def shrunk(name: str, *overrides: str):
    return load_config(CONFIGS / f"{name}.yaml", [*SHRINK, *overrides])


@pytest.fixture(scope="module")
def listed_videos(tmp_path_factory):
    """64 listed (empty) video files: enough for one global batch of every config; nothing is decoded."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(64):
        (root / f"v{i}.mp4").touch()
    listing = root / "train.txt"
    listing.write_text("".join(f"v{i}.mp4 {i % 2}\n" for i in range(64)))
    return root, listing


def test_shipped_configs_are_the_expected_set():
    assert len(SHIPPED) == 18 and set(VIT_L) <= set(SHIPPED)


@pytest.mark.parametrize("name, backbone_mult", [*[(n, 0.1) for n in VIT_L], ("k400_vitb16_8x16x1", 1.0)])
def test_optimizer_multipliers_of_the_run(name, backbone_mult, listed_videos, tmp_path):
    root, listing = listed_videos
    cfg = shrunk(
        name,
        f"data.root={root}",
        f"data.train_list={listing}",
        f"data.val_list={listing}",
        f"output={tmp_path / 'run'}",
        "train.num_workers=0",
    )
    run = setup(cfg)
    names = {id(p): n for n, p in run.model.named_parameters()}
    mult, decay = {}, {}
    for group in run.optimizer.param_groups:
        for p in group["params"]:
            mult[names[id(p)]], decay[names[id(p)]] = group["lr_mult"], group["weight_decay"]
    assert set(mult) == {n for n, p in run.model.named_parameters() if p.requires_grad}
    under_backbone = {n: m for n, m in mult.items() if not n.startswith("head.")}
    # what the reference keeps under its backbone module: adapters, temporal embedding, final norm
    assert any(".adapter_" in n for n in under_backbone) and "temporal_embed" in under_backbone
    assert "backbone.norm.weight" in under_backbone
    assert set(under_backbone.values()) == {backbone_mult}, under_backbone
    assert mult["head.weight"] == mult["head.bias"] == 1.0
    # no decay on the temporal embedding and the final norm only; adapter and classifier biases decay
    assert {n for n, d in decay.items() if d == 0} == {"temporal_embed", "backbone.norm.weight", "backbone.norm.bias"}
    assert decay["head.bias"] == 0.05 and all(d == 0.05 for n, d in decay.items() if ".adapter_" in n)


@pytest.mark.parametrize("name", SHIPPED)
def test_train_transform_chain_in_the_reference_order(name):
    cfg = shrunk(name)
    model = build_model(cfg.model_config())
    transform = make_dataset(cfg, model, "train", samples=[("v.mp4", 0)]).transform
    ops = {type(op).__name__: op for op in transform.ops}
    ra = ops["RandAugment"]
    assert (ra.num_layers, ra.magnitude, ra.prob, ra.sigma) == (4, 7.0, 0.5, 0.5)
    if name.startswith("ssv2"):
        assert transform.steps == SSV2_CHAIN
        assert (ops["RandomErasing"].p, ops["RandomErasing"].mode) == (0.25, "const")
        assert cfg.data.flip_label_map == "auto" and cfg.train.label_smoothing == 0.1
    elif name == "k400_vitl14_32x4x1":
        assert transform.steps == K400_CHAIN[:4] + ("random_erasing",) + K400_CHAIN[4:]
        assert (ops["RandomErasing"].p, ops["RandomErasing"].mode) == (0.25, "rand")
    else:  # K400, UCF101, HMDB51
        assert transform.steps == K400_CHAIN and cfg.data.flip_label_map is None
    assert cfg.model.adapter_dropout == (0.0 if name.startswith("ssv2_vitb16") else 0.1)
    assert cfg.model.adapter_scale == (1.0 if name.startswith("ssv2") else 0.5)


def test_global_batch_lr_and_views_per_config():
    got = {
        n: (c.train.batch_size, c.train.accum_steps, c.train.lr, c.data.test_clips, c.data.test_crops, c.train.epochs)
        for n in SHIPPED
        for c in [load_config(CONFIGS / f"{n}.yaml")]
    }
    assert got["k400_vitb16_8x16x1"] == got["k400_vitl14_8x16x1"] == (64, 1, 3e-4, 3, 1, 40)
    assert got["k400_vitl14_32x4x1"] == (32, 2, 1.5e-4, 3, 1, 40)
    assert got["ssv2_vitl14_u32"] == (32, 2, 1.5e-4, 1, 3, 50)
    assert got["ssv2_vitb16_u8"] == got["ssv2_vitb16_u16"] == (32, 1, 3e-4, 1, 3, 50)
    for data in ("ucf101", "hmdb51"):
        assert got[f"{data}_vitb16_u8_split1"] == (128, 1, 3e-4, 1, 3, 40)
    assert got["ucf101_vitb16_u32_split1"] == (128, 1, 3e-4, 1, 3, 40)
    assert got["hmdb51_vitb16_u32_split1"] == (128, 1, 3e-4, 2, 3, 40)


def tiny_model(dropout: float):
    cfg = load_config(
        None,
        [
            *SHRINK,
            f"model.adapter_dropout={dropout}",
            "model.head_dropout=0",
            "model.num_frames=4",
            "model.num_classes=3",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg.model_config())
    with torch.no_grad():  # up-projections start at zero, which hides any dropout before them
        for name, p in model.named_parameters():
            if ".up." in name:
                p.normal_(0, 0.5)
    return model


def test_adapter_dropout_is_active_in_training_only():
    clip = torch.randn(2, 3, 4, 16, 16)
    model = tiny_model(0.1)
    model.train()
    assert not torch.allclose(model(clip), model(clip))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(clip), model(clip))
    control = tiny_model(0.0).train()  # head dropout is off: without adapter dropout, training mode is deterministic
    assert torch.equal(control(clip), control(clip))


# --- convert-official --preset ------------------------------------------------------------------------
def reference_checkpoint(path: Path, classes: int = 174, frames: int = 32, width: int = 512) -> Path:
    """An MMAction2-layout ZeroI2V checkpoint shaped like the SSv2 ViT-L one, shrunk: 8 heads of 64
    channels (ViT-L's 7 temporal heads fit), one block, a 2×2 grid of 8-pixel patches."""
    gen = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=gen) * 0.02

    d, hidden, block = width, width // 4, "backbone.transformer.resblocks.0."
    sd = {
        "backbone.conv1.weight": r(d, 3, 8, 8),
        "backbone.class_embedding": r(d),
        "backbone.positional_embedding": r(5, d),
        "backbone.temporal_embedding": r(1, frames, d),
        "backbone.ln_pre.weight": torch.ones(d),
        "backbone.ln_pre.bias": r(d),
        "backbone.ln_post.weight": torch.ones(d),
        "backbone.ln_post.bias": r(d),
        "cls_head.fc_cls.weight": r(classes, d),
        "cls_head.fc_cls.bias": r(classes),
        block + "attn.in_proj_weight": r(3 * d, d),
        block + "attn.in_proj_bias": r(3 * d),
        block + "attn.out_proj.weight": r(d, d),
        block + "attn.out_proj.bias": r(d),
        block + "ln_1.weight": torch.ones(d),
        block + "ln_1.bias": r(d),
        block + "ln_2.weight": torch.ones(d),
        block + "ln_2.bias": r(d),
        block + "mlp.c_fc.weight": r(4 * d, d),
        block + "mlp.c_fc.bias": r(4 * d),
        block + "mlp.c_proj.weight": r(d, 4 * d),
        block + "mlp.c_proj.bias": r(d),
    }
    for adapter in ("T_Adapter_in", "S_Adapter", "MLP_Adapter", "MLP_Adapter_out"):
        sd.update(
            {
                f"{block}{adapter}.D_fc1.weight": r(hidden, d),
                f"{block}{adapter}.D_fc1.bias": r(hidden),
                f"{block}{adapter}.D_fc2.weight": r(d, hidden),
                f"{block}{adapter}.D_fc2.bias": r(d),
            }
        )
    torch.save({"state_dict": sd, "meta": {}}, path)
    return path


def test_convert_official_with_the_ssv2_vitl_preset(tmp_path, capsys):
    ckpt = reference_checkpoint(tmp_path / "ssv2_vitl.pth")
    assert main(["convert-official", str(ckpt), str(tmp_path / "out"), "--preset", "ssv2_vitl14_u32"]) == 0
    assert "head_offsets=[-1, -1, 1, 1, -2, 2, -3], adapter_scale=1.0" in capsys.readouterr().out
    config = json.loads((tmp_path / "out" / "model.json").read_text())["config"]
    assert config["head_offsets"] == [-1, -1, 1, 1, -2, 2, -3] and config["adapter_scale"] == 1.0
    assert (config["num_frames"], config["num_classes"]) == (32, 174)


@pytest.mark.parametrize(
    "shape, message",
    [
        (dict(classes=400), "preset ssv2_vitl14_u32 has 174 classes but the checkpoint's classifier has 400"),
        (dict(frames=8), "preset ssv2_vitl14_u32 is for 32 frames but the checkpoint's temporal embedding has 8"),
    ],
)
def test_convert_official_refuses_a_checkpoint_that_contradicts_the_preset(tmp_path, capsys, shape, message):
    ckpt = reference_checkpoint(tmp_path / "other.pth", **shape)
    assert main(["convert-official", str(ckpt), str(tmp_path / "out"), "--preset", "ssv2_vitl14_u32"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_convert_official_refuses_an_ssv2_checkpoint_without_preset(tmp_path, capsys):
    ckpt = reference_checkpoint(tmp_path / "ssv2.pth")
    assert main(["convert-official", str(ckpt), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--preset" in err and "174 classes" in err and len(err.strip().splitlines()) == 1


def test_docs_training_md_is_generated_from_the_configs():
    recipes = load_benchmark("recipes")
    assert recipes.main(["--check"]) == 0, "run: python -m benchmarks.recipes"
