"""Deployment export of the merged model: ONNX (checked with onnxruntime) or torch.export (.pt2).

The exported graph is the image ViT's with new weights plus STDHA's K/V gather and the T×D temporal
add: no adapter weights are in the file. A peer baseline (AIM, ST-Adapter, joint attention) cannot be
merged: it is exported as trained, with its extra modules. Input `video` (B, 3, T, H, W) float, normalised as the model
expects; output `logits` (B, num_classes). The batch axis is dynamic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from zeroi2v import __version__
from zeroi2v.build import load_pretrained
from zeroi2v.errors import UserError
from zeroi2v.eval import class_names
from zeroi2v.fileio import atomic_write, check_writable, model_files
from zeroi2v.model import ZeroI2V, count_params
from zeroi2v.reparam import random_clip, reparameterize

try:  # the `onnx` extra
    import onnx
    from onnx import numpy_helper
except ImportError:
    onnx = None

FORMATS = ("onnx", "pt2")


def _deployed_model(model_or_dir) -> ZeroI2V:
    """ZeroI2V merged (folded here if needed); a peer as it is."""
    model = load_pretrained(model_or_dir) if isinstance(model_or_dir, (str, os.PathLike)) else model_or_dir
    if model.method == "zeroi2v" and not model.merged:
        model = reparameterize(model)
    return model.float().eval()


def export_onnx(model: ZeroI2V, out_path: str | os.PathLike, opset: int = 18) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    clip = random_clip(model, batch=2)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (clip,),
            str(out_path),
            input_names=["video"],
            output_names=["logits"],
            dynamic_shapes={"video": {0: batch}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
            external_data=False,
        )


def onnx_float_weights(path: str | os.PathLike) -> int:
    """Number of float weights stored in an ONNX file (initializers and constants).

    The exporter de-duplicates identical tensors (e.g. untouched LayerNorm ones/zeros), so a freshly
    initialised model may store fewer numbers than it has parameters; a trained one stores them all.
    """
    graph = onnx.load(str(path)).graph
    arrays = [numpy_helper.to_array(t) for t in graph.initializer]
    arrays += [
        numpy_helper.to_array(a.t)
        for node in graph.node
        if node.op_type == "Constant"
        for a in node.attribute
        if a.name == "value"
    ]
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


def metadata(model: ZeroI2V, classes: list[str]) -> dict[str, str]:
    """What a deployer needs to feed the model: stored in the ONNX file's metadata_props."""
    h, w = model.img_size
    return {
        "input": f"video float32 (batch, 3, {model.num_frames}, {h}, {w}): RGB in 0..1, normalised with mean/std",
        "num_frames": str(model.num_frames),
        "img_size": f"{h}x{w}",
        "mean": json.dumps(list(model.data_config["mean"])),
        "std": json.dumps(list(model.data_config["std"])),
        "classes": json.dumps(classes),
        "output": "logits (batch, num_classes); softmax for probabilities",
        "producer": f"zeroi2v {__version__} ({_describe(model)}, {model.config.backbone})",
    }


def _describe(model: ZeroI2V) -> str:
    return "merged ZeroI2V" if model.merged else f"{model.method}, unmerged"


def export_model(model_dir, out_path, fmt: str | None = None) -> dict:
    """`zeroi2v export`: merge (if needed), export, verify; returns the numbers it printed."""
    out_path = check_writable(out_path, "export to", model_files(model_dir))
    if fmt is None and out_path.suffix[1:] not in FORMATS:
        raise UserError(f"export to {out_path}: name it OUT.onnx or OUT.pt2 (or pass --format)")
    fmt = fmt or out_path.suffix[1:]
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from {list(FORMATS)}")
    if out_path.exists() and out_path.suffix != f".{fmt}":  # an export replaces an earlier export, nothing else
        raise UserError(f"export to {out_path}: the file exists and is not a .{fmt} file; refusing to overwrite it")
    if fmt == "onnx" and onnx is None:
        raise UserError("ONNX export needs the onnx packages: pip install 'zeroi2v[onnx]'")
    model = _deployed_model(model_dir)
    info = {
        "format": fmt,
        "path": str(out_path),
        "params": count_params(model),
        "merge_error": getattr(model, "merge_error", None),
    }
    classes = class_names(Path(model_dir), model.num_classes) if isinstance(model_dir, (str, os.PathLike)) else []

    def write(tmp: str) -> None:
        if fmt == "onnx":
            export_onnx(model, tmp)
            info["error"] = check_onnx(model, tmp)
            info["file_weights"] = onnx_float_weights(tmp)
            proto = onnx.load(tmp)
            onnx.helper.set_model_props(proto, metadata(model, classes))
            onnx.save(proto, tmp)
        else:
            clip = random_clip(model, batch=2)
            program = torch.export.export(
                model, (clip,), dynamic_shapes={"video": {0: torch.export.Dim("batch", min=1, max=1024)}}
            )
            torch.export.save(program, tmp, extra_files={"zeroi2v.json": json.dumps(metadata(model, classes))})
            loaded = torch.export.load(tmp).module()
            check = random_clip(model, batch=3, seed=7)
            with torch.no_grad():
                info["error"] = float((loaded(check) - model(check)).abs().max())
        if not info["error"] <= 1e-4:
            raise RuntimeError(f"exported model differs from PyTorch: max abs error {info['error']:.3g}")

    atomic_write(out_path, write, suffix=out_path.suffix)  # torch.export wants the .pt2 suffix
    return info
