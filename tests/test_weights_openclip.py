"""Image weights written by open_clip's own code load through `zeroi2v.create_model(pretrained=...)`.

A tiny open_clip CLIP (QuickGELU, random init) is saved the ways users have CLIP weights on disk: the
full state dict (`visual.*` + text tower) as a torch pickle, as safetensors, and as a TorchScript archive
like OpenAI's released .pt files. The ZeroI2V model with no temporal heads, no adapters and no temporal
embedding must output open_clip's own image features before the projection, averaged over frames.
"""

import copy

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
from open_clip.model import CLIP  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import zeroi2v  # noqa: E402

TIMM_NAME = "vit_base_patch16_clip_quickgelu_224"  # OpenAI CLIP towers
TIMM_KWARGS = dict(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2)
FRAMES = 2


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    model = CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=128, layers=2, head_width=64),
        text_cfg=dict(context_length=8, vocab_size=100, width=64, heads=2, layers=1),
        quick_gelu=True,
    ).eval()
    with torch.no_grad():  # non-trivial norms and biases (open_clip initialises them to 1 / 0)
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def write(model, kind, tmp_path):
    state = model.state_dict()
    assert any(k.startswith("visual.") for k in state) and "text_projection" in state
    if kind == "state_dict_bin":
        path = tmp_path / "open_clip_pytorch_model.bin"
        torch.save(state, path)
    elif kind == "safetensors":
        path = tmp_path / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "ViT-tiny.pt"
        torch.jit.save(torch.jit.script(copy.deepcopy(model)), str(path))
    return path


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize("kind", ["state_dict_bin", "safetensors", "torchscript"])
def test_open_clip_files_match_open_clip_features(clip_model, kind, tmp_path):
    path = write(clip_model, kind, tmp_path)
    model = zeroi2v.create_model(
        TIMM_NAME,
        num_frames=FRAMES,
        num_classes=0,
        pretrained=str(path),
        head_offsets=(),
        adapter_ratio=0.0,
        temporal_embedding=False,
        **TIMM_KWARGS,
    ).eval()

    torch.manual_seed(1)
    video = torch.randn(2, 3, FRAMES, 32, 32)
    frames = video.transpose(1, 2).reshape(-1, 3, 32, 32)
    tower = copy.deepcopy(clip_model.visual)
    tower.proj = None  # open_clip's pooled, ln_post-normed class token, before the CLIP projection
    with torch.no_grad():
        got = model(video)
        want = tower(frames).reshape(2, FRAMES, -1).mean(1)
        want_projected = clip_model.encode_image(frames).reshape(2, FRAMES, -1).mean(1)

    err = (got - want).abs().max().item()
    err_projected = (got @ clip_model.visual.proj - want_projected).abs().max().item()
    print(f"{kind}: max abs error {err:.2e} (after CLIP projection {err_projected:.2e})")
    assert got.shape == want.shape == (2, 128)
    assert err <= 1e-4
    assert err_projected <= 1e-4
