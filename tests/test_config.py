"""Config: YAML + `--set` overrides, every mistake a one-line UserError naming the key."""

import pytest
import yaml

from zeroi2v.config import VALID_KEYS, dump_config, load_config, parse_override
from zeroi2v.errors import UserError


def test_defaults_are_the_reference_recipe():
    cfg = load_config()
    assert cfg.train.lr == 3e-4 and cfg.train.batch_size == 64 and cfg.train.betas == [0.9, 0.999]
    assert cfg.train.weight_decay == 0.05 and cfg.train.warmup_epochs == 2.5
    assert cfg.train.warmup_start == 0.1 and cfg.train.min_lr == 0.0
    assert cfg.model.head_offsets == [-1, 1] and cfg.model.head_dropout == 0.5
    spec_keys = """output model.backbone model.pretrained model.num_frames model.num_classes model.head_offsets
        model.adapter_ratio model.adapter_scale model.temporal_embedding model.freeze model.timm_kwargs data.root
        data.train_list data.val_list data.sampling data.frame_interval data.test_clips data.test_crops data.img_size
        data.shots train.epochs train.batch_size train.lr train.weight_decay train.warmup_epochs train.seed
        train.num_workers""".split()
    assert set(spec_keys) <= VALID_KEYS


def test_file_then_overrides_parsed_as_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  head_offsets: [-1, 1, -2]\ntrain:\n  lr: 3e-4\ndata:\n  shots: 4\n")
    cfg = load_config(
        path,
        [
            "train.lr=1.5e-4",
            "data.shots=null",
            "model.freeze=false",
            "model.timm_kwargs.depth=2",
            "data.mean=[0.5, 0.5, 0.5]",
        ],
    )
    assert cfg.train.lr == 1.5e-4 and isinstance(cfg.train.lr, float)  # 1e-4 style is a number
    assert cfg.data.shots is None and cfg.model.freeze is False
    assert cfg.model.head_offsets == [-1, 1, -2] and cfg.model.timm_kwargs == {"depth": 2}
    assert yaml.safe_load(dump_config(cfg)) == cfg.to_dict()  # what config.yaml holds reloads to the same run
    assert load_config(None, [], base=yaml.safe_load(dump_config(cfg))) == cfg
    assert parse_override("train.betas=[0.9, 0.98]") == ("train.betas", [0.9, 0.98])


def test_empty_sections_and_timm_image_size(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\ndata:\n  img_size: 32\n")
    cfg = load_config(path, ["model.timm_kwargs={patch_size: 8, depth: 2}"])
    assert cfg.model_config(num_classes=5).timm_kwargs == {"patch_size": 8, "depth": 2, "img_size": 32}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key 'train.epoch' (did you mean 'train.epochs'?)"),
        ("data.imgsize=3", "did you mean 'data.img_size'"),
        ("model=3", "config model: expected a mapping"),
        ("train.epochs=two", "config train.epochs: expected int"),
        ("train.epochs=2.5", "config train.epochs: expected int"),
        ("model.freeze=1", "config model.freeze: expected bool"),
        ("train.lr=-1", "train.lr: must be > 0"),
        ("train.lr=.nan", "must be a finite number"),
        ("model.head_offsets=[-8]", "|Δt| must be < model.num_frames=8"),
        ("model.head_offsets=[1.5]", "must be a list of integers"),
        ("model.adapter_ratio=-0.1", "model.adapter_ratio: must be in [0, 16]"),
        ("model.head_dropout=1", "model.head_dropout: must be in [0, 1)"),
        ("model.adapter_positions=[attn_in, ffn]", "unknown adapter positions ['ffn']"),
        ("data.img_size=100", "not a multiple of the patch size"),
        ("data.test_crops=2", "data.test_crops: must be one of [1, 3]"),
        ("data.test_clips=0", "data.test_clips: must be >= 1"),
        ("data.sampling=random", "must be one of ['dense', 'uniform']"),
        ("data.crop_scale=[0.9]", "data.crop_scale: must be 2 numbers"),
        ("data.crop_scale=[0.9, 0.5]", "min <= max"),
        ("data.std=[0.2, 0, 0.2]", "data.std: must be 3 numbers > 0"),
        ("data.max_broken_fraction=2", "must be in [0, 1]"),
        ("data.short_side=16", "smaller than data.img_size"),
        ("train.betas=[0.9]", "train.betas: must be 2 numbers in [0, 1)"),
        ("train.clip_grad=0", "train.clip_grad: must be > 0 or null"),
        ("train.label_smoothing=1", "train.label_smoothing: must be in [0, 1)"),
        ("train.warmup_epochs=-1", "train.warmup_epochs: must be >= 0"),
        ("train.amp=fp8", "must be one of ['auto', 'bf16', 'fp16', 'none']"),
        ("train.num_workers=-1", "train.num_workers: must be >= 0"),
        ("data.shots=0", "data.shots: must be >= 1 or null"),
        ("output=''", "config output: must be a directory path"),
        ("train.lr", "--set expects key=value"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(UserError) as info:
        load_config(None, ["model.timm_kwargs={patch_size: 16}", override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1\n")
    with pytest.raises(UserError, match="invalid YAML at line"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_config(bad)
    bad.write_text("model:\n  backbone: vit_base_patch16_224\n  head_ofsets: [1]\n")
    with pytest.raises(UserError, match="did you mean 'model.head_offsets'"):
        load_config(bad)
    bad.write_text("!!python/object/apply:os.system ['echo hacked']\n")  # configs never execute code
    with pytest.raises(UserError, match="invalid YAML"):
        load_config(bad)


def test_patch_size_from_the_backbone_name():
    with pytest.raises(UserError, match="data.img_size=256 is not a multiple of the patch size 14"):
        load_config(None, ["model.backbone=vit_large_patch14_clip_quickgelu_224", "data.img_size=256"])
    cfg = load_config(None, ["model.backbone=vit_large_patch14_clip_quickgelu_224", "data.img_size=224"])
    assert cfg.data.img_size == 224 and cfg.model.backbone == "vit_large_patch14_clip_quickgelu_224"
