"""zeroi2v: turn a pretrained image ViT (timm) into a video model at zero extra inference cost.

    model = zeroi2v.create_model("vit_base_patch16_clip_quickgelu_224", num_frames=8, num_classes=400)
    merged = zeroi2v.reparameterize(model)

The names below are imported on first use, so `import zeroi2v` (and `zeroi2v --help`) does not
import torch or timm.
"""

import importlib

from zeroi2v.errors import UserError

__version__ = "0.2.0"
_LAZY = {
    "ZeroI2V": "zeroi2v.model",
    "create_model": "zeroi2v.model",
    "ModelConfig": "zeroi2v.config",
    "reparameterize": "zeroi2v.reparam",
    "load_official_checkpoint": "zeroi2v.official",
    "save_pretrained": "zeroi2v.build",
    "load_pretrained": "zeroi2v.build",
    "build_model": "zeroi2v.build",
}
__all__ = [*_LAZY, "UserError", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zeroi2v' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
