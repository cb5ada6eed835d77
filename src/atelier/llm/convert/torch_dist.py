"""Reading Megatron `torch_dist` checkpoints (`--ckpt-format torch_dist`, the default since
megatron-core 0.8) on CPU, without a process group.

Such an iteration folder holds `.metadata` + `__R_K.distcp` (torch.distributed.checkpoint,
written from megatron-core's `sharded_state_dict`) and `common.pt` (args, iteration). The
tensors are stored under their global, TP/PP-independent shapes: the embedding and output
layer with all padded rows, `decoder.layers.X` stacked over the layers on a new dim 0
(one chunk per layer; `decoder.layers.N.X` per layer for heterogeneous models), QKV
fused per query group and fc1 as [gate; up] over the whole width: exactly the layout of
a TP=1, PP=1 mcore rank, with norms under the TE names (`...linear_qkv.layer_norm_weight`)
as megatron-core's local spec maps them. So the reader presents the checkpoint as that one
rank and the family table does the rest. One layer at a time is read, through a load
planner that asks for that layer's chunk only.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.assets import ASSETS_DIRNAME
from atelier.llm.convert.megatron_checkpoint import (
    MegatronSource,
    iteration_dir,
    load_rank_file,
)
from atelier.llm.convert.megatron_state import MegatronLayout, RankStateReader, count_layers
from atelier.llm.convert.meta import meta_from_megatron_args
from atelier.llm.convert.names import detect_format

METADATA = ".metadata"
_MODEL_PREFIXES = ("embedding.", "decoder.", "output_layer.")
_STACKED = re.compile(r"^decoder\.layers\.(?!\d+\.)(.+)$")


def is_torch_dist(it_dir: Path) -> bool:
    return (it_dir / METADATA).is_file()


def is_torch_dist_checkpoint(load_dir: str | Path) -> bool:
    """`load_dir` (a checkpoint folder or its iteration folder) is in torch_dist format."""
    load_dir = Path(load_dir)
    if is_torch_dist(load_dir):
        return True
    try:
        return is_torch_dist(iteration_dir(load_dir))
    except AtelierError:
        return False


def open_megatron_source(load_dir: str | Path) -> RankStateReader:
    """A Megatron checkpoint reader for either format: `torch` (mp_rank_* files) or
    `torch_dist` (an iteration folder with `.metadata`)."""
    if is_torch_dist_checkpoint(load_dir):
        return TorchDistSource.open(Path(load_dir))
    return MegatronSource(load_dir)


def _slice_planner(slices: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> Any:
    """A load planner that reads chunk (offsets, sizes) of each key into its own tensor."""
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata
    from torch.distributed.checkpoint.planner import LoadPlan
    from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

    class SlicePlanner(DefaultLoadPlanner):
        def create_local_plan(self) -> LoadPlan:
            items = []
            for key, (offsets, sizes) in slices.items():
                chunk = ChunkStorageMetadata(torch.Size(offsets), torch.Size(sizes))
                md = self.metadata.state_dict_metadata[key]
                items += create_read_items_for_chunk_list(key, md, [chunk])
            return LoadPlan(items)

        def lookup_tensor(self, index: Any) -> torch.Tensor:
            return self.state_dict[index.fqn]  # one plain tensor per key: that chunk

    return SlicePlanner()


class TorchDistSource(RankStateReader):
    """A `torch_dist` checkpoint read as one TP=1, PP=1 mcore rank, one layer at a time."""

    def __init__(self, load_dir: Path, it_dir: Path) -> None:
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        self.load_dir, self.it_dir = load_dir, it_dir
        try:
            self._reader_path = str(it_dir)
            md = FileSystemReader(self._reader_path).read_metadata()
        except Exception as e:
            raise AtelierError(
                f"{it_dir / METADATA}: unreadable distributed checkpoint ({e})"
            ) from None
        common_path = it_dir / "common.pt"
        if not common_path.is_file():
            raise AtelierError(f"{it_dir}: no common.pt (args, iteration) next to {METADATA}")
        common = load_rank_file(common_path)
        self.args = common.get("args")
        if self.args is None:
            raise AtelierError(
                f"{common_path}: no 'args' inside; Atelier needs the args Megatron saves "
                "with every checkpoint"
            )
        tensors = {
            k: v
            for k, v in md.state_dict_metadata.items()
            if isinstance(v, TensorStorageMetadata) and k.startswith(_MODEL_PREFIXES)
        }
        num_layers = int(self.args.num_layers)
        # per-layer name -> (key, offsets, sizes) of its chunk
        self._where: dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]] = {}
        for key, tmd in tensors.items():
            shape = tuple(tmd.size)
            m = _STACKED.match(key)
            if m is None:
                self._where[key] = (key, (0,) * len(shape), shape)
                continue
            if shape[0] != num_layers:
                raise AtelierError(
                    f"{it_dir}: {key} stacks {shape[0]} layers but args say num_layers={num_layers}"
                )
            for i in range(num_layers):
                self._where[f"decoder.layers.{i}.{m.group(1)}"] = (
                    key,
                    (i,) + (0,) * (len(shape) - 1),
                    (1, *shape[1:]),
                )
        self._dtypes = {k: v.properties.dtype for k, v in tensors.items()}
        names = set(self._where)
        fmt, norms = detect_format(dict.fromkeys(names))  # type: ignore[arg-type]
        meta = meta_from_megatron_args(self.args, str(common_path), torch.float32)
        embed_name = meta.fam.embed.name(fmt, norms)
        if embed_name not in self._where:
            raise AtelierError(f"{it_dir}: no {embed_name} in the distributed checkpoint")
        meta.dtype = self._dtypes[self._where[embed_name][0]]
        self.meta = meta
        layers = count_layers(dict.fromkeys(names), str(it_dir))  # type: ignore[arg-type]
        if layers != meta.num_layers:
            raise AtelierError(
                f"{it_dir}: holds {layers} layers but args say num_layers={meta.num_layers}"
            )
        self.layout = MegatronLayout(
            tp=1,
            pp=1,
            layer_list=[layers],
            fmt=fmt,
            norms=norms,
            padded_vocab=self._where[embed_name][2][0],
            iteration=common.get("iteration", 0),
        )
        if meta.vocab_size > self.layout.padded_vocab:
            raise AtelierError(
                f"{common_path}: args give a vocabulary of {meta.vocab_size} but the "
                f"embedding has only {self.layout.padded_vocab} rows"
            )
        assets = load_dir / ASSETS_DIRNAME
        self.assets_dir: Path | None = assets if assets.is_dir() else None
        self._check_layout([(str(it_dir), names)])

    @classmethod
    def open(cls, load_dir: Path) -> TorchDistSource:
        """From a checkpoint folder (tracker, iter_*/) or the iteration folder itself."""
        return cls(load_dir, load_dir if is_torch_dist(load_dir) else iteration_dir(load_dir))

    def _load(self, names: list[str]) -> dict[str, torch.Tensor]:
        """The named tensors; one `dcp.load` per batch of distinct keys (a layer asks for
        each key once, so normally one call)."""
        out: dict[str, torch.Tensor] = {}
        pending = list(names)
        while pending:
            batch: dict[str, str] = {}  # key -> name
            rest = []
            for name in pending:
                if name not in self._where:
                    raise AtelierError(f"{self.it_dir}: tensor {name!r} is missing")
                key = self._where[name][0]
                (rest.append(name) if key in batch else batch.__setitem__(key, name))
            out.update(self._load_batch(batch))
            pending = rest
        return out

    def _load_batch(self, batch: dict[str, str]) -> dict[str, torch.Tensor]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import FileSystemReader

        slices, dest = {}, {}
        for key, name in batch.items():
            _, offsets, sizes = self._where[name]
            slices[key] = (offsets, sizes)
            dest[key] = torch.empty(sizes, dtype=self._dtypes[key])
        try:
            with warnings.catch_warnings():  # "assuming ... a single process": it is
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
                dcp.load(
                    dest,
                    storage_reader=FileSystemReader(self._reader_path),
                    planner=_slice_planner(slices),
                    no_dist=True,
                )
        except Exception as e:
            raise AtelierError(f"{self.it_dir}: corrupt or truncated checkpoint ({e})") from None
        return {
            name: dest[key][0] if _STACKED.match(key) else dest[key] for key, name in batch.items()
        }

    def _gather(self, pp: int, names: list[str]) -> dict[str, list[torch.Tensor]]:
        return {n: [t] for n, t in self._load(names).items()}

    def _rank_state(self, tp: int, pp: int) -> tuple[str, Mapping[str, torch.Tensor]]:
        raise NotImplementedError("TorchDistSource reads through _gather")
