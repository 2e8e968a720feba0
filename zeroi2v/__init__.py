"""zeroi2v: turn a pretrained image ViT (timm) into a video model at zero extra inference cost.

    model = zeroi2v.create_model("vit_base_patch16_clip_quickgelu_224", num_frames=8, num_classes=400)
    merged = zeroi2v.reparameterize(model)
"""
from zeroi2v.errors import UserError
from zeroi2v.model import ZeroI2V, create_model, load_pretrained, save_pretrained
from zeroi2v.reparam import reparameterize
from zeroi2v.weights import load_official_checkpoint

__version__ = "0.1.0"
__all__ = [
    "ZeroI2V", "create_model", "reparameterize", "load_official_checkpoint",
    "save_pretrained", "load_pretrained", "UserError", "__version__",
]
