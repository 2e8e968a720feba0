"""Peer baselines (AIM, ST-Adapter, joint attention): same interface as ZeroI2V, trainable, and costlier."""

import pytest
import timm
import torch

import zeroi2v
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


@pytest.mark.parametrize("method", ["aim", "st_adapter", "joint"])
def test_baselines_train_like_zeroi2v_and_cost_more(method, tmp_path):
    model = create_baseline(method, **KW)
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


@pytest.mark.parametrize("method", ["aim", "st_adapter"])
def test_baselines_start_at_the_image_model(method):
    """Zero-initialised last layers (as in the official code): AIM/ST-Adapter begin as frame averaging."""
    x = torch.randn(1, 3, 4, 32, 32)
    torch.manual_seed(0)
    spatial = zeroi2v.create_model(**{**KW, "head_offsets": (), "temporal_embedding": False, "adapter_ratio": 0}).eval()
    torch.manual_seed(0)  # same backbone weights: the peers' modules are created after it
    peer = create_baseline(method, **KW).eval()
    with torch.no_grad():
        assert torch.allclose(peer.forward_features(x), spatial.forward_features(x), atol=1e-5)
