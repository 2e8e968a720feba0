"""Peer baselines (AIM, ST-Adapter, joint attention): same interface as ZeroI2V, trainable, and costlier."""

import json

import pytest
import timm
import torch

import zeroi2v
from zeroi2v.baselines.aim import AIMBlock
from zeroi2v.baselines.st_adapter import STAdapter
from zeroi2v.build import build_model
from zeroi2v.model import count_flops, count_params, model_config


def create_baseline(method, **kwargs):
    return build_model(model_config(method=method, **kwargs))


KW = dict(
    backbone="vit_base_patch16_clip_quickgelu_224",
    num_frames=4,
    num_classes=5,
    img_size=32,
    patch_size=8,
    depth=2,
    embed_dim=96,
    num_heads=6,
)


SSV2_ST_ADAPTER = {"st_adapter_positions": ["attn", "mlp"], "adapter_ratio": 0.5}  # the official SSv2 placement


@pytest.mark.parametrize(
    "method, extra",
    [("aim", {}), ("st_adapter", {}), ("st_adapter", SSV2_ST_ADAPTER), ("joint", {})],
    ids=["aim", "st_adapter", "st_adapter_ssv2", "joint"],
)
def test_baselines_train_like_zeroi2v_and_cost_more(method, extra, tmp_path):
    model = create_baseline(method, **KW, **extra)
    x = torch.randn(2, 3, 4, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 5)
    logits.sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    assert not any(n.endswith("attn.qkv.weight") for n in trainable)  # the backbone stays frozen
    plain = timm.create_model(
        KW["backbone"],
        pretrained=False,
        num_classes=5,
        **{k: v for k, v in KW.items() if k in ("img_size", "patch_size", "depth", "embed_dim", "num_heads")},
    )
    assert count_flops(model) > count_flops(plain, num_frames=4) * 1.01  # the extra inference cost they carry
    assert count_params(model) > count_params(plain)
    zeroi2v.save_pretrained(model, tmp_path)
    loaded = zeroi2v.load_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    with pytest.raises(zeroi2v.UserError, match="cannot be merged"):
        zeroi2v.reparameterize(model)


@pytest.mark.parametrize(
    "method, extra",
    [
        ("aim", {}),
        ("st_adapter", {}),
        ("st_adapter", SSV2_ST_ADAPTER),
        ("st_adapter", {"st_adapter_positions": ["mlp"]}),
    ],
    ids=["aim", "st_adapter", "st_adapter_ssv2", "st_adapter_k400"],
)
def test_baselines_start_at_the_image_model(method, extra):
    """The official inits make every AIM / ST-Adapter module start as the identity or as zero: the peer's
    output at init is exactly the frozen image model's frame averaging."""
    x = torch.randn(2, 3, 4, 32, 32)
    torch.manual_seed(0)
    spatial = zeroi2v.create_model(**{**KW, "head_offsets": (), "temporal_embedding": False, "adapter_ratio": 0}).eval()
    torch.manual_seed(0)  # same backbone weights: the peers' modules are created after it
    peer = create_baseline(method, **KW, **extra).eval()
    with torch.no_grad():
        assert torch.equal(peer.forward_features(x), spatial.forward_features(x))
        assert torch.equal(peer(x), spatial(x))


def test_aim_starts_as_its_official_code():
    """adapt-image-models `ViT_CLIP.init_weights`: every adapter's fc1 truncated-normal std 0.02 with zero
    bias; fc2 zero in every adapter whose name holds S_Adapter, T_Adapter (T_Adapter_in too) or MLP_Adapter."""
    model = create_baseline("aim", **KW)
    blocks = [b for b in model.modules() if isinstance(b, AIMBlock)]
    assert len(blocks) == KW["depth"]
    adapters = [a for b in blocks for a in (b.t_adapter_in, b.t_adapter, b.s_adapter, b.mlp_adapter)]
    for a in adapters:
        assert not a.fc2.weight.any() and not a.fc2.bias.any()
        assert not a.fc1.bias.any()
    first = torch.cat([a.fc1.weight.flatten() for a in adapters])
    assert 0.018 < first.std().item() < 0.022 and first.abs().max() < 0.1  # PyTorch's default here: std 0.059
    x = torch.randn(3, 5, KW["embed_dim"])
    with torch.no_grad():
        assert torch.equal(blocks[0].t_adapter_in(x), x)  # the identity at init, as S_Adapter
        assert torch.equal(blocks[0].s_adapter(x), x)
        assert not blocks[0].t_adapter(x).any() and not blocks[0].mlp_adapter(x).any()


@pytest.mark.parametrize("positions", [["attn"], ["attn", "mlp"], ["mlp"]])
def test_st_adapter_starts_as_its_official_code(positions):
    """linziyi96/st-adapter `Adapter`: the depth-wise temporal conv (weight and bias) and both linear biases
    zero, the down and up projections at PyTorch's default; one adapter per block and position."""
    model = create_baseline("st_adapter", **KW, st_adapter_positions=positions, adapter_ratio=0.5)
    adapters = [m for m in model.modules() if isinstance(m, STAdapter)]
    assert len(adapters) == KW["depth"] * len(positions)
    for a in adapters:
        assert a.down.out_features == KW["embed_dim"] // 2  # width 0.5·D
        assert not a.conv.weight.any() and not a.conv.bias.any()
        assert not a.down.bias.any() and not a.up.bias.any()
        for projection in (a.down.weight, a.up.weight):
            bound = projection.shape[1] ** -0.5  # kaiming-uniform(a=√5): U(±1/√fan_in)
            assert projection.abs().max() <= bound and projection.std() > 0.4 * bound


def test_st_adapter_ssv2_placement_trains_and_round_trips(tmp_path):
    """Two adapters per block at 0.5·D: a training step moves it off the image model, and model.json
    keeps the placement (an older model.json without the key loads as the one-adapter default)."""
    x = torch.randn(2, 3, 4, 32, 32)
    model = create_baseline("st_adapter", **KW, **SSV2_ST_ADAPTER)
    with torch.no_grad():
        before = model.eval()(x)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    opt.step()
    blocks = model.backbone.blocks
    assert all(b.adapter.conv.weight.any() for b in blocks)
    assert all(b.adapter_mlp.conv.weight.any() for b in blocks[:-1])  # the mlp-side adapters train too...
    assert not blocks[
        -1
    ].adapter_mlp.conv.weight.any()  # ...but the last one's patch tokens never reach the class token
    zeroi2v.save_pretrained(model, tmp_path / "ssv2")
    loaded = zeroi2v.load_pretrained(tmp_path / "ssv2")
    assert loaded.config.st_adapter_positions == ["attn", "mlp"]
    with torch.no_grad():
        after = model.eval()(x)
        assert not torch.allclose(after, before)
        assert torch.equal(loaded(x), after)
    one = create_baseline("st_adapter", **KW)
    zeroi2v.save_pretrained(one, tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "model.json").read_text())
    del meta["config"]["st_adapter_positions"]
    (tmp_path / "old" / "model.json").write_text(json.dumps(meta))
    assert zeroi2v.load_pretrained(tmp_path / "old").config.st_adapter_positions == ["attn"]


@pytest.mark.parametrize("positions", [["ffn"], [], ["attn", "attn"]])
def test_st_adapter_positions_are_checked(positions):
    with pytest.raises(zeroi2v.UserError, match=r"^st_adapter_positions: one or both of \['attn', 'mlp'\]"):
        model_config(backbone=KW["backbone"], method="st_adapter", st_adapter_positions=positions)
