"""Atelier's decoder, whose parameter names and layouts are megatron-core's GPTModel.

A rank file written by `hf2mg` (`mp_rank_XX/model_optim_rng.pt`, key `model`) holds exactly
this module's state dict for one TP rank: fused QKV per query group (`linear_qkv`),
`linear_fc1` = [gate_r; up_r]. The forward pass never needs the TP size: it reads the
number of local heads/groups from the width of what `linear_qkv` returned, so the same
module runs whole (TP 1) or with DTensor column/row-parallel linears (parallelize.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from atelier.llm.train.model.args import ModelArgs
from atelier.llm.train.model.attention import core_attention
from atelier.llm.train.model.rope import apply_rope, inverse_frequencies, rope_cos_sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class SelfAttention(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.per_group = a.num_heads // a.num_groups
        self.head_dim = a.head_dim
        qkv_out = a.head_dim * (a.num_heads + 2 * a.num_groups)
        self.linear_qkv = nn.Linear(a.hidden_size, qkv_out, bias=a.qkv_bias)
        self.linear_proj = nn.Linear(a.num_heads * a.head_dim, a.hidden_size, bias=False)
        if a.qk_norm:
            self.q_layernorm = RMSNorm(a.head_dim, a.norm_eps)
            self.k_layernorm = RMSNorm(a.head_dim, a.norm_eps)
        self.qk_norm = a.qk_norm
        self.selective_recompute = False
        self.use_flash_attn = False

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        segment_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        b, s, _ = x.shape
        qkv = self.linear_qkv(x).view(b, s, -1, self.per_group + 2, self.head_dim)
        q, k, v = qkv.split([self.per_group, 1, 1], dim=3)
        q = q.reshape(b, s, -1, self.head_dim)
        k, v = k.squeeze(3), v.squeeze(3)
        if self.qk_norm:
            q, k = self.q_layernorm(q), self.k_layernorm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        v = v.transpose(1, 2)
        if self.selective_recompute:
            out = checkpoint(
                core_attention, q, k, v, segment_ids, self.use_flash_attn, use_reentrant=False
            )
        else:
            out = core_attention(q, k, v, segment_ids, self.use_flash_attn)
        return self.linear_proj(out.transpose(1, 2).reshape(b, s, -1))


class MLP(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.linear_fc1 = nn.Linear(a.hidden_size, 2 * a.ffn_hidden_size, bias=False)
        self.linear_fc2 = nn.Linear(a.ffn_hidden_size, a.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.linear_fc1(x).chunk(2, dim=-1)  # this rank's [gate_r; up_r]
        return self.linear_fc2(F.silu(gate) * up)


class TransformerLayer(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(a.hidden_size, a.norm_eps)
        self.self_attention = SelfAttention(a)
        self.pre_mlp_layernorm = RMSNorm(a.hidden_size, a.norm_eps)
        self.mlp = MLP(a)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attention(self.input_layernorm(x), cos, sin, segment_ids)
        return x + self.mlp(self.pre_mlp_layernorm(x))


class Embedding(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(a.padded_vocab_size, a.hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(tokens)


class TransformerBlock(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(a) for _ in range(a.num_layers))
        self.final_layernorm = RMSNorm(a.hidden_size, a.norm_eps)
        # Layers whose activations are recomputed in backward, in groups run as one unit.
        self.recompute_groups: list[list[int]] = []

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        segment_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        grouped = {g[0]: g for g in self.recompute_groups}
        i = 0
        while i < len(self.layers):
            if i in grouped:
                x = checkpoint(self._run, grouped[i], x, cos, sin, segment_ids, use_reentrant=False)
                i = grouped[i][-1] + 1
            else:
                x = self.layers[i](x, cos, sin, segment_ids)
                i += 1
        return self.final_layernorm(x)

    def _run(
        self,
        idx: list[int],
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        segment_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        for i in idx:
            x = self.layers[i](x, cos, sin, segment_ids)
        return x


class GPTModel(nn.Module):
    """Embedding -> decoder layers -> final norm -> output layer (or the tied embedding)."""

    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.args = a
        self.embedding = Embedding(a)
        self.decoder = TransformerBlock(a)
        if not a.tied:
            self.output_layer = nn.Linear(a.hidden_size, a.padded_vocab_size, bias=False)
        self.register_buffer(
            "inv_freq",
            inverse_frequencies(a.head_dim, a.rope_theta, a.rope_scaling),
            persistent=False,
        )

    def output_weight(self) -> torch.Tensor:
        if self.args.tied:
            return self.embedding.word_embeddings.weight
        return self.output_layer.weight

    def forward(
        self,
        tokens: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [batch, seq, vocab_size] over the true vocabulary (padding rows cut off)."""
        if position_ids is None:
            position_ids = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        h = self.embedding(tokens)
        cos, sin = rope_cos_sin(self.inv_freq, position_ids, h.dtype)
        h = self.decoder(h, cos, sin, segment_ids)
        return output_logits(h, self.output_weight(), self.args.vocab_size)


def output_logits(h: torch.Tensor, weight: torch.Tensor, vocab: int) -> torch.Tensor:
    """h @ W^T over the true vocabulary: padded rows never reach the softmax, so the loss
    is the same at any TP (whose padding differs).

    With a vocab-sharded DTensor W the logits are all-gathered over TP; the activations
    enter as replicated, so their gradient is all-reduced over TP on the way back
    (Megatron's copy-to-tensor-parallel-region). Unsharded, the weight's first `vocab`
    rows are a contiguous view, which also skips the padded rows' flops.
    """
    from torch.distributed.tensor import DTensor, Replicate

    if isinstance(weight, DTensor):
        hd = DTensor.from_local(h, weight.device_mesh, [Replicate()], run_check=False)
        full = F.linear(hd, weight).redistribute(placements=[Replicate()]).to_local()
        return full[..., :vocab]
    return F.linear(h, weight[:vocab])
