"""LoRA tensors between rank state dicts and the live model, at any tensor-parallel size.

Names: a targeted `X.weight` / `X.bias` of a Megatron rank file is `X.base_layer.weight` /
`.bias` in a LoRA model and checkpoint (MindSpeed renames exactly these, never norms), and
`X.lora_A.default.weight` / `X.lora_B.default.weight` follow it.

TP layouts (what one rank holds of the whole adapter, which is the TP-1 tensor):
column-parallel bases keep A whole and B cut by rows, `linear_fc1`'s B as [gate_r; up_r]
like its base; row-parallel bases cut A by columns and keep B whole. `gather` and `shard`
convert between the two, so adapters saved at one TP load at another.

Fresh adapters are made whole from the run's seed and the parameter's name (A Kaiming-
uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)); B zero, as PEFT), then cut, so
every TP and DP layout starts from the same adapters.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

from atelier.core.errors import AtelierError
from atelier.llm.train.lora.module import is_adapter
from atelier.llm.train.lora.spec import ADAPTER, COLUMN_PARALLEL, LoraSpec

BASE = ".base_layer."


def base_name(name: str, spec: LoraSpec) -> str:
    """The LoRA model's name for a Megatron rank-file tensor."""
    module, _, leaf = name.rpartition(".")
    return f"{module}.base_layer.{leaf}" if spec.is_target(module) else name


def plain_name(name: str) -> str:
    """The Megatron rank-file name of a LoRA model's base tensor."""
    return name.replace(BASE, ".")


def adapter_names(module: str) -> tuple[str, str]:
    return f"{module}.lora_A.{ADAPTER}.weight", f"{module}.lora_B.{ADAPTER}.weight"


def _kind(name: str) -> tuple[str, str]:
    """('linear_qkv' ..., 'A' | 'B') of an adapter tensor name."""
    module, which = name.split(".lora_")
    return module.rpartition(".")[2], which[0]


def _split_dim(name: str) -> int | None:
    """The dim TP cuts an adapter on (None: replicated)."""
    linear, which = _kind(name)
    if linear in COLUMN_PARALLEL:
        return 0 if which == "B" else None
    return 1 if which == "A" else None


def shard(name: str, full: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    """TP rank `rank`'s part of a whole adapter tensor."""
    dim = _split_dim(name)
    if dim is None or tp == 1:
        return full
    if _kind(name)[0] == "linear_fc1":  # [gate; up] -> [gate_r; up_r]
        return torch.cat([h.chunk(tp, dim=0)[rank] for h in full.chunk(2, dim=0)], dim=0)
    return full.chunk(tp, dim=dim)[rank]


def gather(name: str, shards: list[torch.Tensor]) -> torch.Tensor:
    """The whole adapter tensor from every TP rank's part (inverse of `shard`)."""
    dim = _split_dim(name)
    if dim is None or len(shards) == 1:
        return shards[0]
    if _kind(name)[0] == "linear_fc1":
        halves = [s.chunk(2, dim=0) for s in shards]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    return torch.cat(shards, dim=dim)


def fresh_adapter(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A whole fresh adapter: A Kaiming-uniform (a = sqrt(5)) from (seed, name), B zeros."""
    if _kind(name)[1] == "B":
        return torch.zeros(shape)
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    bound = 1.0 / shape[1] ** 0.5  # kaiming_uniform_(a=sqrt(5)): gain sqrt(1/3) x sqrt(3/fan_in)
    return torch.empty(shape).uniform_(-bound, bound, generator=g)


def read_lora_ranks(it_dir: Path) -> tuple[int, list[dict[str, torch.Tensor]]]:
    """(TP, per-rank flat state dicts) of a LoRA checkpoint's iteration folder (mmap)."""
    from atelier.llm.convert.megatron_checkpoint import load_rank_file, rank_files
    from atelier.llm.convert.megatron_state import canonical_flat

    files = rank_files(it_dir)
    if any(pp for _, pp in files):
        raise AtelierError(
            f"lora_load {it_dir}: a checkpoint with pipeline stages; LoRA reads one stage here"
        )
    tp = max(t for t, _ in files) + 1
    ranks = []
    for t in range(tp):
        ckpt = load_rank_file(files[(t, 0)])
        model = ckpt.get("model")
        if not isinstance(model, dict):
            raise AtelierError(f"{files[(t, 0)]}: no 'model' state dict inside")
        ranks.append(canonical_flat(model))
    return tp, ranks


def split_lora_flat(
    flat: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base tensors under Megatron names, adapter tensors) of one LoRA rank state dict."""
    base = {plain_name(k): v for k, v in flat.items() if not is_adapter(k)}
    return base, {k: v for k, v in flat.items() if is_adapter(k)}


def rank_state(
    state: dict[str, torch.Tensor],
    shapes: Mapping[str, tuple[int, ...]],
    spec: LoraSpec,
    *,
    tp: int,
    rank: int,
    seed: int,
    saved: tuple[Path | str, int, list[dict[str, torch.Tensor]]] | None,
) -> dict[str, torch.Tensor]:
    """This TP rank's tensors of the LoRA model, from its base rank state (`state`,
    Megatron names) and the adapters of `saved` = (where, TP, per-rank state dicts) or
    fresh ones. `shapes` are the model's whole (TP-1) shapes by name.

    modules_to_save tensors found in `saved` replace the base's (same TP only: their
    vocabulary padding depends on it).
    """
    out = {base_name(k, spec): v for k, v in state.items()}
    wanted = [n for n in shapes if is_adapter(n)]
    if saved is None:
        for n in wanted:
            out[n] = shard(n, fresh_adapter(n, shapes[n], seed), tp, rank)
        return out
    where, saved_tp, ranks = saved
    have = {n for n in ranks[0] if is_adapter(n)}
    missing = [n for n in wanted if n not in have]
    if missing or have - set(wanted):
        odd = missing[0] if missing else sorted(have - set(wanted))[0]
        raise AtelierError(
            f"lora_load {where}: {'no adapter' if missing else 'an adapter not in this run'} "
            f"{odd}; give the lora_target_modules that checkpoint was trained with"
        )
    for n in wanted:
        full = gather(n, [r[n] for r in ranks])
        if tuple(full.shape) != tuple(shapes[n]):
            raise AtelierError(
                f"lora_load {where}: {n} has shape {tuple(full.shape)}, this run needs "
                f"{tuple(shapes[n])}; is lora_r {spec.r} the rank it was trained with?"
            )
        out[n] = shard(n, full, tp, rank)
    for n in [n for n in out if spec.trains_fully(n) and n in ranks[0]]:
        if saved_tp != tp:
            raise AtelierError(
                f"lora_load {where}: saved at TP {saved_tp}, this run has TP {tp}; "
                "lora_modules_to_save tensors load at the same TP only"
            )
        out[n] = ranks[rank][n]
    return out


def rank_file_entries(
    have: Mapping[str, torch.Tensor],
    names: list[str],
    spec: LoraSpec,
    *,
    dtype: torch.dtype,
    base_dtype: torch.dtype,
) -> tuple[list[tuple[str, torch.Tensor]], dict[str, torch.dtype]]:
    """(name, parameter) of a LoRA rank file in file order, and each tensor's dtype.

    `names` are the plain rank file's names (hf2mg's order); `have` the model's tensors by
    LoRA name. Adapters follow their base and are stored in fp32 (MindSpeed keeps them
    fp32); frozen base tensors keep the dtype they were loaded in (`base_dtype`), so they
    are saved bit-identical; modules_to_save use the run's dtype. With `ckpt_filter` only
    adapters and modules_to_save are written.
    """
    out: list[tuple[str, torch.Tensor]] = []
    dtypes: dict[str, torch.dtype] = {}

    def add(name: str, t_dtype: torch.dtype) -> None:
        out.append((name, have[name]))
        dtypes[name] = t_dtype

    for plain in names:
        name = base_name(plain, spec)
        if name not in have:
            raise RuntimeError(f"bug: the LoRA model has no {name}")
        full = spec.trains_fully(name)
        if full or not spec.ckpt_filter:
            add(name, dtype if full else base_dtype)
        module, _, leaf = plain.rpartition(".")
        if spec.is_target(module) and leaf == "weight":
            for a in adapter_names(module):
                add(a, torch.float32)
    left = [n for n in have if is_adapter(n) and n not in dtypes]
    if left:
        raise RuntimeError(f"bug: adapters left out of the rank file: {left[:3]}")
    return out, dtypes
