"""A stand-in training model with megatron-core's parameter names and TP layout.

Global parameter shapes are the TP=1 Megatron shapes (qkv fused per group, fc1 = gate/up,
padded vocabulary); under TP the column/row-parallel styles cut them as Megatron's rank
files do, so the checkpoint code can be tested without the engine.
"""

from __future__ import annotations

import torch
from torch import nn

from atelier.llm.convert.meta import ModelMeta


class Norm(nn.Module):
    def __init__(self, h: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Attention(nn.Module):
    def __init__(self, m: ModelMeta) -> None:
        super().__init__()
        d = m.head_dim
        self.q_width = m.num_heads * d
        self.linear_qkv = nn.Linear(m.hidden_size, (m.num_heads + 2 * m.num_groups) * d, m.qkv_bias)
        self.linear_proj = nn.Linear(m.num_heads * d, m.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, tp: int) -> torch.Tensor:
        qkv = self.linear_qkv(x)
        return self.linear_proj(torch.tanh(qkv[..., : self.q_width // tp]))


class MLP(nn.Module):
    def __init__(self, m: ModelMeta) -> None:
        super().__init__()
        self.linear_fc1 = nn.Linear(m.hidden_size, 2 * m.ffn_hidden_size, bias=False)
        self.linear_fc2 = nn.Linear(m.ffn_hidden_size, m.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.linear_fc1(x).chunk(2, dim=-1)
        return self.linear_fc2(nn.functional.silu(gate) * up)


class Layer(nn.Module):
    def __init__(self, m: ModelMeta) -> None:
        super().__init__()
        self.input_layernorm = Norm(m.hidden_size)
        self.self_attention = Attention(m)
        self.pre_mlp_layernorm = Norm(m.hidden_size)
        self.mlp = MLP(m)

    def forward(self, x: torch.Tensor, tp: int) -> torch.Tensor:
        x = x + self.self_attention(self.input_layernorm(x), tp)
        return x + self.mlp(self.pre_mlp_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, m: ModelMeta) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(m) for _ in range(m.num_layers))
        self.final_layernorm = Norm(m.hidden_size)


class Embedding(nn.Module):
    def __init__(self, padded: int, h: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(padded, h)


class ToyGPT(nn.Module):
    def __init__(self, m: ModelMeta, padded: int) -> None:
        super().__init__()
        self.embedding = Embedding(padded, m.hidden_size)
        self.decoder = Decoder(m)
        self.tied = m.tied
        if not m.tied:
            self.output_layer = nn.Linear(m.hidden_size, padded, bias=False)
        self.tp = 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding.word_embeddings(ids)
        for layer in self.decoder.layers:
            x = layer(x, self.tp)
        x = self.decoder.final_layernorm(x)
        if self.tied:
            w = self.embedding.word_embeddings.weight
            if hasattr(w, "to_local"):
                w = w.full_tensor()
            return x @ w.t()
        return self.output_layer(x)


def parallelize(model: ToyGPT, mesh, tp: int, dp: int) -> ToyGPT:
    """TP (DTensor column/row styles) on mesh['tp'], then FSDP2 on mesh['dp']."""
    if tp > 1:
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            RowwiseParallel,
            parallelize_module,
        )

        plan = {"embedding.word_embeddings": RowwiseParallel()}
        if not model.tied:
            plan["output_layer"] = ColwiseParallel()
        for i in range(len(model.decoder.layers)):
            p = f"decoder.layers.{i}."
            plan[p + "self_attention.linear_qkv"] = ColwiseParallel()
            plan[p + "self_attention.linear_proj"] = RowwiseParallel()
            plan[p + "mlp.linear_fc1"] = ColwiseParallel()
            plan[p + "mlp.linear_fc2"] = RowwiseParallel()
        parallelize_module(model, mesh["tp"], plan)
        model.tp = tp
    if dp > 1:
        from torch.distributed.fsdp import fully_shard

        for layer in model.decoder.layers:
            fully_shard(layer, mesh=mesh["dp"])
        fully_shard(model, mesh=mesh["dp"])
    return model
