"""ST-Adapter (Pan et al., NeurIPS 2022), on a timm Block: BASELINE for comparison.

An adapter is x = x + up(DWConv3d(down(x))), where the depth-wise 3D convolution (kernel 3×1×1:
across time, channel-wise) runs on the patch tokens arranged as (B, C, T, H, W); the class (prefix)
tokens pass unchanged. Where adapters sit (`model.st_adapter_positions`): before the MSA of each block
(`attn`, our default) and/or before its MLP (`mlp`). The official code
(linziyi96/st-adapter) trains Kinetics with one adapter before the MLP and Something-Something v2
with both, each of width 0.5·D. With class-token pooling, the last block's pre-MLP adapter changes only
patch tokens the classifier never reads, so it does not train (in the official code too).
Initialised as the official code does: the convolution's weight and bias and both linear biases are
zero, the two projections keep PyTorch's default initialisation. The convolution's output is then
zero, so every adapter starts as the identity and training starts from frame averaging of the image
model. The convolution cannot be folded into the frozen weights: it costs FLOPs at inference.
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
        for zero in (self.conv.weight, self.conv.bias, self.down.bias, self.up.bias):
            nn.init.zeros_(zero)

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
    """A timm Block with ST-Adapters before its attention (`adapter`) and/or its MLP (`adapter_mlp`)."""

    def __init__(self, block: nn.Module, num_frames: int, ratio: float, grid, positions=("attn",)):
        super().__init__()
        self.block = block
        dim = block.norm1.normalized_shape[0]
        self.adapter = STAdapter(dim, num_frames, grid, ratio) if "attn" in positions else None
        self.adapter_mlp = STAdapter(dim, num_frames, grid, ratio) if "mlp" in positions else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter is not None:
            x = self.adapter(x)
        if self.adapter_mlp is None:
            return self.block(x)
        b = self.block
        x = x + b.drop_path1(b.ls1(b.attn(b.norm1(x))))
        x = self.adapter_mlp(x)
        return x + b.drop_path2(b.ls2(b.mlp(b.norm2(x))))
