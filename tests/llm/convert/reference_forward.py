"""An independent Llama-layout forward pass (with Qwen3's qk-norm) from Megatron shards.

Written from the math, not from the converter: it reads `model_optim_rng.pt` files,
slices the per-group fused QKV itself, runs column-parallel pieces per TP rank and
sums the row-parallel partial outputs across ranks, as tensor parallelism does.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .helpers import flat, load_rank, rank_path

LEGACY = {
    "embed": "language_model.embedding.word_embeddings.weight",
    "final_norm": "language_model.encoder.final_norm.weight",
    "output": "language_model.output_layer.weight",
    "input_norm": "language_model.encoder.layers.{}.input_norm.weight",
    "qkv": "language_model.encoder.layers.{}.self_attention.query_key_value.weight",
    "qkv_bias": "language_model.encoder.layers.{}.self_attention.query_key_value.bias",
    "proj": "language_model.encoder.layers.{}.self_attention.dense.weight",
    "post_norm": "language_model.encoder.layers.{}.post_attention_norm.weight",
    "fc1": "language_model.encoder.layers.{}.mlp.dense_h_to_4h.weight",
    "fc2": "language_model.encoder.layers.{}.mlp.dense_4h_to_h.weight",
}
MCORE = {
    "embed": "embedding.word_embeddings.weight",
    "final_norm": "decoder.final_layernorm.weight",
    "output": "output_layer.weight",
    "input_norm": "decoder.layers.{}.input_layernorm.weight",
    "qkv": "decoder.layers.{}.self_attention.linear_qkv.weight",
    "qkv_bias": "decoder.layers.{}.self_attention.linear_qkv.bias",
    "q_norm": "decoder.layers.{}.self_attention.q_layernorm.weight",
    "k_norm": "decoder.layers.{}.self_attention.k_layernorm.weight",
    "proj": "decoder.layers.{}.self_attention.linear_proj.weight",
    "post_norm": "decoder.layers.{}.pre_mlp_layernorm.weight",
    "fc1": "decoder.layers.{}.mlp.linear_fc1.weight",
    "fc2": "decoder.layers.{}.mlp.linear_fc2.weight",
}
TE = {
    **MCORE,
    "input_norm": "decoder.layers.{}.self_attention.linear_qkv.layer_norm_weight",
    "post_norm": "decoder.layers.{}.mlp.linear_fc1.layer_norm_weight",
}


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def inv_freq(args, head_dim: int) -> torch.Tensor:
    freq = 1.0 / (
        args.rotary_base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    )
    if not getattr(args, "use_rope_scaling", False):
        return freq
    factor, lo, hi = args.rope_scaling_factor, args.low_freq_factor, args.high_freq_factor
    old = args.rope_scaling_original_max_position_embeddings
    wavelen = 2 * math.pi / freq
    smooth = ((old / wavelen - lo) / (hi - lo)).clamp(0, 1)
    scaled = (1 - smooth) * freq / factor + smooth * freq
    return torch.where(
        wavelen < old / hi, freq, torch.where(wavelen > old / lo, freq / factor, scaled)
    )


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split rotary: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def megatron_logits(mg: Path, ids: torch.Tensor) -> torch.Tensor:
    """Logits [batch, seq, true vocab] of the Megatron checkpoint in `mg`, in float64."""
    args = load_rank(
        rank_path(mg, 0, 0, 1)
        if (mg / "iter_0000001" / "mp_rank_00").is_dir()
        else rank_path(mg, 0, 0, 2)
    )["args"]
    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    ranks = [
        [
            {k: v.double() for k, v in flat(load_rank(rank_path(mg, t, p, pp))["model"]).items()}
            for t in range(tp)
        ]
        for p in range(pp)
    ]
    names = MCORE if any(k.startswith("decoder.") for k in ranks[0][0]) else LEGACY
    if any(k.endswith("layer_norm_weight") for k in ranks[0][0]):
        names = TE
    heads, groups, d = args.num_attention_heads, args.num_query_groups, args.kv_channels
    hpg, eps = heads // groups, args.norm_epsilon
    seq = ids.shape[1]
    angles = torch.outer(torch.arange(seq, dtype=torch.float64), inv_freq(args, d))
    cos, sin = angles.cos(), angles.sin()
    mask = torch.full((seq, seq), float("-inf"), dtype=torch.float64).triu(1)

    embed = torch.cat([r[names["embed"]] for r in ranks[0]])
    x = embed[ids]
    for stage in ranks:
        n_layers = len({k.split(".layers.")[1].split(".")[0] for k in stage[0] if ".layers." in k})
        for j in range(n_layers):
            name = {k: v.format(j) for k, v in names.items()}
            h = rms_norm(x, stage[0][name["input_norm"]], eps)
            attn_out = 0
            for r in stage:
                y = h @ r[name["qkv"]].T
                if args.add_qkv_bias:
                    y = y + r[name["qkv_bias"]]
                y = y.view(*y.shape[:2], groups // tp, hpg + 2, d)
                q = y[:, :, :, :hpg].flatten(2, 3).transpose(1, 2)  # b, heads/tp, s, d
                k = y[:, :, :, hpg].transpose(1, 2).repeat_interleave(hpg, dim=1)
                v = y[:, :, :, hpg + 1].transpose(1, 2).repeat_interleave(hpg, dim=1)
                if getattr(args, "qk_layernorm", False):  # RMSNorm per head, before rotary
                    q = rms_norm(q, r[name["q_norm"]], eps)
                    k = rms_norm(k, r[name["k_norm"]], eps)
                q, k = rotate(q, cos, sin), rotate(k, cos, sin)
                att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, dim=-1)
                o = (att @ v).transpose(1, 2).flatten(2)
                attn_out = attn_out + o @ r[name["proj"]].T  # row parallel: sum partials
            x = x + attn_out
            h = rms_norm(x, stage[0][name["post_norm"]], eps)
            mlp_out = 0
            for r in stage:
                gate, up = (h @ r[name["fc1"]].T).chunk(2, dim=-1)
                mlp_out = mlp_out + (torch.nn.functional.silu(gate) * up) @ r[name["fc2"]].T
            x = x + mlp_out
    last = ranks[-1]
    x = rms_norm(x, last[0][names["final_norm"]], eps)
    if args.untie_embeddings_and_output_weights:
        out = torch.cat([r[names["output"]] for r in last])
    else:
        out = embed
    return (x @ out.T)[..., : args.true_vocab_size]
