"""The row types of the family tables: a tensor (`Part`), its TP split (`Split`), and the
architecture facts that are not tensors (`Arch`).

Apart from the tables (`llama_layout.py`, `families.py`) so the readers, writers and the
slicing (`sharding.py`), which only interpret rows, need not import every family.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atelier.llm.convert.meta import ModelMeta


class Split(enum.Enum):
    """How tensor parallelism divides a part over TP ranks."""

    COLUMN = "column"  # output features on dim 0
    ROW = "row"  # input features on dim 1
    REPLICATED = "replicated"  # every rank holds all of it (norms)
    QKV = "qkv"  # [q; k; v] fused per query group, each rank a contiguous run of groups
    GATE_UP = "gate_up"  # [gate_r; up_r] per rank
    VOCAB = "vocab"  # rows padded to the padded vocabulary, then dim 0

    @property
    def dim(self) -> int | None:
        """The dimension TP shards (1 row-parallel, 0 every column-like kind, None replicated)."""
        if self is Split.REPLICATED:
            return None
        return 1 if self is Split.ROW else 0


Shape = tuple[int, ...]


@dataclass(frozen=True)
class Part:
    """One Megatron tensor and the Hugging Face tensor(s) it is made of."""

    role: str
    pieces: tuple[str, ...]
    hf: tuple[str, ...]
    legacy: str | None  # None: Megatron's legacy GPTModel has no such parameter
    mcore: str
    split: Split
    piece_shapes: Callable[[ModelMeta], tuple[Shape, ...]]
    mcore_te: str | None = None  # None: same as `mcore`
    when: str | None = None  # a ModelMeta flag; the part exists only when it is true

    def name(self, fmt: str, norms: str = "local") -> str | None:
        if fmt == "legacy":
            return self.legacy
        if norms == "te" and self.mcore_te is not None:
            return self.mcore_te
        return self.mcore

    def present(self, meta: ModelMeta) -> bool:
        return self.when is None or bool(getattr(meta, self.when))

    def shape(self, meta: ModelMeta) -> Shape:
        """Full Megatron shape (fused pieces stacked on dim 0), unpadded."""
        shapes = self.piece_shapes(meta)
        if len(shapes) == 1:
            return shapes[0]
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def rank_shape(self, meta: ModelMeta, tp: int, padded_vocab: int | None = None) -> Shape:
        """Shape of one TP rank's shard."""
        full = self.shape(meta)
        if self.split is Split.REPLICATED:
            return full
        if self.split is Split.ROW:
            return (full[0], full[1] // tp, *full[2:])
        if self.split is Split.VOCAB:
            rows = padded_vocab if padded_vocab is not None else full[0]
            return (rows // tp, *full[1:])
        return (full[0] // tp, *full[1:])


@dataclass(frozen=True)
class Arch:
    """Architecture facts that are not tensors."""

    norm: str = "RMSNorm"  # Megatron's `normalization`
    norm_eps_field: str = "rms_norm_eps"  # the HF config field holding the epsilon
    activation: str = "silu"  # gated (SwiGLU): act(gate) * up
    qkv_bias: bool = False  # always (Qwen2); Llama may turn it on with `attention_bias`
    qk_norm: bool = False  # RMSNorm per head over head_dim on q and k, before rotary
    rope: str = "rotate_half"  # rotary over the two halves of each head (HF and Megatron)
    rope_scalings: tuple[str, ...] = ("llama3",)  # scalings with Megatron args
