"""Hugging Face <-> Megatron checkpoint conversion with TP/PP sharding (issue 4).

Every conversion goes through one family-independent, per-layer view of the model
(`source.CheckpointSource`): readers produce it lazily, writers consume it one
output file at a time, so memory stays near one output rank file plus one layer.
"""

from atelier.llm.convert.hf2mg import Hf2MgOptions, hf2mg
from atelier.llm.convert.inspect import inspect_checkpoint
from atelier.llm.convert.mg2hf import mg2hf
from atelier.llm.convert.mg2mg import mg2mg

__all__ = ["Hf2MgOptions", "hf2mg", "inspect_checkpoint", "mg2hf", "mg2mg"]
