"""Fused kernels. `stdha_attention`: STDHA's attention with no copy of K or V (a Triton kernel).

Triton is optional: `import zeroi2v.kernels` never imports it. Where the Triton kernel cannot run (no
Triton, or tensors off the GPU and not under `TRITON_INTERPRET=1`), `stdha_attention` computes the same
result in PyTorch (gathered K/V, one `scaled_dot_product_attention`): slower, never wrong.
"""

import importlib.util
import os

import torch
import torch.nn.functional as F


def _has_triton() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["triton"] = None
        return False


HAS_TRITON = _has_triton()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton reads it once, too
_SOURCES: dict = {}


def triton_runs_on(x: torch.Tensor) -> bool:
    """True where the Triton kernel can run on x: CUDA with Triton, or any device under its interpreter."""
    return HAS_TRITON and (x.is_cuda or INTERPRET)


def source_frames(num_frames: int, head_offsets, boundary: str, device) -> torch.Tensor:
    """(T, H) int32: the frame whose K/V head h of frame t reads; -1 = zero K/V (`boundary="zero"`)."""
    key = (num_frames, tuple(head_offsets), boundary, str(device))
    if key not in _SOURCES:
        frame = torch.arange(num_frames)[:, None]
        source = frame + torch.tensor(head_offsets, dtype=torch.long)[None, :]
        inside = (source >= 0) & (source < num_frames)
        outside = frame.expand_as(source) if boundary == "keep" else torch.full_like(source, -1)
        _SOURCES[key] = torch.where(inside, source, outside).to(device=device, dtype=torch.int32)
    return _SOURCES[key]


def _pytorch_path(q, k, v, sources: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The same result with gathered K/V and SDPA (where Triton cannot run)."""
    T, H = sources.shape
    BT = q.shape[0]
    src = sources.long().clamp(min=0).to(q.device)
    heads = torch.arange(H, device=q.device)
    keep = (sources >= 0).to(device=q.device, dtype=q.dtype)[None, :, :, None, None]

    def gather(x):
        return (x.reshape(BT // T, T, *x.shape[1:])[:, src, heads] * keep).reshape(x.shape)

    out.copy_(F.scaled_dot_product_attention(q, gather(k), gather(v)))
    return out


@torch.library.custom_op("zeroi2v::stdha_attention", mutates_args=())
def _stdha_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, head_offsets: list[int], num_frames: int, boundary: str
) -> torch.Tensor:
    BT, H, N, d = q.shape
    out = torch.empty((BT, N, H, d), device=q.device, dtype=q.dtype).transpose(1, 2)
    sources = source_frames(num_frames, head_offsets, boundary, q.device)
    if not triton_runs_on(q):
        return _pytorch_path(q, k, v, sources, out)
    from zeroi2v.kernels.stdha_triton import launch

    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    return launch(q, k, v, out, sources)


@_stdha_op.register_fake
def _stdha_fake(q, k, v, head_offsets, num_frames, boundary):
    BT, H, N, d = q.shape
    return q.new_empty((BT, N, H, d)).transpose(1, 2)


def stdha_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_offsets,
    num_frames: int,
    boundary: str = "keep",
) -> torch.Tensor:
    """STDHA attention, inference only: head h of frame t attends to frame t+Δt_h's keys and values.

    q, k, v: (B·T, H, N, d), frames of a clip contiguous; typically strided views of the fused qkv
    output, which are read in place. head_offsets: Δt per head (missing heads: 0). Out-of-clip
    sources read the head's own frame (`boundary="keep"`) or zeros (`"zero"`: the output is zero).
    Returns (B·T, H, N, d), a transposed view of a (B·T, N, H, d) buffer, so that
    `out.transpose(1, 2).reshape(B·T, N, H·d)` before the output projection copies nothing.
    Scale 1/√d, as `scaled_dot_product_attention`. A custom op (`torch.ops.zeroi2v.stdha_attention`),
    so `torch.compile(fullgraph=True)` traces through it; it has no backward.
    """
    if not (q.dim() == 4 and q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must share one (B·T, H, N, d) shape, got {q.shape}, {k.shape}, {v.shape}")
    BT, H = q.shape[:2]
    offsets = [int(o) for o in head_offsets]
    if len(offsets) > H or boundary not in ("keep", "zero") or num_frames < 1 or BT % num_frames:
        raise ValueError(
            f"stdha_attention: {len(offsets)} offsets for {H} heads, boundary {boundary!r}, "
            f"{BT} frames in clips of {num_frames}"
        )
    return _stdha_op(q, k, v, offsets + [0] * (H - len(offsets)), int(num_frames), boundary)
