"""Reading a model out of Megatron rank state dicts, one layer at a time.

`RankStateReader` is the part of a Megatron reader that does not care where the rank
state dicts live: it gathers one layer's tensors from the T ranks of its pipeline stage
and turns them back into Hugging Face pieces with the family table (`sharding.gather_part`).
`MegatronSource` (files on disk, mmap) and `StateDictSource` (state dicts in memory, e.g.
the trainer's shards) only say how to get one rank's flat state dict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.meta import ModelMeta
from atelier.llm.convert.names import canonical_legacy_name, detect_format, flatten
from atelier.llm.convert.parts import Part
from atelier.llm.convert.sharding import gather_part

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass
class MegatronLayout:
    tp: int
    pp: int
    layer_list: list[int]
    fmt: str
    norms: str
    padded_vocab: int
    iteration: int | str
    # virtual pipeline chunks per stage; a VPP checkpoint is read with `pp` = P x vp
    # reading stages (its chunks in layer order) and `layer_list` per chunk
    vp: int = 1


def canonical_flat(model: Mapping) -> dict[str, torch.Tensor]:
    """A rank's `model` (nested legacy or flat) as flat names in today's spelling."""
    return {canonical_legacy_name(k): v for k, v in flatten(model).items()}


def count_layers(flat: Mapping[str, torch.Tensor], where: str) -> int:
    """Transformer layers in one stage's state dict (numbered 0..n-1 locally)."""
    idx = {int(m.group(1)) for k in flat if (m := _LAYER.search(k))}
    if not idx:
        raise AtelierError(f"{where}: no transformer layers in this stage")
    if idx != set(range(len(idx))):
        raise AtelierError(
            f"{where}: layer numbers {sorted(idx)} are not "
            "0..n-1 (Megatron numbers layers locally in each stage)"
        )
    return len(idx)


class RankStateReader:
    """A `CheckpointSource` over Megatron rank state dicts; subclasses supply `_rank_state`."""

    meta: ModelMeta
    layout: MegatronLayout
    assets_dir: Path | None = None

    def _rank_state(self, tp: int, pp: int) -> tuple[str, Mapping[str, torch.Tensor]]:
        """(where, flat canonical state dict) of rank (tp, pp)."""
        raise NotImplementedError

    def _check_layout(self, stage_names: list[tuple[str, set[str]]]) -> None:
        """Refuse a checkpoint the table cannot read whole: no slot for a part in this
        format, or tensors (of rank 0 of each stage: `(where, names)`) it would drop."""
        fam, lay = self.meta.fam, self.layout
        for part in (*fam.parts_for(self.meta), *fam.model_parts_for(self.meta)):
            if part.name(lay.fmt, lay.norms) is None:
                raise AtelierError(
                    f"{stage_names[0][0]}: a {lay.fmt} checkpoint cannot hold {fam.name}'s "
                    f"{part.role} ({part.hf[0]}); Atelier writes such models in mcore format only"
                )
        self._starts = [sum(lay.layer_list[:p]) for p in range(lay.pp)]

        def names_of(parts: list[Part], layers: int = 1) -> set[str]:
            templates = [n for p in parts if (n := p.name(lay.fmt, lay.norms))]
            return {t.format(i=j) for t in templates for j in range(layers)}

        for pp, (where, names) in enumerate(stage_names):
            known = names_of(fam.parts_for(self.meta), lay.layer_list[pp])
            if pp == 0:
                known |= names_of([fam.embed])
            if pp == lay.pp - 1:
                known |= names_of([fam.final_norm, fam.output, fam.head_copy])
            extra = sorted(n for n in names - known if not n.endswith(("_extra_state", "inv_freq")))
            if extra:
                raise AtelierError(
                    f"{where}: {len(extra)} tensors have no place in the {fam.name} table "
                    f"(e.g. {extra[0]!r}); converting would lose them. Is args.qk_layernorm / "
                    "add_qkv_bias / untie_embeddings_and_output_weights right?"
                )

    def _gather(self, pp: int, names: list[str]) -> dict[str, list[torch.Tensor]]:
        """Tensors `names` from every TP rank of stage `pp`.

        Rank files are opened with mmap; the returned tensors are views of the mapping,
        which callers hold for one layer only, so touched pages (which count as RSS)
        are unmapped once that layer is written.
        """
        out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        for t in range(self.layout.tp):
            where, flat = self._rank_state(t, pp)
            for name in names:
                if name not in flat:
                    raise AtelierError(f"{where}: tensor {name!r} is missing")
                out[name].append(flat[name])
            del flat
        return out

    def _name(self, part: Part, local_layer: int = 0) -> str:
        name = part.name(self.layout.fmt, self.layout.norms)
        assert name is not None  # _check_layout refused such checkpoints
        return name.format(i=local_layer)

    def _whole(self, pp: int, part: Part) -> torch.Tensor:
        name = self._name(part)
        return gather_part(part, self._gather(pp, [name])[name], self.meta)[0]

    def embed(self) -> torch.Tensor:
        return self._whole(0, self.meta.fam.embed)

    def final_norm(self) -> torch.Tensor:
        return self._whole(self.layout.pp - 1, self.meta.fam.final_norm)

    def lm_head(self) -> torch.Tensor | None:
        if self.meta.tied:
            return None
        return self._whole(self.layout.pp - 1, self.meta.fam.output)

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        pp = max(p for p in range(self.layout.pp) if self._starts[p] <= i)
        j = i - self._starts[pp]
        parts = self.meta.fam.parts_for(self.meta)
        names = [self._name(p, j) for p in parts]
        shards = self._gather(pp, names)
        out: dict[str, torch.Tensor] = {}
        for part, name in zip(parts, names, strict=True):
            out.update(zip(part.pieces, gather_part(part, shards[name], self.meta), strict=True))
        return out

    def close(self) -> None:
        pass


class StateDictSource(RankStateReader):
    """Megatron rank state dicts held in memory, read like a checkpoint.

    `rank_states` is a list over TP ranks of flat (or nested legacy) state dicts for
    P = 1, or a list over pipeline stages of such lists. Names may be legacy or mcore
    (local or TE norms), detected as for files. `meta` describes the model (e.g. from
    `meta_from_hf_config`); tensors are handed over as they are (no copy), so the HF
    writer (`hf_checkpoint.hf_tensors` + `write_safetensors_sharded`) and the Megatron
    writer (`megatron_writer.write_megatron`) can take the trainer's shards directly.
    """

    def __init__(
        self,
        rank_states: Sequence[Mapping[str, torch.Tensor]]
        | Sequence[Sequence[Mapping[str, torch.Tensor]]],
        meta: ModelMeta,
        *,
        assets_dir: Path | None = None,
    ) -> None:
        if not rank_states:
            raise AtelierError("rank_states: empty; pass one state dict per TP rank")
        stages = [rank_states] if isinstance(rank_states[0], Mapping) else list(rank_states)
        self._flat = [[canonical_flat(s) for s in stage] for stage in stages]  # type: ignore[arg-type]
        tps = {len(stage) for stage in self._flat}
        if len(tps) != 1:
            raise AtelierError(f"rank_states: stages hold {sorted(tps)} TP ranks; pass the same")
        self.meta = meta
        self.assets_dir = assets_dir
        fmt, norms = detect_format(self._flat[0][0])
        layer_list = [
            count_layers(stage[0], f"rank_states stage {p}") for p, stage in enumerate(self._flat)
        ]
        if sum(layer_list) != meta.num_layers:
            raise AtelierError(
                f"rank_states: stages hold {layer_list} layers but meta.num_layers is "
                f"{meta.num_layers}"
            )
        embed = meta.fam.embed.name(fmt, norms)
        if embed not in self._flat[0][0]:
            raise AtelierError(f"rank_states: no {embed} on the first pipeline stage")
        tp = tps.pop()
        self.layout = MegatronLayout(
            tp=tp,
            pp=len(self._flat),
            layer_list=layer_list,
            fmt=fmt,
            norms=norms,
            padded_vocab=self._flat[0][0][embed].shape[0] * tp,
            iteration=0,
        )
        if meta.vocab_size > self.layout.padded_vocab:
            raise AtelierError(
                f"rank_states: meta.vocab_size is {meta.vocab_size} but the embedding has "
                f"only {self.layout.padded_vocab} rows"
            )
        self._check_layout(
            [(f"rank_states[{p}][0]", set(stage[0])) for p, stage in enumerate(self._flat)]
        )

    def _rank_state(self, tp: int, pp: int) -> tuple[str, Mapping[str, torch.Tensor]]:
        return f"rank_states[{pp}][{tp}]", self._flat[pp][tp]
