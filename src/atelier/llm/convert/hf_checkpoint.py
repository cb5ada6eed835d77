"""Hugging Face folders: a lazy reader over safetensors, and a sharded writer.

Reading opens each safetensors file with `safe_open` and pulls one tensor at a
time. Writing fills a shard up to `max_shard_bytes`, writes it, and only at the
end renames shards to `model-0000x-of-0000y.safetensors` (the total is not known
before) and writes `model.safetensors.index.json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.meta import ModelMeta, meta_from_hf_config

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
            raise AtelierError(f"--load-dir {self.folder}: not a folder")
        self.assets_dir: Path | None = self.folder
        config = read_json(self.folder / "config.json")
        self._handles: dict[str, Any] = {}
        self._files = self._weight_map()
        embed_name = "model.embed_tokens.weight"
        embed_shape = self._shape(embed_name)
        self.meta: ModelMeta = meta_from_hf_config(
            config, str(self.folder / "config.json"), self._dtype(embed_name))
        self.keys = self.meta.fam.keys
        rows = embed_shape[0]
        if true_vocab_size is None:
            if rows != self.meta.vocab_size:
                raise AtelierError(
                    f"{self.folder}: {embed_name} has {rows} rows but config.json vocab_size "
                    f"is {self.meta.vocab_size}; pass --true-vocab-size {rows} to keep every "
                    "row (or the number of rows the tokenizer uses)"
                )
        elif not 0 < true_vocab_size <= rows:
            raise AtelierError(
                f"--true-vocab-size {true_vocab_size}: the embedding {embed_name} in "
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
                f"--load-dir {self.folder}: no *.safetensors weights (and no {INDEX}); save "
                "the model with save_pretrained(safe_serialization=True)"
            )
        out = {}
        for f in files:
            out.update(dict.fromkeys(self._open(f.name).keys(), f.name))
        return out

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
            return self._handle(name).get_tensor(name)
        except AtelierError:
            raise
        except Exception as e:
            raise AtelierError(f"{self.folder / self._files[name]}: cannot read {name!r} "
                               f"({e}); the file is corrupt or truncated") from None

    def has(self, name: str) -> bool:
        return name in self._files

    def embed(self) -> torch.Tensor:
        return self.get(self.keys["embed"])[: self.meta.vocab_size]

    def final_norm(self) -> torch.Tensor:
        return self.get(self.keys["final_norm"])

    def lm_head(self) -> torch.Tensor | None:
        if self.meta.tied:
            return None
        return self.get(self.keys["lm_head"])[: self.meta.vocab_size]

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        out = {}
        for part, template in self.keys.items():
            if "{i}" not in template:
                continue
            if part.endswith("_bias") and not self.meta.qkv_bias:
                continue
            out[part] = self.get(template.format(i=i))
        return out

    def close(self) -> None:
        self._handles.clear()


def hf_tensors(source: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) of a model in save_pretrained order, one layer held at a time."""
    keys = source.meta.fam.keys
    yield keys["embed"], source.embed()
    for i in range(source.meta.num_layers):
        for part, t in source.layer(i).items():
            yield keys[part].format(i=i), t
    yield keys["final_norm"], source.final_norm()
    head = source.lm_head()
    if head is not None:
        yield keys["lm_head"], head


def write_safetensors_sharded(tensors: Iterator[tuple[str, torch.Tensor]], out: Path,
                              max_shard_bytes: int) -> list[str]:
    """Write shards as tensors arrive; returns the final shard names."""
    from safetensors.torch import save_file

    buffer: dict[str, torch.Tensor] = {}
    size = 0
    temps: list[tuple[Path, list[str]]] = []
    total = 0

    def flush() -> None:
        nonlocal buffer, size
        tmp = out / f".shard-{len(temps):05d}.safetensors"
        save_file(buffer, str(tmp), metadata={"format": "pt"})
        temps.append((tmp, list(buffer)))
        buffer, size = {}, 0

    for name, t in tensors:
        nbytes = t.numel() * t.element_size()
        if buffer and size + nbytes > max_shard_bytes:
            flush()
        buffer[name] = t.clone(memory_format=torch.contiguous_format)
        size += nbytes
        total += nbytes
    if buffer:
        flush()
    n = len(temps)
    weight_map: dict[str, str] = {}
    names = []
    for k, (tmp, keys) in enumerate(temps, start=1):
        final = f"model-{k:05d}-of-{n:05d}.safetensors"
        tmp.rename(out / final)
        names.append(final)
        weight_map.update(dict.fromkeys(keys, final))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n", "utf-8")
    return names
