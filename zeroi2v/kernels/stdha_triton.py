"""The Triton forward kernel behind `zeroi2v.kernels.stdha_attention` (imported only where Triton runs).

FlashAttention-style: one program per (query block, frame, head), online softmax over key blocks in
fp32. Head h of frame t reads the K/V of the frame the (T, H) source table names (-1: zero K/V, so
the output is zero), straight from the strided views of the fused qkv output: nothing is copied.
Head sizes are padded to a power of two ≥ 16 and token counts to the block size, with masked loads
and -inf scores for the padding keys. Frame and head offsets are int64 (batch × frames × tokens × width
overflows int32); offsets within one frame stay int32 (fewer registers).
"""

import math

import torch
import triton
import triton.language as tl

# no register spills on sm_80/sm_90 at d = 64 and 128 (zeroi2v.kernels.registers; tests/test_kernels.py checks it)
BLOCK_M = 64
BLOCK_N = 64
NUM_STAGES = 2


def default_warps(d_pad: int) -> int:
    return 8 if d_pad >= 128 else 4


@triton.jit
def stdha_fwd_kernel(
    Q, K, V, Out, Src,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_on,
    num_tokens, num_heads, num_frames, num_m_blocks, scale_log2,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr,
    UPCAST: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    block_m = pid % num_m_blocks  # the query blocks of one (frame, head) are neighbours: they share K/V in L2
    bh = pid // num_m_blocks
    bt = bh // num_heads
    h = bh % num_heads
    t = bt % num_frames
    src = tl.load(Src + t * num_heads + h).to(tl.int64)
    src_bt = bt - t + tl.maximum(src, 0)
    stop = tl.where(src >= 0, num_tokens, 0)  # zero K/V: no key block is read, the output stays zero

    # frame and head offsets in int64 (scalars); offsets within one frame's tile fit in int32
    offs_m = (block_m * BLOCK_M).to(tl.int32) + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    mask_m = offs_m < num_tokens
    mask_d = offs_d < HEAD_DIM  # all true, known at compile time, when d is a power of two
    q_ptrs = Q + (bt * stride_qb + h * stride_qh) + (offs_m[:, None] * stride_qn + offs_d[None, :])
    q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_d[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    # scalar base pointers walk the key blocks; the tile offsets are int32 (no 64-bit pointer tiles held)
    k_base = K + (src_bt * stride_kb + h * stride_kh)
    v_base = V + (src_bt * stride_vb + h * stride_vh)
    k_offs = offs_n[:, None] * stride_kn + offs_d[None, :]
    v_offs = offs_n[:, None] * stride_vn + offs_d[None, :]

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    for start_n in range(0, stop, BLOCK_N):
        mask_n = (start_n + offs_n) < num_tokens
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_base + k_offs, mask=kv_mask, other=0.0)
        v = tl.load(v_base + v_offs, mask=kv_mask, other=0.0)
        k_base += BLOCK_N * stride_kn
        v_base += BLOCK_N * stride_vn
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = tl.where(mask_n[None, :], s * scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if IEEE:
            acc += tl.dot(p, v, input_precision="ieee")
        else:
            acc += tl.dot(p.to(v.dtype), v)
        m_i = m_new
    acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    o_ptrs = Out + (bt * stride_ob + h * stride_oh) + (offs_m[:, None] * stride_on + offs_d[None, :])
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


def launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    sources: torch.Tensor,
    block_m: int = BLOCK_M,
    block_n: int = BLOCK_N,
    num_warps: int | None = None,
    num_stages: int = NUM_STAGES,
) -> torch.Tensor:
    """q, k, v, out: (B·T, H, N, d) with unit stride along d; sources: (T, H) int32 on q's device.
    The block sizes and warps are arguments so that `benchmarks/kernel_bench.py` can compare them."""
    BT, H, N, d = q.shape
    d_pad = max(16, triton.next_power_of_2(d))
    interpreting = q.device.type == "cpu"  # only reached on the CPU under TRITON_INTERPRET=1
    num_m = triton.cdiv(N, block_m)
    stdha_fwd_kernel[(BT * H * num_m,)](
        q,
        k,
        v,
        out,
        sources,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *out.stride()[:3],
        N,
        H,
        sources.shape[0],
        num_m,
        math.log2(math.e) / math.sqrt(d),
        HEAD_DIM=d,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        D_PAD=d_pad,
        UPCAST=interpreting,  # the interpreter's tl.dot on bf16 multiplies the raw bit patterns
        IEEE=q.dtype == torch.float32,
        num_warps=num_warps or default_warps(d_pad),
        num_stages=num_stages,
    )
    return out
