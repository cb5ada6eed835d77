"""One pipeline stage of the decoder: which layers it holds and the module that runs them.

Stage s of P holds the layers `stage_layers(...)[s]` (an even split, or `num_layer_list` as
hf2mg reads it); the first stage also holds the embedding, the last the final norm and the
output layer. With tied embeddings the last stage keeps its own copy of the embedding as
`output_layer.weight`, exactly as Megatron (and hf2mg's PP rank files) do; the pipeline
keeps the two copies equal by summing their gradients (`pipeline.TiedEmbedding`).

Layers are kept under their global numbers (`decoder.layers.5` on the stage that holds layer
5), so every parameter has one name across all stages: the optimizer's distributed
checkpoint needs unique names, and they equal the one-stage model's. Rank files use
Megatron's stage-local numbers (`rank_file_names`/`local_name` translate).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch
from torch import nn

from atelier.llm.convert.sharding import layer_partition
from atelier.llm.train.model.args import ModelArgs
from atelier.llm.train.model.decoder import (
    Embedding,
    RMSNorm,
    TransformerBlock,
    TransformerLayer,
    output_logits,
)
from atelier.llm.train.model.rope import inverse_frequencies, rope_cos_sin

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.")


def shift_layer(name: str, offset: int) -> str:
    """`decoder.layers.N.x` -> `decoder.layers.{N + offset}.x` (other names unchanged):
    between a rank file's stage-local layer numbers and the model's global ones."""
    return _LAYER.sub(lambda m: f"decoder.layers.{int(m.group(1)) + offset}.", name)


def stage_layers(num_layers: int, pp: int, layer_list: list[int] | None) -> list[range]:
    """Global layer numbers of every stage (`num_layer_list` as hf2mg's, else even)."""
    sizes = layer_partition(num_layers, pp, layer_list)
    starts = [sum(sizes[:s]) for s in range(pp)]
    return [range(a, a + n) for a, n in zip(starts, sizes, strict=True)]


class LayerDict(nn.ModuleDict):
    """Layers keyed by their global number, iterated and indexed (by position) as a list,
    so the one-stage code (`TransformerBlock.forward`, TP and FSDP wrapping, recompute)
    runs on a stage unchanged."""

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx: int | str) -> nn.Module:
        if isinstance(idx, int):
            return list(self._modules.values())[idx]
        return self._modules[idx]


class StageBlock(TransformerBlock):
    """The stage's layers (and, on the last stage, the final norm)."""

    def __init__(self, a: ModelArgs, layers: range, last: bool) -> None:
        nn.Module.__init__(self)
        self.layers = LayerDict({str(i): TransformerLayer(a) for i in layers})
        self.final_layernorm = RMSNorm(a.hidden_size, a.norm_eps) if last else nn.Identity()
        self.recompute_groups: list[list[int]] = []


class StageModel(nn.Module):
    """Embedding (first stage) -> its layers -> final norm + output layer (last stage).

    Input: tokens on the first stage, the previous stage's hidden states elsewhere; every
    stage also takes the micro-batch's `position_ids` / `segment_ids` (the schedule passes
    keyword arguments to all stages). Output: hidden states, or on the last stage the
    logits over the true vocabulary.
    """

    def __init__(self, a: ModelArgs, layers: range, first: bool, last: bool) -> None:
        super().__init__()
        # `args.num_layers` is this stage's count: recompute settings apply per stage,
        # as Megatron applies recompute_num_layers to each pipeline stage.
        self.args = dataclasses.replace(a, num_layers=len(layers))
        self.model_args = a
        self.layer_ids = layers
        self.first, self.last = first, last
        if first:
            self.embedding = Embedding(a)
        self.decoder = StageBlock(a, layers, last)
        if last:
            self.output_layer = nn.Linear(a.hidden_size, a.padded_vocab_size, bias=False)
        self.register_buffer(
            "inv_freq",
            inverse_frequencies(a.head_dim, a.rope_theta, a.rope_scaling),
            persistent=False,
        )

    def forward(
        self,
        x: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if position_ids is None:
            n, s = x.shape[0], x.shape[1]
            position_ids = torch.arange(s, device=x.device).expand(n, s)
        h = self.embedding(x) if self.first else x
        cos, sin = rope_cos_sin(self.inv_freq, position_ids, h.dtype)
        h = self.decoder(h, cos, sin, segment_ids)
        if not self.last:
            return h
        return output_logits(h, self.output_layer.weight, self.model_args.vocab_size)


@dataclass(frozen=True)
class StageSpec:
    """Pipeline stage `index` of `size`, holding global layers `layers`."""

    index: int
    size: int
    layers: range
    layer_list: list[int]

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.index == self.size - 1

    def module(self, a: ModelArgs) -> StageModel:
        return StageModel(a, self.layers, self.first, self.last)

    def tensors(
        self, source, a: ModelArgs, tp: int, tp_rank: int, divisible_by: int
    ) -> dict[str, torch.Tensor]:
        """This (tp, stage) cell's tensors from any source, under the model's names:
        exactly what hf2mg writes into `mp_rank_TT_PPP` (built by its own code)."""
        from atelier.llm.convert.state_dicts import source_to_megatron_rank

        state = source_to_megatron_rank(
            source,
            tp,
            tp_rank,
            pp=self.size,
            pp_rank=self.index,
            num_layer_list=self.layer_list,
            divisible_by=divisible_by,
        )
        return {shift_layer(k, self.layers.start): v for k, v in state.items()}


def stage_spec(a: ModelArgs, pp: int, pp_rank: int, layer_list: list[int] | None) -> StageSpec:
    ranges = stage_layers(a.num_layers, pp, layer_list)
    return StageSpec(pp_rank, pp, ranges[pp_rank], [len(r) for r in ranges])
