"""AIM (Yang et al., ICLR 2023), on a timm Block: BASELINE for comparison.

Per block:  x = x + T-Adapter(MSA_t(T-Adapter-in(LN1(x))))   temporal pass: the frozen MSA over the T
                                                    frames of each spatial token (class token included)
            x = x + S-Adapter(MSA(LN1(x)))          the usual spatial pass, adapter after it
            x = x + MLP(LN2(x)) + s·MLP-Adapter(LN2(x))
Adapters are bottlenecks with GELU (fc1 -> GELU -> fc2), so they cannot be merged: AIM costs
roughly one extra attention pass per block at inference. As in the official code, the last layer of
the adapters that write into the residual stream (T, S, MLP) starts at zero, so training starts from
frame averaging of the image model.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Adapter(nn.Module):
    is_peer_adapter = True

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True, zero_init: bool = True):
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        if zero_init:
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
        self.t_adapter_in = Adapter(dim, ratio, skip=True, zero_init=False)
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
