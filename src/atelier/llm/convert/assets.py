"""The non-weight files of a Hugging Face model folder: configs and tokenizer.

hf2mg copies them into `<save-dir>/hf_assets/` (Megatron never looks there) so
that mg2hf can produce a complete, loadable folder with nothing copied by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from atelier.core.errors import AtelierError

ASSETS_DIRNAME = "hf_assets"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".ckpt", ".gguf")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


def asset_files(folder: Path) -> list[Path]:
    """Files in `folder` that are not weights (configs, tokenizer, README, license)."""
    out = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.name.endswith(WEIGHT_SUFFIXES) or p.name in WEIGHT_INDEXES:
            continue
        out.append(p)
    return out


def copy_assets(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for p in asset_files(src):
        if p.name in skip:
            continue
        shutil.copy2(p, dst / p.name)
        copied.append(p.name)
    return copied


def copy_tokenizer(path: Path, dst: Path) -> list[str]:
    """--tokenizer-model: a tokenizer file, or a folder holding tokenizer files."""
    if not path.exists():
        raise AtelierError(f"tokenizer_model {path}: no such file or folder")
    dst.mkdir(parents=True, exist_ok=True)
    files = (
        [path] if path.is_file() else [path / n for n in TOKENIZER_FILES if (path / n).is_file()]
    )
    for f in files:
        shutil.copy2(f, dst / f.name)
    return [f.name for f in files]


def has_tokenizer(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def _sentencepiece_size(folder: Path) -> int | None:
    """Pieces in `tokenizer.model` plus `added_tokens.json` ids (Llama 2, Yi, Mistral v1)."""
    path = folder / "tokenizer.model"
    try:
        import sentencepiece
    except ImportError:
        return None
    try:
        size = sentencepiece.SentencePieceProcessor(model_file=str(path)).get_piece_size()
    except (OSError, RuntimeError) as e:
        raise AtelierError(f"{path}: not a readable sentencepiece model ({e})") from None
    added = folder / "added_tokens.json"
    if added.is_file():
        try:
            ids = json.loads(added.read_text("utf-8")).values()
        except (OSError, ValueError) as e:
            raise AtelierError(f"{added}: not readable JSON ({e})") from None
        size = max([size, *(i + 1 for i in ids)])
    return size


def tokenizer_size(folder: Path) -> int | None:
    """Highest token id + 1 of the tokenizer in `folder` (None when there is none to read).

    `tokenizer.json` is read as JSON (no tokenizer library needed); a lone
    `tokenizer.model` is read with sentencepiece when it is installed.
    """
    path = folder / "tokenizer.json"
    if not path.is_file():
        return _sentencepiece_size(folder) if (folder / "tokenizer.model").is_file() else None
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise AtelierError(f"{path}: not readable JSON ({e})") from None
    ids = list((data.get("model") or {}).get("vocab", {}).values() or [-1])
    if isinstance(ids[0], list):  # Unigram vocab: [[piece, score], ...]
        ids = [len(data["model"]["vocab"]) - 1]
    ids += [t["id"] for t in data.get("added_tokens", [])]
    return max(ids) + 1


def check_tokenizer_fits(folder: Path, vocab: int, what: str) -> None:
    """A tokenizer with ids beyond the embedding's rows cannot work with this model."""
    n = tokenizer_size(folder)
    name = "tokenizer.json" if (folder / "tokenizer.json").is_file() else "tokenizer.model"
    if n is not None and n > vocab:
        raise AtelierError(
            f"{folder / name} has {n} tokens but {what} has {vocab} rows; ids "
            f">= {vocab} would have no embedding. Pass true_vocab_size {n} if the "
            f"embedding really has {n} rows, or tokenizer_model with the model's own tokenizer"
        )
