"""Deployment export of the merged model: ONNX (checked with onnxruntime) or torch.export (.pt2).

The exported graph is the image ViT's with new weights plus STDHA's K/V gather and the T×D temporal
add: no adapter weights are in the file. Input `video` (B, 3, T, H, W) float, normalised as the model
expects; output `logits` (B, num_classes). The batch axis is dynamic.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from zeroi2v.errors import UserError
from zeroi2v.model import ZeroI2V, count_params, load_pretrained
from zeroi2v.reparam import random_clip, reparameterize

FORMATS = ("onnx", "pt2")


def _merged_model(model_or_dir) -> ZeroI2V:
    model = load_pretrained(model_or_dir) if isinstance(model_or_dir, (str, os.PathLike)) else model_or_dir
    if not model.merged:
        model = reparameterize(model)
    return model.float().eval()


def export_onnx(model: ZeroI2V, out_path: str | os.PathLike, opset: int = 18) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    clip = random_clip(model, batch=2)
    with torch.no_grad():
        torch.onnx.export(
            model, (clip,), str(out_path), input_names=["video"], output_names=["logits"],
            dynamic_shapes={"video": {0: batch}}, opset_version=opset, dynamo=True, verbose=False,
            external_data=False,
        )


def onnx_float_weights(path: str | os.PathLike) -> int:
    """Number of float weights stored in an ONNX file (initializers and constants).

    The exporter de-duplicates identical tensors (e.g. untouched LayerNorm ones/zeros), so a freshly
    initialised model may store fewer numbers than it has parameters; a trained one stores them all.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = [numpy_helper.to_array(t) for t in graph.initializer]
    arrays += [numpy_helper.to_array(a.t) for node in graph.node if node.op_type == "Constant"
               for a in node.attribute if a.name == "value"]
    return int(sum(a.size for a in arrays if np.issubdtype(a.dtype, np.floating) and a.size > 1))


def check_onnx(model: ZeroI2V, path: str | os.PathLike, batch: int = 3) -> float:
    """Max abs difference between onnxruntime and PyTorch on a random clip (batch differs from export's)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("onnxruntime is not installed: pip install 'zeroi2v[onnx]'") from None
    clip = random_clip(model, batch=batch, seed=7)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"video": clip.numpy()})
    with torch.no_grad():
        ref = model(clip).numpy()
    return float(np.abs(out - ref).max())


def export_model(model_dir, out_path, fmt: str | None = None) -> dict:
    """`zeroi2v export`: merge (if needed), export, verify; returns the numbers it printed."""
    out_path = Path(out_path)
    fmt = fmt or ("pt2" if out_path.suffix == ".pt2" else "onnx")
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from {list(FORMATS)}")
    model = _merged_model(model_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": fmt, "path": str(out_path), "params": count_params(model),
            "merge_error": getattr(model, "merge_error", None)}
    tmp = out_path.with_name(f".{out_path.stem}.tmp{out_path.suffix}")  # torch.export wants the .pt2 suffix
    if fmt == "onnx":
        export_onnx(model, tmp)
        info["error"] = check_onnx(model, tmp)
        info["file_weights"] = onnx_float_weights(tmp)
    else:
        clip = random_clip(model, batch=2)
        program = torch.export.export(model, (clip,), dynamic_shapes={"video": {0: torch.export.Dim("batch", min=1, max=1024)}})
        torch.export.save(program, str(tmp))
        loaded = torch.export.load(str(tmp)).module()
        check = random_clip(model, batch=3, seed=7)
        with torch.no_grad():
            info["error"] = float((loaded(check) - model(check)).abs().max())
    if not info["error"] <= 1e-4:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"exported model differs from PyTorch: max abs error {info['error']:.3g}")
    os.replace(tmp, out_path)
    return info
