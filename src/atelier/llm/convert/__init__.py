"""Hugging Face <-> Megatron checkpoint conversion with TP/PP sharding (issue 4).

Every conversion goes through one family-independent, per-layer view of the model
(`source.CheckpointSource`): readers produce it lazily, writers consume it one
output file at a time, so memory stays near one output rank file plus one layer.
What a family's tensors are called and how they are split is one table per family
(`families.py`); the in-memory API for the trainer is in `state_dicts.py`.
"""

from atelier.llm.convert.families import FAMILIES, Arch, Family, Part, Split, get_family
from atelier.llm.convert.hf2mg import Hf2MgOptions, hf2mg
from atelier.llm.convert.inspect import inspect_checkpoint
from atelier.llm.convert.lora import LoraSpec
from atelier.llm.convert.lora_checkpoint import LoraOptions
from atelier.llm.convert.meta import ModelMeta, megatron_args, meta_from_hf_config
from atelier.llm.convert.mg2hf import mg2hf
from atelier.llm.convert.mg2mg import mg2mg
from atelier.llm.convert.state_dicts import (
    HFStateSource,
    StateDictSource,
    hf_to_megatron_rank,
    megatron_ranks_to_hf,
    megatron_ranks_to_peft,
    reshard,
    source_to_megatron_rank,
)

__all__ = [
    "FAMILIES",
    "Arch",
    "Family",
    "HFStateSource",
    "Hf2MgOptions",
    "LoraOptions",
    "LoraSpec",
    "ModelMeta",
    "Part",
    "Split",
    "StateDictSource",
    "get_family",
    "hf2mg",
    "hf_to_megatron_rank",
    "inspect_checkpoint",
    "megatron_args",
    "megatron_ranks_to_hf",
    "megatron_ranks_to_peft",
    "meta_from_hf_config",
    "mg2hf",
    "mg2mg",
    "reshard",
    "source_to_megatron_rank",
]
