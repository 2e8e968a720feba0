"""Export of the merged model: ONNX checked with onnxruntime, torch.export (.pt2)."""

import json

import pytest
import timm
import torch

import zeroi2v
from zeroi2v.export import export_model, onnx_float_weights
from zeroi2v.model import count_params

CLIP = "vit_base_patch16_clip_quickgelu_224"
SMALL = dict(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=4)


@pytest.fixture(scope="module")
def unmerged_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = zeroi2v.create_model(CLIP, num_frames=4, num_classes=5, head_offsets=(-1, 1), **SMALL)
    with torch.no_grad():  # every parameter distinct and non-trivial (trained-like), adapters included
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05 + (1.0 if p.ndim == 1 and p.shape[0] == 128 else 0.0))
    directory = tmp_path_factory.mktemp("model")
    zeroi2v.save_pretrained(model, directory)
    (directory / "classes.txt").write_text("a\nb\nc\nd\ne\n")
    return directory


def test_onnx_export_round_trip_has_no_adapter_weights(unmerged_dir, tmp_path):
    info = export_model(unmerged_dir, tmp_path / "model.onnx")
    print(f"onnx: onnxruntime vs PyTorch max abs error {info['error']:.2e}, merge error {info['merge_error']:.2e}")
    assert info["error"] <= 1e-4
    plain = timm.create_model(CLIP, pretrained=False, num_classes=5, **SMALL)
    assert info["file_weights"] == count_params(plain) + 4 * 128  # image model + the T×D temporal table
    assert onnx_float_weights(tmp_path / "model.onnx") == info["file_weights"]


def test_onnx_batch_axis_is_dynamic_and_metadata_says_how_to_feed_it(unmerged_dir, tmp_path):
    import onnxruntime as ort

    export_model(unmerged_dir, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == list("abcde") and meta["num_frames"] == "4" and meta["img_size"] == "32x32"
    assert json.loads(meta["mean"]) == pytest.approx([0.48145466, 0.4578275, 0.40821073])  # CLIP's statistics
    for batch in (1, 5):
        (out,) = session.run(None, {"video": torch.randn(batch, 3, 4, 32, 32).numpy()})
        assert out.shape == (batch, 5)


def test_pt2_export(unmerged_dir, tmp_path):
    info = export_model(unmerged_dir, tmp_path / "model.pt2")
    assert info["format"] == "pt2" and info["error"] <= 1e-5
    program = torch.export.load(str(tmp_path / "model.pt2"))
    assert program.module()(torch.randn(2, 3, 4, 32, 32)).shape == (2, 5)


def test_export_rejects_bad_inputs(tmp_path, unmerged_dir):
    with pytest.raises(zeroi2v.UserError, match="not a zeroi2v model directory"):
        export_model(tmp_path, tmp_path / "x.onnx")
    with pytest.raises(zeroi2v.UserError, match="unknown export format"):
        export_model(unmerged_dir, tmp_path / "x.bin", fmt="tflite")
    with pytest.raises(zeroi2v.UserError, match="is a directory"):
        export_model(unmerged_dir, tmp_path)
    with pytest.raises(zeroi2v.UserError, match="name it OUT.onnx or OUT.pt2"):
        export_model(unmerged_dir, tmp_path / "model.bin")
    weights = unmerged_dir / "model.safetensors"
    before = weights.read_bytes()
    for fmt in (None, "onnx"):  # the model's own files, with or without --format
        with pytest.raises(zeroi2v.UserError, match="refusing to overwrite"):
            export_model(unmerged_dir, weights, fmt=fmt)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(zeroi2v.UserError, match="not a .onnx file; refusing to overwrite"):
        export_model(unmerged_dir, tmp_path / "notes.txt", fmt="onnx")
    assert weights.read_bytes() == before and (tmp_path / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind
