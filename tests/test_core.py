"""Core method: STDHA, linear adapters, exact reparameterisation, cost, trainable set, save/load."""

import math

import pytest
import timm
import torch
import torch._dynamo
import torch.nn.functional as F

import zeroi2v
from zeroi2v.adapters import LinearAdapter
from zeroi2v.memory import LeanBlock, LeanQuickGELU, lean_training
from zeroi2v.model import count_flops, count_params, model_config
from zeroi2v.stdha import STDHAttention
from zeroi2v.train import param_groups

# Small versions of the backbone families users bring: a CLIP tower (pre-norm, QuickGELU),
# DeiT, AugReg ViT-S. 12/6 heads so that 6 temporal heads fit.
BACKBONES = {
    "clip": (
        "vit_base_patch16_clip_quickgelu_224",
        dict(img_size=32, patch_size=8, depth=2, embed_dim=96, num_heads=6),
    ),
    "deit": ("deit_tiny_patch16_224", dict(img_size=32, patch_size=16, depth=2, num_heads=6)),
    "augreg": ("vit_small_patch16_224.augreg_in21k_ft_in1k", dict(img_size=48, patch_size=16, depth=2)),
}
OFFSETS = [(), (-1, 1), (-1, 1, -2, 2, -3, 3)]


def randomize_adapters(model, std=0.05, seed=0):
    """Non-zero adapters (and temporal embedding): merging the zero init proves nothing."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LinearAdapter):
                for p in module.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
        if model.temporal_embed is not None:
            model.temporal_embed.copy_(torch.randn(model.temporal_embed.shape, generator=gen) * 0.1)
    return model


def make(kind="clip", num_frames=8, **kw):
    name, timm_kwargs = BACKBONES[kind]
    torch.manual_seed(0)
    return zeroi2v.create_model(name, num_frames=num_frames, **{"num_classes": 7, **timm_kwargs, **kw})


def clip_for(model, batch=2, seed=1):
    h, w = model.img_size
    return torch.randn(batch, 3, model.num_frames, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", list(BACKBONES))
@pytest.mark.parametrize("offsets", OFFSETS, ids=["0heads", "2heads", "6heads_dt3"])
def test_merge_is_exact_with_random_adapters(kind, offsets):
    # headless (num_classes=0): compare the (B, D) features, which are O(1), not small logits
    model = randomize_adapters(make(kind, head_offsets=offsets, adapter_scale=1.0, num_classes=0), std=0.1).eval()
    merged = zeroi2v.reparameterize(model)
    assert not any(isinstance(m, LinearAdapter) for m in merged.modules())
    assert not any("adapter" in k for k in merged.state_dict())
    x = clip_for(model)
    with torch.no_grad():
        ref, out = model(x), merged(x)
    err = (ref - out).abs().max().item()
    plain = make(kind, head_offsets=offsets, num_classes=0).eval()
    with torch.no_grad():
        effect = (plain(x) - ref).abs().max().item()
    print(
        f"merge {kind} offsets={offsets}: max abs error {err:.2e} "
        f"(feature scale {ref.abs().max():.2f}, adapters moved features by {effect:.2f})"
    )
    assert effect > 0.1  # the adapters really change the function being merged
    assert err <= 1e-4


def test_qkv_out_adapter_gives_q_k_v_their_own_maps_and_folds_exactly():
    # the optional fifth position: after the QKV projection, a bottleneck as narrow as the others
    positions = ("qkv_out", "attn_out", "mlp_in", "mlp_out")
    model = randomize_adapters(
        make("clip", head_offsets=(-1, 1), adapter_positions=positions, adapter_scale=1.0, num_classes=0), std=0.1
    ).eval()
    qkv = model.backbone.blocks[0].attn.qkv
    assert qkv.adapter_in is None and qkv.adapter_out.down.out_features == model.embed_dim // 4
    assert qkv.adapter_out.up.out_features == 3 * model.embed_dim
    m, _ = qkv.adapter_out.affine()
    d = model.embed_dim
    assert not torch.allclose(m[:d, :d], m[d : 2 * d, d : 2 * d])  # queries and keys are mapped differently
    merged = zeroi2v.reparameterize(model)
    x = clip_for(model)
    with torch.no_grad():
        ref, out = model(x), merged(x)
    plain = make("clip", head_offsets=(-1, 1), num_classes=0).eval()
    with torch.no_grad():
        assert (plain(x) - ref).abs().max() > 0.1
    assert (ref - out).abs().max() <= 1e-4
    name, timm_kwargs = BACKBONES["clip"]
    image = timm.create_model(name, pretrained=False, num_classes=0, **timm_kwargs)
    assert count_params(merged) == count_params(image) + model.num_frames * d  # the image model + T·D


def test_merge_changes_nothing_but_adapters_and_reports_error():
    model = randomize_adapters(make("clip", head_offsets=(-1, 1)))
    model.train()
    merged = zeroi2v.reparameterize(model)
    assert model.training  # the input model is left as it was
    assert merged.merge_error is not None and merged.merge_error <= 1e-4
    assert not merged.training
    assert merged.config.adapter_ratio == 0


def test_adapters_are_affine_and_zero_initialised():
    adapter = LinearAdapter(16, ratio=0.25, scale=0.5)
    x = torch.randn(5, 16)
    assert torch.equal(adapter(x), x)  # W2, b2 = 0: starts at identity
    torch.nn.init.normal_(adapter.up.weight)
    torch.nn.init.normal_(adapter.up.bias)
    m, c = adapter.affine()
    assert torch.allclose(adapter(x).double(), x.double() @ m.T + c, atol=1e-5)
    assert adapter.down.out_features == 4


def slow_stdha(attn, x, num_frames, offsets, boundary="keep"):
    """Obviously-correct STDHA: per clip, frame and head, gather the source frame's K/V by hand."""
    BT, N, C = x.shape
    H, d = attn.num_heads, attn.head_dim
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv.view(BT, N, 3, H, d).unbind(2)
    out = torch.zeros(BT, N, H, d)
    offsets = list(offsets) + [0] * (H - len(offsets))
    for b in range(BT // num_frames):
        for t in range(num_frames):
            for h in range(H):
                src = t + offsets[h]
                inside = 0 <= src < num_frames
                if not inside and boundary == "keep":
                    src = t
                kk = k[b * num_frames + src, :, h] if inside or boundary == "keep" else torch.zeros(N, d)
                vv = v[b * num_frames + src, :, h] if inside or boundary == "keep" else torch.zeros(N, d)
                qq = q[b * num_frames + t, :, h]
                weights = torch.softmax(qq @ kk.T / math.sqrt(d), dim=-1)
                out[b * num_frames + t, :, h] = weights @ vv
    return out.reshape(BT, N, C) @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize("offsets", [(), (-1,), (-1, 1), (2, -3, 1, 0, -1)])
@pytest.mark.parametrize("boundary", ["keep", "zero"])
def test_stdha_matches_slow_per_head_gather(offsets, boundary):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_heads=6, depth=1, img_size=32, patch_size=8)
    T = 4
    attn = STDHAttention(vit.blocks[0].attn, num_frames=T, head_offsets=offsets, boundary=boundary).eval()
    x = torch.randn(2 * T, 17, 192)
    with torch.no_grad():
        fast, slow = attn(x), slow_stdha(attn, x, T, offsets, boundary)
    assert (fast - slow).abs().max().item() < 1e-5
    # compiled inference gathers K/V out of place instead (Dynamo's capture is where that path is taken)
    torch._dynamo.reset()
    with torch.no_grad():
        gathered = torch.compile(attn, backend="eager", fullgraph=True)(x)
    torch._dynamo.reset()
    assert (gathered - slow).abs().max().item() < 1e-5
    # gradients through the in-place K/V shift reach the source frames as in the slow version
    g = torch.randn_like(fast)
    grads = []
    for f in (lambda x: attn(x), lambda x: slow_stdha(attn, x, T, offsets, boundary)):
        xg = x.clone().requires_grad_()
        attn.zero_grad(set_to_none=True)
        (f(xg) * g).sum().backward()
        grads.append((xg.grad, attn.qkv.weight.grad))
    (gx_fast, gw_fast), (gx_slow, gw_slow) = grads
    assert (gx_fast - gx_slow).abs().max().item() < 1e-4
    assert (gw_fast - gw_slow).abs().max().item() < 1e-3 * gw_slow.abs().max().item()


def test_temporal_heads_see_frame_order_and_spatial_model_does_not():
    x = clip_for(make("clip", num_frames=4))
    perm = torch.tensor([2, 0, 3, 1])
    temporal = randomize_adapters(make("clip", num_frames=4, head_offsets=(-1, 1), temporal_embedding=False)).eval()
    spatial = randomize_adapters(make("clip", num_frames=4, head_offsets=(), temporal_embedding=False)).eval()
    with torch.no_grad():
        assert (temporal(x) - temporal(x[:, :, perm])).abs().max() > 2e-4  # 20x the spatial bound below
        assert (spatial(x) - spatial(x[:, :, perm])).abs().max() < 1e-5
        # the temporal embedding alone also makes the model order-aware
        embed = randomize_adapters(make("clip", num_frames=4, head_offsets=(), temporal_embedding=True)).eval()
        assert (embed(x) - embed(x[:, :, perm])).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["clip", "augreg"])
def test_merged_cost_equals_plain_image_model(kind):
    name, timm_kwargs = BACKBONES[kind]
    T = 8
    model = make(kind, num_frames=T, head_offsets=(-1, 1))
    merged = zeroi2v.reparameterize(model)
    plain = timm.create_model(name, pretrained=False, num_classes=7, **timm_kwargs)
    p_plain, p_merged, p_model = count_params(plain), count_params(merged), count_params(model)
    assert p_merged == p_plain + T * model.embed_dim
    f_plain = count_flops(plain, num_frames=T)
    f_merged, f_model = count_flops(merged), count_flops(model)
    print(
        f"{kind}: params plain {p_plain} merged {p_merged} unmerged {p_model}; "
        f"FLOPs plain {f_plain} merged {f_merged} unmerged {f_model} (+{100 * (f_model / f_plain - 1):.1f}%)"
    )
    assert abs(f_merged - f_plain) / f_plain <= 1e-3
    assert f_model > f_plain * 1.05  # the unmerged adapters do cost something


def test_flops_include_attention():
    model = zeroi2v.reparameterize(make("clip", num_frames=2, head_offsets=()))
    no_attn = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert count_flops(model) > no_attn  # SDPA on CPU is counted too


def test_only_intended_parameters_train():
    model = make("clip", num_frames=4, head_offsets=(-1, 1))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected_prefixes = ("head.", "temporal_embed", "backbone.norm.", "backbone.fc_norm.")
    assert all("adapter_" in n or n.startswith(expected_prefixes) for n in trainable), trainable
    assert any("adapter_in" in n for n in trainable) and any("adapter_out" in n for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW(param_groups(model, 0.05, {}), lr=1e-2)
    model.train()
    loss = F.cross_entropy(model(clip_for(model)), torch.tensor([0, 1]))
    loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in trainable), n
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), n
    # adapters' second layer starts at zero and moves after a step
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith("adapter_in.up.weight"))


def test_full_finetuning_trains_everything():
    model = make("clip", num_frames=4, freeze=False)
    assert all(p.requires_grad for p in model.parameters())


def test_param_groups_exclude_embeddings_and_norms_from_decay():
    """As the reference: no decay on embeddings and norms; adapter and classifier biases are decayed."""
    model = make("clip", num_frames=4, freeze=False)
    decay, no_decay = sorted(param_groups(model, 0.05, {}), key=lambda g: -g["weight_decay"])
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0
    assert {
        "temporal_embed",
        "backbone.cls_token",
        "backbone.pos_embed",
        "backbone.norm.weight",
        "backbone.blocks.0.norm1.bias",
    } <= set(no_decay["names"])
    assert {"head.bias", "backbone.blocks.0.attn.qkv.adapter_in.down.bias"} <= set(decay["names"])
    assert all("norm" not in n and "embed" not in n.replace("patch_embed", "") for n in decay["names"])


def test_lr_mult_groups_by_name_prefix():
    model = make("clip", num_frames=4)
    groups = param_groups(model, 0.05, {"backbone": 0.1, "temporal_embed": 0.1})
    mult = {n: g["lr_mult"] for g in groups for n in g["names"]}
    assert mult["head.weight"] == 1.0 and mult["temporal_embed"] == 0.1
    assert mult["backbone.norm.weight"] == 0.1 and mult["backbone.blocks.1.mlp.fc2.adapter_out.up.weight"] == 0.1
    with pytest.raises(zeroi2v.UserError, match="match no trainable parameter"):
        param_groups(model, 0.05, {"backbone.blocks.0.attn.qkv.weight": 2.0})  # frozen


def test_lr_mult_globs_match_every_block():
    """A key with `*` is a glob over parameter names (and their prefixes); the longest key wins."""
    model = make("clip", num_frames=4)
    groups = param_groups(model, 0.05, {"*.attn.qkv.adapter_in": 0.25, "backbone": 0.5})
    mult = {n: g["lr_mult"] for g in groups for n in g["names"]}
    qkv_in = [n for n in mult if ".attn.qkv.adapter_in." in n]
    assert len(qkv_in) == 4 * len(model.backbone.blocks) and all(mult[n] == 0.25 for n in qkv_in)
    assert mult["backbone.blocks.0.attn.proj.adapter_out.up.weight"] == 0.5 and mult["head.weight"] == 1.0
    with pytest.raises(zeroi2v.UserError, match="match no trainable parameter"):
        param_groups(model, 0.05, {"*.qkv.adapter_inn": 0.25})


def test_features_when_headless():
    model = make("clip", num_frames=4, num_classes=0).eval()
    x = clip_for(model)
    feats = model(x)
    assert feats.shape == (2, model.embed_dim)
    # features are the frame-mean of the final-normed class token (checked on a spatial-only
    # model, where frames are independent; zero-initialised adapters are the identity)
    frames = x.transpose(1, 2).reshape(8, 3, 32, 32)
    spatial = make("clip", num_frames=4, num_classes=0, head_offsets=()).eval()
    with torch.no_grad():
        vit = spatial.backbone
        per_frame = vit.norm(vit.blocks(vit.norm_pre(vit._pos_embed(vit.patch_embed(frames)))))[:, 0]
        assert torch.allclose(spatial(x), per_frame.view(2, 4, -1).mean(1), atol=1e-5)


@pytest.mark.parametrize("merge", [False, True])
def test_save_load_roundtrip(tmp_path, merge):
    model = randomize_adapters(make("deit", num_frames=4, head_offsets=(1, -1))).eval()
    if merge:
        model = zeroi2v.reparameterize(model)
    zeroi2v.save_pretrained(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    loaded = zeroi2v.load_pretrained(tmp_path)
    assert loaded.merged == merge
    x = clip_for(model)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("bias_kwargs", [dict(qkv_bias=False), dict(qkv_bias=False, proj_bias=False)])
def test_merge_into_layers_without_bias_adds_no_parameters(tmp_path, bias_kwargs):
    """Adapters beside a bias-free layer are bias-free: the merged model is the plain timm model."""
    name, timm_kwargs = BACKBONES["clip"]
    model = randomize_adapters(make("clip", num_frames=4, **bias_kwargs)).eval()
    merged = zeroi2v.reparameterize(model)
    plain = timm.create_model(name, num_classes=7, **timm_kwargs, **bias_kwargs)
    assert count_params(merged) == count_params(plain) + 4 * 96
    assert merged.backbone.blocks[0].attn.qkv.bias is None
    zeroi2v.save_pretrained(merged, tmp_path)
    loaded = zeroi2v.load_pretrained(tmp_path)
    x = clip_for(model)
    with torch.no_grad():
        assert (model(x) - loaded(x)).abs().max() < 1e-4


def test_adapters_with_biases_beside_bias_free_layers_merge_into_a_rebuildable_model(tmp_path):
    """Models built before adapters followed their layer's bias: the fold creates biases, and timm's one
    proj_bias flag (proj, fc1, fc2 together) must still rebuild the merged model."""
    model = make("clip", num_frames=4, proj_bias=False, adapter_positions=("mlp_in",))
    for block in model.backbone.blocks:
        block.mlp.fc1.adapter_in = LinearAdapter(96, 0.25, 0.5, bias=True)
    model = randomize_adapters(model).eval()
    merged = zeroi2v.reparameterize(model)
    assert merged.config.timm_kwargs["proj_bias"] is True
    zeroi2v.save_pretrained(merged, tmp_path)
    loaded = zeroi2v.load_pretrained(tmp_path)
    x = clip_for(model)
    with torch.no_grad():
        assert (model(x) - loaded(x)).abs().max() < 1e-4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backbone="resnet18"), "not a timm VisionTransformer"),
        (dict(backbone="no_such_model_xyz"), "unknown timm model"),
        (dict(head_offsets=(1,) * 7), "only 6 heads"),
        (dict(head_offsets=(-4,)), "num_frames=4"),
        (dict(head_offsets=(0.5,)), "integers"),
        (dict(adapter_positions=("everywhere",)), "unknown adapter positions"),
        (dict(embed_dim=100), "could not build"),
        (dict(global_pool=""), "pooled feature"),
        (dict(timm_kwargs={"num_classes": 5}), "zeroi2v's own arguments"),
        (dict(backbone="vit_dwee_patch16_reg1_gap_256", depth=1, img_size=32), "not timm's standard Attention"),
        (dict(backbone="aimv2_large_patch14_224", depth=1, img_size=28), "has no Linear 'fc1'"),
    ],
)
def test_bad_arguments_are_one_line_user_errors(kwargs, message):
    name, timm_kwargs = BACKBONES["clip"]
    args = dict(backbone=name, num_frames=4, num_classes=3, **timm_kwargs)
    args.update(kwargs)
    if args["backbone"] != name:
        for k in timm_kwargs:
            if k not in kwargs:
                args.pop(k)
    with pytest.raises(zeroi2v.UserError, match=message) as info:
        zeroi2v.create_model(**args)
    assert "\n" not in str(info.value)


def test_wrong_clip_length_is_a_clear_error():
    model = make("clip", num_frames=4)
    with pytest.raises(zeroi2v.UserError, match="built for 4 frames"):
        model(torch.randn(1, 3, 8, 32, 32))


def test_load_pretrained_rejects_non_model_dirs(tmp_path):
    with pytest.raises(zeroi2v.UserError, match="not a zeroi2v model directory"):
        zeroi2v.load_pretrained(tmp_path)


def test_lean_quickgelu_keeps_numbers_and_saves_one_tensor_less():
    """CLIP's QuickGELU in the video model: timm's values and gradients, half the saved activations."""
    from timm.layers.activations import QuickGELU as TimmQuickGELU

    x = torch.randn(4, 33, 64, dtype=torch.float64, requires_grad=True)
    ours, timms = LeanQuickGELU()(x), TimmQuickGELU()(x)
    assert torch.equal(ours, timms)
    g = torch.randn_like(ours)
    (ga,), (gb,) = torch.autograd.grad(ours, x, g), torch.autograd.grad(timms, x, g)
    assert torch.allclose(ga, gb, atol=1e-12)
    assert torch.autograd.gradcheck(LeanQuickGELU(), (x[:1, :3, :5].detach().requires_grad_(),))

    def saved(act):  # elements of the distinct tensors autograd keeps
        kept = {}
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: kept.setdefault(t.data_ptr(), t.numel()) and t, lambda t: t
        ):
            act(x.float())
        return sum(kept.values())

    assert saved(LeanQuickGELU()) * 2 == saved(TimmQuickGELU())
    model = make("clip")
    assert not any(isinstance(m, LeanQuickGELU) for m in model.modules())  # built plain: lean only for training
    lean_training(model)
    assert all(isinstance(b.mlp.act, LeanQuickGELU) for b in model.backbone.blocks)


@pytest.mark.parametrize("kind", ["clip", "deit", "joint"])
def test_lean_training_keeps_numbers_and_keys_with_less_memory(kind):
    """`lean_training` (norm -> adapter and the adapted output projection recomputed in backward): same
    state-dict keys, same loss and gradients, fewer saved bytes."""
    import copy

    if kind == "joint":  # the joint-attention baseline wraps the attention: only the activations are lean
        name, timm_kwargs = BACKBONES["clip"]
        torch.manual_seed(0)
        model = zeroi2v.build_model(
            model_config(
                name, num_frames=8, num_classes=7, head_offsets=(), head_dropout=0.0, method="joint", **timm_kwargs
            )
        )
        model = randomize_adapters(model).train()
    else:
        model = randomize_adapters(make(kind, head_offsets=(-1, 1), head_dropout=0.0)).train()
    lean = lean_training(copy.deepcopy(model))
    assert list(lean.state_dict()) == list(model.state_dict())
    assert any(isinstance(b, LeanBlock) for b in lean.backbone.blocks) == (kind != "joint")
    x = clip_for(model)

    def step(net):
        kept = {}
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: kept.setdefault((t.data_ptr(), t.shape), t.numel() * t.element_size()) and t, lambda t: t
        ):
            loss = net(x).square().mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}
        return loss.detach(), grads, sum(kept.values())

    loss_a, grads_a, bytes_a = step(model)
    loss_b, grads_b, bytes_b = step(lean)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and any("adapter" in n for n in grads_a)
    for n in grads_a:
        assert torch.allclose(grads_a[n], grads_b[n], rtol=1e-4, atol=1e-7), n
    assert bytes_b < (0.95 if kind == "joint" else 0.9) * bytes_a, (bytes_a, bytes_b)


def test_lean_training_leaves_blocks_with_adapters_it_does_not_restate():
    """An adapter after qkv or fc1 (not a ZeroI2V position; a user's extension) must keep training: the
    lean block would skip it, so lean_training leaves that block plain and the outputs stay equal."""
    import copy

    from zeroi2v.adapters import LinearAdapter

    model = randomize_adapters(make("clip", head_offsets=(-1, 1), head_dropout=0.0)).eval()
    blocks = model.backbone.blocks
    blocks[0].attn.qkv.adapter_out = LinearAdapter(blocks[0].attn.qkv.out_features)
    blocks[1].mlp.fc1.adapter_out = LinearAdapter(blocks[1].mlp.fc1.out_features)
    for adapter in (blocks[0].attn.qkv.adapter_out, blocks[1].mlp.fc1.adapter_out):
        torch.nn.init.normal_(adapter.up.weight, std=0.1)
    lean = lean_training(copy.deepcopy(model))
    assert not any(isinstance(b, LeanBlock) for b in lean.backbone.blocks)
    x = clip_for(model)
    with torch.no_grad():
        assert torch.equal(lean(x), model(x))


@pytest.mark.parametrize("boundary", ["keep", "zero"])
def test_shift_kv_frame_by_frame_and_per_head_clone_equal_the_out_of_place_gather(boundary):
    """Both copy strategies of the in-place shift (CPU: frame by frame, no clone; elsewhere: one clone
    of the source frames per head) give gather_kv's K/V, and the same gradients."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_heads=6, depth=1, img_size=32, patch_size=8)
    T, offsets = 4, (2, -3, 1, 0, -1, 5)
    attn = STDHAttention(vit.blocks[0].attn, num_frames=T, head_offsets=offsets, boundary=boundary)
    x = torch.randn(2 * T, 17, 192, requires_grad=True)
    g = torch.randn(3, 2 * T, 6, 17, 32)
    results = []
    for frame_by_frame in (True, False):
        qkv = attn.qkv(x).view(2 * T, 17, 3, 6, 32)
        expected = [attn.gather_kv(t) for t in qkv.detach().permute(2, 0, 3, 1, 4).unbind(0)[1:]]
        attn.shift_kv(qkv, frame_by_frame=frame_by_frame)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        assert torch.equal(k, expected[0]) and torch.equal(v, expected[1])
        (grad,) = torch.autograd.grad((torch.stack([q, k, v]) * g).sum(), x)
        results.append(grad)
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_stdha_blocks_choose_which_blocks_have_temporal_heads():
    model = make("clip", num_frames=4, head_offsets=(-1, 1), stdha_blocks=[-1])
    assert [b.attn.head_offsets for b in model.backbone.blocks] == [(), (-1, 1)]
    with pytest.raises(zeroi2v.UserError, match="the backbone has 2 blocks"):
        make("clip", num_frames=4, stdha_blocks=[2])
