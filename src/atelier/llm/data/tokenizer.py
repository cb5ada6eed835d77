"""Tokenizers by Megatron/MindSpeed `--tokenizer-type`, built once and shipped to workers.

The main process loads the tokenizer the way the user named it (a local Hugging
Face folder, GPT-2 vocab+merges, BERT vocab) and serialises the underlying Rust
tokenizer to JSON; workers rebuild it from that string. This keeps every
Hugging Face post-processor setting (BOS/EOS added by `tokenizer(text)`) while
workers never import `transformers` on the fast path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atelier.core.errors import AtelierError

TOKENIZER_TYPES = (
    "PretrainedFromHF",
    "GPT2BPETokenizer",
    "BertWordPieceLowerCase",
    "BertWordPieceCase",
)


@dataclass(frozen=True)
class TokenizerSpec:
    type: str = "PretrainedFromHF"
    name_or_path: str | None = None
    vocab_file: str | None = None
    merge_file: str | None = None
    use_fast: bool = True


@dataclass(frozen=True)
class LoadedTokenizer:
    """Everything a worker needs; cheap to pickle."""

    rust_json: str | None  # serialised `tokenizers.Tokenizer`, when a fast one exists
    slow_path: str | None  # folder for a slow (Python) Hugging Face tokenizer
    vocab_size: int  # including added tokens: decides uint16 vs int32
    eod: int | None
    bos: int | None
    eos: int | None
    pad: int | None
    # whether plain-text encoding adds the tokenizer's special tokens (as HF's
    # `tokenizer(text)` does for Megatron's PretrainedFromHF; GPT-2/BERT add none)
    pretrain_special: bool


def _need_dir(path: str | None, flag: str) -> Path:
    if not path:
        raise AtelierError(f"{flag} is required for this --tokenizer-type")
    p = Path(path)
    if not p.exists():
        raise AtelierError(f"{flag} {path}: no such folder; give a local tokenizer directory")
    return p


def _need_file(path: str | None, flag: str) -> Path:
    if not path:
        raise AtelierError(f"{flag} is required for this --tokenizer-type")
    p = Path(path)
    if not p.is_file():
        raise AtelierError(f"{flag} {path}: no such file")
    return p


def load_tokenizer(spec: TokenizerSpec) -> LoadedTokenizer:
    if spec.type not in TOKENIZER_TYPES:
        raise AtelierError(
            f"--tokenizer-type {spec.type}: unknown; use one of {', '.join(TOKENIZER_TYPES)}"
        )
    if spec.type == "PretrainedFromHF":
        return _load_hf(spec)
    if spec.type == "GPT2BPETokenizer":
        return _load_gpt2(spec)
    return _load_bert(spec, lowercase=spec.type == "BertWordPieceLowerCase")


def _load_hf(spec: TokenizerSpec) -> LoadedTokenizer:
    folder = _need_dir(spec.name_or_path, "--tokenizer-name-or-path")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            str(folder), use_fast=spec.use_fast, local_files_only=True
        )
    except (OSError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AtelierError(
            f"--tokenizer-name-or-path {folder}: cannot load tokenizer ({first})"
        ) from None
    rust = getattr(tok, "backend_tokenizer", None) if spec.use_fast else None
    eos = tok.eos_token_id
    return LoadedTokenizer(
        rust_json=rust.to_str() if rust is not None else None,
        slow_path=None if rust is not None else str(folder),
        vocab_size=len(tok),
        eod=eos,
        bos=tok.bos_token_id,
        eos=eos,
        pad=tok.pad_token_id,
        pretrain_special=True,
    )


def _load_gpt2(spec: TokenizerSpec) -> LoadedTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = _need_file(spec.vocab_file, "--vocab-file")
    merges = _need_file(spec.merge_file, "--merge-file")
    try:
        bpe = models.BPE.from_file(str(vocab), str(merges))
    except Exception as e:  # tokenizers raises plain Exception on bad files
        raise AtelierError(
            f"--vocab-file {vocab} / --merge-file {merges}: unreadable ({e})"
        ) from None
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    eod = tok.token_to_id("<|endoftext|>")
    return LoadedTokenizer(
        rust_json=tok.to_str(),
        slow_path=None,
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        eod=eod,
        bos=eod,
        eos=eod,
        pad=eod,
        pretrain_special=False,
    )


def _load_bert(spec: TokenizerSpec, lowercase: bool) -> LoadedTokenizer:
    from tokenizers import BertWordPieceTokenizer

    vocab = _need_file(spec.vocab_file, "--vocab-file")
    _check_wordpiece_vocab(vocab)
    try:
        tok = BertWordPieceTokenizer(str(vocab), lowercase=lowercase, strip_accents=lowercase)
    except Exception as e:  # tokenizers raises plain Exception / TypeError on bad vocabularies
        raise AtelierError(f"--vocab-file {vocab}: not a WordPiece vocab.txt ({e})") from None
    sep, cls, pad = (tok.token_to_id(t) for t in ("[SEP]", "[CLS]", "[PAD]"))
    return LoadedTokenizer(
        rust_json=tok._tokenizer.to_str(),
        slow_path=None,
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        eod=sep,
        bos=cls,
        eos=sep,
        pad=pad,
        pretrain_special=False,
    )


WORDPIECE_SPECIALS = ("[UNK]", "[CLS]", "[SEP]")


def _check_wordpiece_vocab(vocab: Path) -> None:
    """A BERT vocab.txt is UTF-8, one token per line, with [UNK], [CLS] and [SEP]."""
    try:
        tokens = set(vocab.read_text(encoding="utf-8").splitlines())
    except UnicodeDecodeError:
        raise AtelierError(
            f"--vocab-file {vocab}: not a WordPiece vocab.txt (not UTF-8 text); give BERT's "
            "vocab.txt, one token per line"
        ) from None
    missing = [t for t in WORDPIECE_SPECIALS if t not in tokens]
    if missing:
        raise AtelierError(
            f"--vocab-file {vocab}: not a WordPiece vocab.txt (no {', '.join(missing)} line); "
            "give BERT's vocab.txt, one token per line"
        )


class Backend:
    """Batch encode/decode in a worker; fast path through `tokenizers` directly."""

    def __init__(self, loaded: LoadedTokenizer) -> None:
        self.loaded = loaded
        self._rust: Any = None
        self._slow: Any = None
        if loaded.rust_json is not None:
            from tokenizers import Tokenizer

            self._rust = Tokenizer.from_str(loaded.rust_json)
        else:
            from transformers import AutoTokenizer

            self._slow = AutoTokenizer.from_pretrained(
                loaded.slow_path, use_fast=False, local_files_only=True
            )

    def encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        if self._rust is not None:
            encs = self._rust.encode_batch_fast(texts, add_special_tokens=add_special_tokens)
            return [e.ids for e in encs]
        return [self._slow.encode(t, add_special_tokens=add_special_tokens) for t in texts]

    def decode(self, ids: list[int]) -> str:
        if self._rust is not None:
            return self._rust.decode(ids, skip_special_tokens=False)
        return self._slow.decode(ids, skip_special_tokens=False)
