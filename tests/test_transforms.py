"""Training augmentation against the reference: pytorchvideo's RandAugment, MMAction2's RandomErasing, order."""

import pytest
import torch
from torchvision import tv_tensors

from zeroi2v.data.augment_ops import OPS, apply_op, op_argument
from zeroi2v.data.transforms import RandAugment, RandomErasing, train_transform

RAW = dict(mean=(0.0,) * 3, std=(1.0,) * 3)  # output = pixel / 255
# pytorchvideo's RandAugment table, in its order (the sampled index picks from it)
REFERENCE_OPS = [
    "AdjustBrightness",
    "AdjustContrast",
    "AdjustSaturation",
    "AdjustSharpness",
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
]
SIGNED = {
    "AdjustBrightness",
    "AdjustContrast",
    "AdjustSaturation",
    "AdjustSharpness",
    "Rotate",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
}


def clip(frames=4, h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, 3, h, w), dtype=torch.uint8, generator=g)


# --- op strengths --------------------------------------------------------------------------------------
def test_op_set_is_pytorchvideos():
    assert list(OPS) == REFERENCE_OPS


@pytest.mark.parametrize(
    "name, positive, negative",
    [
        ("AdjustBrightness", 1.63, 0.37),
        ("AdjustContrast", 1.63, 0.37),
        ("AdjustSaturation", 1.63, 0.37),
        ("AdjustSharpness", 1.63, 0.37),
        ("Rotate", 21.0, -21.0),
        ("ShearX", 0.21, -0.21),
        ("ShearY", 0.21, -0.21),
        ("TranslateX", 0.315, -0.315),
        ("TranslateY", 0.315, -0.315),
    ],
)
def test_signed_op_strength_at_magnitude_7(name, positive, negative):
    assert op_argument(name, 7, +1) == pytest.approx(positive)
    assert op_argument(name, 7, -1) == pytest.approx(negative)


def test_unsigned_op_strengths():
    assert op_argument("Posterize", 7) == 2  # 4 - int(2.8) bits kept
    assert op_argument("Solarize", 7) == pytest.approx(0.3)
    assert [op_argument(name, 7) for name in ("AutoContrast", "Equalize", "Invert")] == [None] * 3
    # the ends of the 0..10 scale
    assert op_argument("Rotate", 10) == 30 and op_argument("TranslateX", 10) == pytest.approx(0.45)
    assert op_argument("Posterize", 0) == 4 and op_argument("Posterize", 10) == 0
    assert op_argument("Solarize", 0) == 1 and op_argument("AdjustContrast", 0) == 1


def test_sigma_zero_gives_exactly_the_magnitude():
    expected = {n: {op_argument(n, 7, s) for s in (1, -1)} for n in OPS}
    for seed in range(20):
        torch.manual_seed(seed)
        ops = RandAugment(4, 7, prob=1.0, sigma=0.0).sample()
        assert len(ops) == 4 and len({n for n, _ in ops}) == 4  # distinct ops
        assert all(arg in expected[n] for n, arg in ops)


# --- sampling statistics -------------------------------------------------------------------------------
def test_each_op_applies_with_probability_half_and_gaussian_levels():
    torch.manual_seed(0)
    augment = RandAugment()  # 4 layers, magnitude 7, prob 0.5, sigma 0.5
    n = 2000
    samples = [augment.sample() for _ in range(n)]
    applied = sum(len(s) for s in samples) / (4 * n)
    assert abs(applied - 0.5) < 0.02
    counts = torch.zeros(len(OPS))
    rotations = []
    for s in samples:
        for name, arg in s:
            counts[OPS.index(name)] += 1
            if name == "Rotate":
                rotations.append(arg)
    assert (counts / counts.sum() - 1 / len(OPS)).abs().max() < 0.02  # uniform over the 14 ops
    rotations = torch.tensor(rotations)
    assert abs((rotations > 0).float().mean() - 0.5) < 0.1  # random sign
    assert abs(rotations.abs().mean() - 21) < 0.3 and abs(rotations.abs().std() - 1.5) < 0.3  # sigma 0.5 level


def test_draws_follow_pytorchvideos_order():
    """multinomial of 4 ops, then per op: apply? (rand <= p), level N(7, 0.5) clipped, sign (rand > 0.5 -> +)."""
    for seed in range(5):
        torch.manual_seed(seed)
        got = RandAugment().sample()
        torch.manual_seed(seed)
        expected = []
        for i in torch.multinomial(torch.ones(14), 4, replacement=False).tolist():
            name = REFERENCE_OPS[i]
            if torch.rand(1).item() > 0.5:
                continue
            level = min(10.0, max(0.0, torch.normal(7.0, 0.5, size=(1,)).item()))
            sign = (1 if torch.rand(1).item() > 0.5 else -1) if name in SIGNED else 1
            expected.append((name, op_argument(name, level, sign)))
        assert got == expected


# --- ops on frames -------------------------------------------------------------------------------------
def reference_affine(video, m):
    """The reference's affine: output pixel -> input pixel by m (about the image center), bilinear, fill 0.5."""
    t, c, h, w = video.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    xc, yc = xs - w / 2 + 0.5, ys - h / 2 + 0.5
    grid = torch.stack([(m[0] * xc + m[1] * yc + m[2]) / (w / 2), (m[3] * xc + m[4] * yc + m[5]) / (h / 2)], -1)
    image = torch.cat([video.double(), torch.ones(t, 1, h, w, dtype=torch.float64)], 1)
    out = torch.nn.functional.grid_sample(image, grid[None].expand(t, h, w, 2), mode="bilinear", align_corners=False)
    out, mask = out[:, :3], out[:, 3:]
    return ((out - 0.5) * mask + 0.5).round().to(torch.uint8)


@pytest.mark.parametrize("f", [0.21, -0.21])
def test_shear_and_translate_use_the_reference_matrices(f):
    video = clip(2, 12, 16)
    h, w = video.shape[-2:]
    for name, m in [
        ("ShearX", [1, f, h * f / 2, 0, 1, 0]),
        ("ShearY", [1, 0, 0, f, 1, w * f / 2]),
        ("TranslateX", [1, 0, f * w, 0, 1, 0]),
        ("TranslateY", [1, 0, 0, 0, 1, f * h]),
    ]:
        diff = (
            apply_op(tv_tensors.Video(video), name, f).as_subclass(torch.Tensor).int()
            - reference_affine(video, m).int()
        ).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.02, name  # float32 grid vs float64


def test_fill_and_solarize_act_on_the_uint8_scale_as_in_the_reference():
    white = torch.full((1, 3, 16, 16), 255, dtype=torch.uint8)
    rotated = apply_op(tv_tensors.Video(white), "Rotate", 21.0)
    assert rotated[..., 0, 0].eq(0).all()  # corner filled with 0.5 -> black
    moved = apply_op(tv_tensors.Video(white), "TranslateX", 0.315)
    assert moved[..., -1].eq(0).all() and moved[..., 0].eq(255).all()  # content moves left, black enters
    video = clip(1, 8, 8)
    assert torch.equal(apply_op(video, "Solarize", 0.3), torch.where(video >= 1, 255 - video, video))
    assert torch.equal(apply_op(video, "Posterize", 2), video & 0b11000000)


@pytest.mark.parametrize("name", REFERENCE_OPS)
def test_every_op_runs_on_a_video_frame_by_frame_alike(name):
    frame = clip(1, 24, 32)[0] // 2 + 40  # low contrast, so AutoContrast has work to do
    video = tv_tensors.Video(frame.expand(3, 3, 24, 32).contiguous())
    out = apply_op(video, name, op_argument(name, 7, -1))
    assert isinstance(out, tv_tensors.Video) and out.dtype == torch.uint8 and out.shape == video.shape
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2]) and not torch.equal(out, video)


def test_same_ops_on_every_frame():
    frame = clip(1, 24, 32)[0]
    video = tv_tensors.Video(frame.expand(5, 3, 24, 32).contiguous())
    augment = RandAugment(4, 7, prob=1.0)
    changed = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out = augment(video)
        assert out.dtype == torch.uint8 and out.shape == video.shape
        assert all(torch.equal(out[0], out[t]) for t in range(1, 5))
        changed += not torch.equal(out, video)
    assert changed >= 10


# --- the chain -----------------------------------------------------------------------------------------
def test_k400_order():
    assert train_transform(32, **RAW).steps == ("resize", "rand_augment", "random_resized_crop", "flip", "normalize")
    assert train_transform(32, **RAW, random_erasing=0.25, erasing_mode="rand").steps == (
        "resize",
        "rand_augment",
        "random_resized_crop",
        "flip",
        "random_erasing",
        "normalize",
    )


def test_ssv2_order():
    assert train_transform(32, **RAW, augment_order="ssv2", random_erasing=0.25).steps == (
        "resize",
        "random_resized_crop",
        "flip",
        "rand_augment",
        "random_erasing",
        "normalize",
    )
    assert train_transform(32, **RAW, augment_order="ssv2", short_side=0, rand_augment=False, flip=False).steps == (
        "random_resized_crop",
        "normalize",
    )


def test_rand_augment_settings_reach_the_op():
    augment = train_transform(32, **RAW, rand_augment_layers=2, rand_augment_magnitude=9.0).rand_augment
    assert isinstance(augment, RandAugment) and (augment.num_layers, augment.magnitude) == (2, 9.0)
    with pytest.raises(ValueError):
        train_transform(32, **RAW, augment_order="kinetics")
    with pytest.raises(ValueError):
        train_transform(32, **RAW, erasing_mode="pixel")


def erase_only(mode, **kw):
    """The chain without resize, RandAugment, flip; a full-frame crop: the input comes out unchanged but erased."""
    return train_transform(
        32,
        **kw,
        short_side=0,
        rand_augment=False,
        flip=False,
        random_erasing=1.0,
        erasing_mode=mode,
        crop_scale=(1.0, 1.0),
    )


def test_const_erasing_is_grey_before_normalisation():
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    video = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    torch.manual_seed(0)
    out, _ = erase_only("const", mean=mean, std=std)(video)
    grey = (128 / 255 - torch.tensor(mean)) / torch.tensor(std)
    black = -torch.tensor(mean) / torch.tensor(std)
    erased = torch.isclose(out, grey.view(3, 1, 1, 1))
    assert erased.any() and torch.isclose(out[~erased], black.view(3, 1, 1, 1).expand_as(out)[~erased]).all()
    assert all(torch.equal(erased[:, 0], erased[:, t]) for t in range(1, 3))  # one box for the clip


def test_rand_erasing_is_uint8_noise_before_normalisation():
    video = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    for seed in range(3):
        torch.manual_seed(seed)
        out, _ = erase_only("rand", **RAW)(video)
        pixels = out * 255
        assert torch.allclose(pixels, pixels.round(), atol=1e-3) and pixels.min() >= 0 and pixels.max() <= 255
        assert (pixels > 0.5).any() and not torch.equal(pixels[:, 0], pixels[:, 1])  # fresh noise per frame


@pytest.mark.parametrize("mode", ["const", "rand"])
def test_erased_box_is_the_same_on_every_frame(mode):
    eraser = RandomErasing(1.0, mode)
    video = torch.zeros(4, 3, 40, 50, dtype=torch.uint8)
    for seed in range(5):
        torch.manual_seed(seed)
        out = eraser(video)
        torch.manual_seed(seed)
        torch.rand(1)  # the erase-or-not draw
        top, left, bh, bw = eraser.box(40, 50)
        inside = torch.zeros(40, 50, dtype=torch.bool)
        inside[top : top + bh, left : left + bw] = True
        assert out[..., ~inside].eq(0).all()
        if mode == "const":
            assert out[..., inside].eq(128).all()
        assert 0.02 * 2000 * 0.8 <= bh * bw <= 2000 / 3 * 1.1 + 50


def test_same_seed_same_clip():
    video = clip(4, 36, 48)
    for order, mode in (("k400", "rand"), ("ssv2", "const")):
        transform = train_transform(24, **RAW, augment_order=order, random_erasing=0.5, erasing_mode=mode)
        runs = []
        for seed in (7, 7, 8):
            torch.manual_seed(seed)
            runs.append(transform(video))
        assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
        assert not torch.equal(runs[0][0], runs[2][0])
