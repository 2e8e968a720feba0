"""AIM (Yang et al., ICLR 2023), on a timm Block: BASELINE for comparison.

Per block:  x = x + T-Adapter(MSA_t(T-Adapter-in(LN1(x))))   temporal pass: the frozen MSA over the T
                                                    frames of each spatial token (class token included)
            x = x + S-Adapter(MSA(LN1(x)))          the usual spatial pass, adapter after it
            x = x + MLP(LN2(x)) + s·MLP-Adapter(LN2(x))
Adapters are bottlenecks with GELU (fc1 -> GELU -> fc2), so they cannot be merged: AIM costs
roughly one extra attention pass per block at inference. Initialised as the official code does
(adapt-image-models, `ViT_CLIP.init_weights`): every first layer truncated-normal (std 0.02) with a
zero bias, every second layer zero (T-Adapter-in included), so T-Adapter-in and S-Adapter start as
the identity, T- and MLP-Adapter as zero, and training starts from frame averaging of the image model.
"""

from __future__ import annotations

import torch
import torch.nn as nn

FIRST_LAYER_STD = 0.02  # the official trunc_normal_ std of every Linear it initialises


class Adapter(nn.Module):
    is_peer_adapter = True

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True):
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        nn.init.trunc_normal_(self.fc1.weight, std=FIRST_LAYER_STD)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
        self.skip = skip

    def forward(self, x):
        y = self.fc2(self.act(self.fc1(x)))
        return x + y if self.skip else y


class AIMBlock(nn.Module):
    def __init__(self, block: nn.Module, num_frames: int, ratio: float = 0.25, scale: float = 0.5):
        super().__init__()
        self.block, self.num_frames, self.scale = block, num_frames, scale
        dim = block.norm1.normalized_shape[0]
        self.t_adapter_in = Adapter(dim, ratio, skip=True)
        self.t_adapter = Adapter(dim, ratio, skip=False)
        self.s_adapter = Adapter(dim, ratio, skip=True)
        self.mlp_adapter = Adapter(dim, ratio, skip=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        BT, N, D = x.shape
        T = self.num_frames
        xt = x.view(BT // T, T, N, D).transpose(1, 2).reshape(BT // T * N, T, D)
        xt = self.t_adapter(b.attn(self.t_adapter_in(b.norm1(xt))))  # the frozen attention, now across time
        x = x + b.drop_path1(xt.view(BT // T, N, T, D).transpose(1, 2).reshape(BT, N, D))
        x = x + b.drop_path1(b.ls1(self.s_adapter(b.attn(b.norm1(x)))))
        xn = b.norm2(x)
        return x + b.drop_path2(b.ls2(b.mlp(xn))) + self.scale * self.mlp_adapter(xn)
