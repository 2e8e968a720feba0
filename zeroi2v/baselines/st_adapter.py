"""ST-Adapter (Pan et al., NeurIPS 2022), on a timm Block: BASELINE for comparison.

Before the MSA of each block: x = x + up(DWConv3d(down(x))), where the depth-wise 3D convolution
(kernel 3×1×1: across time, channel-wise) runs on the patch tokens arranged as (B, C, T, H, W);
as in the official code, the class (prefix) tokens pass unchanged and the up-projection starts at zero.
The convolution cannot be folded into the frozen weights: it costs FLOPs at inference.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class STAdapter(nn.Module):
    is_peer_adapter = True

    def __init__(self, dim: int, num_frames: int, grid, ratio: float = 0.25, kernel=(3, 1, 1)):
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.num_frames, self.grid = num_frames, tuple(grid)
        self.down = nn.Linear(dim, hidden)
        self.conv = nn.Conv3d(hidden, hidden, kernel, padding=tuple(k // 2 for k in kernel), groups=hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        BT, N, D = x.shape
        T, (h, w) = self.num_frames, self.grid
        prefix, patches = x[:, : N - h * w], x[:, N - h * w :]
        p = self.down(patches)
        C = p.shape[-1]
        p = p.reshape(BT // T, T, h, w, C).permute(0, 4, 1, 2, 3)
        p = self.conv(p).permute(0, 2, 3, 4, 1).reshape(BT, h * w, C)
        return torch.cat([prefix, patches + self.up(p)], dim=1)


class STAdapterBlock(nn.Module):
    def __init__(self, block: nn.Module, num_frames: int, ratio: float, grid):
        super().__init__()
        self.block = block
        self.adapter = STAdapter(block.norm1.normalized_shape[0], num_frames, grid, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.adapter(x))
