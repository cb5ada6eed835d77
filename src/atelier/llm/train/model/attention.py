"""Core attention behind one device switch: SDPA everywhere, NPU fusion attention on Ascend.

`q` is [batch, heads, seq, dim], `k`/`v` are [batch, groups, seq, dim] (GQA: heads share a
group's key/value). The causal case needs no mask tensor; packed samples
(`reset_attention_mask`) pass `segment_ids` [batch, seq] and attend only within a segment.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Boolean [batch, 1, seq, seq]: True where attending is allowed (causal, same segment)."""
    s = segment_ids.shape[-1]
    causal = torch.ones(s, s, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (same & causal)[:, None]


def _npu_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    import torch_npu  # only on Ascend

    heads = q.shape[1]
    if k.shape[1] != heads:
        k = k.repeat_interleave(heads // k.shape[1], dim=1)
        v = v.repeat_interleave(heads // v.shape[1], dim=1)
    s = q.shape[2]
    if mask is None:  # npu mask convention: True means masked out
        atten_mask = torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1)
        sparse_mode = 2 if s > 2048 else 0
    else:
        atten_mask, sparse_mode = ~mask, 0
    return torch_npu.npu_fusion_attention(
        q,
        k,
        v,
        heads,
        "BNSD",
        atten_mask=atten_mask,
        scale=q.shape[-1] ** -0.5,
        keep_prob=1.0,
        sparse_mode=sparse_mode,
    )[0]


def core_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    segment_ids: torch.Tensor | None = None,
    use_flash_attn: bool = False,
) -> torch.Tensor:
    mask = segment_mask(segment_ids) if segment_ids is not None else None
    if q.device.type == "npu":
        return _npu_attention(q, k, v, mask)
    ctx: contextlib.AbstractContextManager = contextlib.nullcontext()
    if use_flash_attn and q.device.type == "cuda" and mask is None:  # flash takes no mask
        from torch.nn.attention import SDPBackend, sdpa_kernel

        ctx = sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    gqa = k.shape[1] != q.shape[1]
    with ctx:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa
        )
