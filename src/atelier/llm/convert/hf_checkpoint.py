"""Hugging Face folders: a lazy reader over safetensors, and a sharded writer.

Reading opens each safetensors file with `safe_open` and pulls one tensor at a
time. Writing streams: shapes are known from the model's sizes, so shard headers are
written first and tensor bytes appended as they are produced.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.families import detect_family
from atelier.llm.convert.memory import release_freed_memory
from atelier.llm.convert.meta import ModelMeta, meta_from_hf_config
from atelier.llm.convert.overlap import BackgroundWriter

log = get_logger(__name__)
INDEX = "model.safetensors.index.json"


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise AtelierError(f"{path}: not found") from None
    except (OSError, ValueError) as e:
        raise AtelierError(f"{path}: not readable JSON ({e})") from None


class HFSource:
    """A Hugging Face causal-LM folder read one tensor at a time."""

    def __init__(self, folder: str | Path, true_vocab_size: int | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise AtelierError(f"load_dir {self.folder}: not a folder")
        self.assets_dir: Path | None = self.folder
        if (
            not (self.folder / "config.json").is_file()
            and (self.folder / "latest_checkpointed_iteration.txt").is_file()
        ):
            raise AtelierError(
                f"load_dir {self.folder} is a Megatron checkpoint, not a "
                "Hugging Face folder; use mg2hf or mg2mg"
            )
        config = read_json(self.folder / "config.json")
        fam = detect_family(config, str(self.folder / "config.json"))
        embed_name = fam.embed.hf[0]
        self._handles: dict[str, Any] = {}
        self._files = self._weight_map()
        embed_shape = self._shape(embed_name)
        self.meta: ModelMeta = meta_from_hf_config(
            config, str(self.folder / "config.json"), self._dtype(embed_name)
        )
        self.keys = self.meta.fam.hf_names()
        self._check_names()
        self._release()
        rows = embed_shape[0]
        if true_vocab_size is None:
            if rows != self.meta.vocab_size:
                raise AtelierError(
                    f"{self.folder}: {embed_name} has {rows} rows but config.json vocab_size "
                    f"is {self.meta.vocab_size}; pass true_vocab_size {rows} to keep every "
                    "row (or the number of rows the tokenizer uses)"
                )
        elif not 0 < true_vocab_size <= rows:
            raise AtelierError(
                f"true_vocab_size {true_vocab_size}: the embedding {embed_name} in "
                f"{self.folder} has {rows} rows; pass a size between 1 and {rows}"
            )
        else:
            self.meta.vocab_size = true_vocab_size
            self.meta.hf_config["vocab_size"] = true_vocab_size

    def _weight_map(self) -> dict[str, str]:
        index = self.folder / INDEX
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise AtelierError(f"{index}: has no 'weight_map'")
            return weight_map
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise AtelierError(
                f"load_dir {self.folder}: no *.safetensors weights (and no {INDEX}); save "
                "the model with save_pretrained(safe_serialization=True)"
            )
        out = {}
        for f in files:
            out.update(dict.fromkeys(self._open(f.name).keys(), f.name))
        return out

    def _check_names(self) -> None:
        """Fail before writing anything if a tensor is missing or would be dropped."""
        expected = {name for name, _ in hf_plan(self.meta)}
        present = set(self._files)
        missing = sorted(expected - present)
        if missing:
            raise AtelierError(
                f"{self.folder}: tensor {missing[0]!r} not found in the weights"
                + (f" ({len(missing)} missing)" if len(missing) > 1 else "")
            )
        ignorable = set(self.meta.fam.output.hf) if self.meta.tied else set()
        extra = sorted(
            n for n in present - expected - ignorable if not n.endswith("rotary_emb.inv_freq")
        )
        if extra:
            raise AtelierError(
                f"{self.folder}: {len(extra)} tensors have no place in the Megatron "
                f"{self.meta.family} layout (e.g. {extra[0]!r}); converting would lose them. "
                "Biases other than q/k/v (attention_bias on o_proj, mlp_bias) are not supported"
            )

    def _open(self, filename: str) -> Any:
        from safetensors import safe_open

        if filename not in self._handles:
            path = self.folder / filename
            try:
                self._handles[filename] = safe_open(str(path), framework="pt")
            except FileNotFoundError:
                raise AtelierError(f"{path}: listed in {INDEX} but missing") from None
            except Exception as e:  # SafetensorError is not importable as a class everywhere
                raise AtelierError(f"{path}: corrupt or truncated safetensors file ({e})") from None
        return self._handles[filename]

    def _handle(self, name: str) -> Any:
        if name not in self._files:
            raise AtelierError(f"{self.folder}: tensor {name!r} not found in the weights")
        return self._open(self._files[name])

    def _shape(self, name: str) -> list[int]:
        return list(self._handle(name).get_slice(name).get_shape())

    def _dtype(self, name: str) -> torch.dtype:
        return self._handle(name).get_slice(name)[0:1].dtype

    def get(self, name: str) -> torch.Tensor:
        try:
            # A view of the file mapping: callers hold it for one layer only, and the
            # mapping goes when the handle and the last such view are dropped.
            return self._handle(name).get_tensor(name)
        except AtelierError:
            raise
        except Exception as e:
            raise self._unreadable(name, e) from None

    def _unreadable(self, name: str, e: Exception) -> AtelierError:
        return AtelierError(
            f"{self.folder / self._files[name]}: cannot read {name!r} "
            f"({e}); the file is corrupt or truncated"
        )

    def _release(self) -> None:
        """Unmap the files: pages read through an open mapping would count as our RSS."""
        self._handles.clear()

    def embed(self) -> torch.Tensor:
        try:
            return self.get(self.meta.fam.embed.hf[0])[: self.meta.vocab_size]
        finally:
            self._release()

    def final_norm(self) -> torch.Tensor:
        try:
            return self.get(self.meta.fam.final_norm.hf[0])
        finally:
            self._release()

    def lm_head(self) -> torch.Tensor | None:
        if self.meta.tied:
            return None
        try:
            return self.get(self.meta.fam.output.hf[0])[: self.meta.vocab_size]
        finally:
            self._release()

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        out = {}
        try:
            for part in self.meta.fam.parts_for(self.meta):
                for piece, template in zip(part.pieces, part.hf, strict=True):
                    out[piece] = self.get(template.format(i=i))
        finally:
            self._release()
        return out

    def vocab_rows(self, which: str, start: int, stop: int) -> torch.Tensor:
        try:
            return self._slice(self.keys[which], (slice(start, min(stop, self.meta.vocab_size)),))
        finally:
            self._release()

    def _slice(self, name: str, index: tuple[slice, ...]) -> torch.Tensor:
        try:
            # clone: the slice may be a view of the file mapping, which would keep the
            # mapping (and every page read through it) in our RSS
            return (
                self._handle(name)
                .get_slice(name)[index]
                .clone(memory_format=torch.contiguous_format)
            )
        except AtelierError:
            raise
        except Exception as e:
            raise self._unreadable(name, e) from None

    def close(self) -> None:
        self._handles.clear()


def hf_tensors(source: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) of a model in save_pretrained order, one layer held at a time.

    Order and names come from the family table, as in `hf_plan`; tensors are cast to
    `source.meta.dtype` (a no-op for converted checkpoints).
    """
    meta = source.meta
    fam, dtype = meta.fam, meta.dtype

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t if t.dtype == dtype else t.to(dtype)

    yield fam.embed.hf[0], cast(source.embed())
    parts = fam.parts_for(meta)
    for i in range(meta.num_layers):
        layer = source.layer(i)
        for part in parts:
            for piece, template in zip(part.pieces, part.hf, strict=True):
                yield template.format(i=i), cast(layer[piece])
        del layer
        release_freed_memory()
    yield fam.final_norm.hf[0], cast(source.final_norm())
    head = source.lm_head()
    if head is not None:
        yield fam.output.hf[0], cast(head)


def hf_plan(meta: ModelMeta) -> list[tuple[str, list[int]]]:
    """(name, shape) of every tensor `hf_tensors` yields, known before reading any."""
    fam = meta.fam
    plan = [(fam.embed.hf[0], list(fam.embed.shape(meta)))]
    for i in range(meta.num_layers):
        for part in fam.parts_for(meta):
            for template, shape in zip(part.hf, part.piece_shapes(meta), strict=True):
                plan.append((template.format(i=i), list(shape)))
    plan.append((fam.final_norm.hf[0], list(fam.final_norm.shape(meta))))
    if not meta.tied:
        plan.append((fam.output.hf[0], list(fam.output.shape(meta))))
    return plan


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def write_safetensors_sharded(
    tensors: Iterator[tuple[str, torch.Tensor]],
    out: Path,
    plan: list[tuple[str, list[int]]],
    dtype: torch.dtype,
    max_shard_bytes: int,
) -> list[str]:
    """Stream tensors into `model-0000k-of-0000n.safetensors` files plus the index.

    Every shape is known up front (`plan`), so each shard's header is written first and
    tensor bytes follow as they arrive: memory holds one tensor, not one shard.
    """
    item = torch.empty((), dtype=dtype).element_size()
    shards: list[list[tuple[str, list[int], int]]] = [[]]
    size = 0
    for name, shape in plan:
        nbytes = item * int(torch.Size(shape).numel())
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape, nbytes))
        size += nbytes
    n = len(shards)
    weight_map: dict[str, str] = {}
    files = []
    stream = iter(tensors)
    for k, shard in enumerate(shards, start=1):
        final = f"model-{k:05d}-of-{n:05d}.safetensors"
        files.append(final)
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape, nbytes in shard:
            header[name] = {
                "dtype": SAFETENSORS_DTYPES[dtype],
                "shape": shape,
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
            weight_map[name] = final
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(out / final, "wb") as fh, BackgroundWriter() as writer:
            fh.write(len(raw).to_bytes(8, "little"))
            fh.write(raw)
            for name, shape, _ in shard:
                got_name, t = next(stream)
                if got_name != name or list(t.shape) != shape or t.dtype != dtype:
                    raise RuntimeError(
                        f"bug: expected {name} {shape} {dtype}, got {got_name} "
                        f"{list(t.shape)} {t.dtype}"
                    )
                writer.submit(fh.write, t.contiguous().view(torch.uint8).numpy().data)
    total = sum(nbytes for shard in shards for _, _, nbytes in shard)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n", "utf-8")
    return files
