"""The one interface between readers and writers: a model, one layer at a time.

Readers (Hugging Face folder, Megatron checkpoint) implement it lazily; writers
ask for the embedding, each layer, the final norm and the head in turn and drop
them as soon as the output file that needs them is written. Tensors use the
Hugging Face layout (separate q/k/v and gate/up, unpadded vocabulary), keyed by the
family table's piece keys (`families.Part.pieces`: q, k, v, q_bias, q_norm, o, gate, ...).

Implementations: `HFSource` (folder), `MegatronSource` (checkpoint on disk),
`state_dicts.HFStateSource` and `megatron_state.StateDictSource` (state dicts in memory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from atelier.llm.convert.meta import ModelMeta


class CheckpointSource(Protocol):
    meta: ModelMeta
    # Folder holding config.json / tokenizer files to carry along, if any.
    assets_dir: Path | None

    def embed(self) -> torch.Tensor:
        """Word embeddings, [meta.vocab_size, hidden] (padding rows removed)."""
        ...

    def final_norm(self) -> torch.Tensor: ...

    def lm_head(self) -> torch.Tensor | None:
        """Output weights [meta.vocab_size, hidden]; None when tied to the embedding."""
        ...

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        """Layer i (global numbering): the pieces of `meta.fam.parts_for(meta)`."""
        ...

    def close(self) -> None: ...


def vocab_rows(source: CheckpointSource, which: str, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of the (unpadded) embedding or head; `which` is embed|lm_head."""
    fast = getattr(source, "vocab_rows", None)
    if fast is not None:
        return fast(which, start, stop)
    full = source.embed() if which == "embed" else source.lm_head()
    assert full is not None
    return full[start:stop].clone()
