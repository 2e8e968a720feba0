"""`torch.compile` through STDHA, the adapters and the training-memory savers: one graph, eager's numbers.

Any graph break fails (`fullgraph=True`; `torch._dynamo.explain` names the break's reason in the
message). Compiled outputs and gradients must equal eager's in fp32 to 1e-5.

Compiling is slow on a small CPU, so each compiled artefact is built once per module (fixtures) and
the backends are chosen by cost: Dynamo's capture (where graph breaks happen) is backend-independent;
`aot_eager` adds AOTAutograd's functionalised forward and backward graphs (where STDHA's in-place K/V
shift and the savers' checkpoints are traced) in seconds; Inductor, the backend users run, compiles
the merged model's forward here (~20 s on 2 cores) and the training step when `ZEROI2V_TEST_INDUCTOR=1`
(~90 s on 2 cores; `tests/test_cuda.py` compiles the training step with Inductor on a GPU).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch._dynamo

import zeroi2v
from zeroi2v.memory import LeanBlock, lean_training

TOL = 1e-5
TINY = dict(
    num_frames=4, num_classes=5, img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=4, head_offsets=(-1, 1)
)
# the CLIP variant: QuickGELU (swapped for the lean autograd.Function in training) and a pre-norm
CLIP_LIKE = dict(TINY, act_layer="quick_gelu", pre_norm=True)


@pytest.fixture(scope="module", autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def make_model(lean: bool = False, **kwargs) -> zeroi2v.ZeroI2V:
    """`lean`: with the training-memory substitutions the engine trains with (zeroi2v.memory)."""
    torch.manual_seed(0)
    model = zeroi2v.create_model("vit_tiny_patch16_224", **kwargs)
    with torch.no_grad():  # trained-like adapters and temporal table, so the merge is not the image model
        for name, p in model.named_parameters():
            if "adapter" in name or "temporal_embed" in name:
                p.normal_(0, 0.05)
    return lean_training(model) if lean else model


def clips(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 4, 32, 32, generator=gen), torch.randint(0, 5, (2,), generator=gen)


def train_step(model, x, y, forward=None) -> tuple[torch.Tensor, dict]:
    """Forward (train mode: dropout and the memory savers' recomputation) through `forward` (default:
    the model itself, or its compiled version), loss, backward; the model's gradients by name."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the same dropout masks for eager and compiled
    out = (model if forward is None else forward)(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def graph_breaks(fn, *args) -> str:
    explanation = torch._dynamo.explain(fn)(*args)
    reasons = "; ".join(str(b.reason) for b in explanation.break_reasons)
    return f"{explanation.graph_break_count} graph breaks: {reasons}" if explanation.graph_break_count else ""


def assert_close(name, a, b):
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{name}: compiled differs from eager by {err:.2e} > {TOL}"


@pytest.fixture(scope="module")
def unmerged():
    return make_model(lean=True, **TINY).train()


@pytest.fixture(scope="module")
def merged():
    return zeroi2v.reparameterize(make_model(**TINY).eval()).eval()


@pytest.mark.parametrize("kwargs", [TINY, CLIP_LIKE], ids=["vit", "clip-like"])
def test_no_graph_breaks_unmerged_training_and_merged(kwargs):
    model = make_model(lean=True, **kwargs)
    x, _ = clips()
    model.train()
    assert all(isinstance(b, LeanBlock) for b in model.backbone.blocks)  # the savers' recomputation is traced
    assert not graph_breaks(model, x), graph_breaks(model, x)
    merged = zeroi2v.reparameterize(make_model(**kwargs).eval())
    with torch.no_grad():
        breaks = graph_breaks(merged, x)
    assert not breaks, breaks
    torch._dynamo.reset()


@pytest.mark.parametrize("kwargs", [TINY, CLIP_LIKE], ids=["vit", "clip-like"])
def test_training_step_fullgraph_aot_autograd_equals_eager(kwargs):
    """Forward and backward graphs (AOTAutograd) of the unmerged model in train mode, one graph."""
    model = make_model(lean=True, **kwargs).train()
    x, y = clips()
    out, grads = train_step(model, x, y)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    c_out, c_grads = train_step(model, x, y, forward=compiled)
    assert_close("output", c_out, out)
    assert grads.keys() == c_grads.keys() and any("adapter" in n for n in grads)
    for n in grads:
        assert_close(f"grad {n}", c_grads[n], grads[n])
    torch._dynamo.reset()


def test_merged_forward_inductor_equals_eager(merged):
    x, _ = clips(2)
    compiled = torch.compile(merged, fullgraph=True)  # Inductor
    with torch.no_grad():
        assert_close("merged output", compiled(x), merged(x))
        x3, _ = clips(3)  # a second batch of the same shape: no recompilation needed, still equal
        assert_close("merged output (second batch)", compiled(x3), merged(x3))
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("ZEROI2V_TEST_INDUCTOR") != "1",
    reason="Inductor training-step compile takes ~90 s on 2 cores; set ZEROI2V_TEST_INDUCTOR=1",
)
def test_training_step_inductor_equals_eager(unmerged):
    import torch._inductor.config as inductor_config

    x, y = clips()
    out, grads = train_step(unmerged, x, y)
    with inductor_config.patch(fallback_random=True):  # eager's dropout masks
        c_out, c_grads = train_step(unmerged, x, y, forward=torch.compile(unmerged, fullgraph=True))
    assert_close("output", c_out, out)
    for n in grads:
        assert_close(f"grad {n}", c_grads[n], grads[n])
    torch._dynamo.reset()
