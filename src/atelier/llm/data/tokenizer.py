"""Tokenizers by Megatron/MindSpeed `--tokenizer-type`, built once and shipped to workers.

The main process loads the tokenizer the way the user named it (a local Hugging
Face folder, GPT-2 vocab+merges, BERT vocab) and serialises the underlying Rust
tokenizer to JSON; workers rebuild it from that string. This keeps every
Hugging Face post-processor setting (BOS/EOS added by `tokenizer(text)`) while
workers never import `transformers` on the fast path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from atelier.core.errors import AtelierError
from atelier.llm.data import tokenizer_backends as backends
from atelier.llm.data import tokenizer_cache
from atelier.llm.data.tokenizer_backends import (
    BACKENDS,
    FAST_BACKENDS,
    VERIFY_MODES,
    BackendRefused,
    HfEncoder,
    SampledCheck,
    adversarial_texts,
    encode_flat_hf,
    first_mismatch,
)

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
    backend: str = "auto"  # auto | hf | a FAST_BACKENDS name (tokenizer_backends.py)
    verify: str = "sample"  # sample | all: documents re-encoded with hf during the run


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
    added_tokens: tuple[str, ...] = ()
    backend: str = "hf"  # the encoder workers use, decided by `choose_backend`
    verify: str = "sample"
    # special tokens a template added (template_tokens.py): a slow tokenizer re-adds them in
    # each worker (a fast one carries them in rust_json)
    extra_special: tuple[str, ...] = ()
    unk: int | None = None  # what `convert_tokens_to_ids` gives for a token it does not have


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
    check_spec(spec)
    if spec.type == "PretrainedFromHF":
        loaded = _load_hf(spec)
    elif spec.type == "GPT2BPETokenizer":
        loaded = _load_gpt2(spec)
    else:
        loaded = _load_bert(spec, lowercase=spec.type == "BertWordPieceLowerCase")
    return replace(loaded, verify=spec.verify)


def check_spec(spec: TokenizerSpec) -> None:
    """What a load refuses before it imports anything (flag values, missing paths): `--ray`
    asks this before it starts Ray, not seconds later."""
    if spec.type not in TOKENIZER_TYPES:
        raise AtelierError(
            f"--tokenizer-type {spec.type}: unknown; use one of {', '.join(TOKENIZER_TYPES)}"
        )
    if spec.backend not in BACKENDS:
        raise AtelierError(
            f"--tokenizer-backend {spec.backend}: unknown; use one of {', '.join(BACKENDS)}"
        )
    if spec.verify not in VERIFY_MODES:
        raise AtelierError(
            f"--verify-tokenizer {spec.verify}: unknown; use one of {', '.join(VERIFY_MODES)}"
        )
    if spec.type == "PretrainedFromHF":
        _need_dir(spec.name_or_path, "--tokenizer-name-or-path")
    else:
        _need_file(spec.vocab_file, "--vocab-file")
        if spec.type == "GPT2BPETokenizer":
            _need_file(spec.merge_file, "--merge-file")


def choose_backend(
    loaded: LoadedTokenizer, wanted: str, sample: Sequence[str]
) -> tuple[LoadedTokenizer, str | None]:
    """The fastest encoder proven identical to `hf` on the adversarial suite and `sample`.

    `wanted` is `auto` (every row of FAST_BACKENDS in order, fastest first), `hf`, or one
    backend's name. Returns the tokenizer set to the backend chosen and a one-line notice
    when a faster backend was asked for but not used (None when nothing needs saying).
    """
    chosen, notice, _ = pick_backend(loaded, wanted, sample)
    return chosen, notice


@dataclass(frozen=True)
class Built:
    """Encoders `pick_backend` built for its check, kept for `Backend` (a worker's)."""

    rust: Any  # the reference `tokenizers.Tokenizer`, or None when none was built
    fast: Any  # the chosen backend's encoder, or None


def pick_backend(
    loaded: LoadedTokenizer, wanted: str, sample: Sequence[str]
) -> tuple[LoadedTokenizer, str | None, Built | None]:
    """`choose_backend`, also handing back the encoders it built (start-up is ~2 s)."""
    if wanted == "hf":
        return replace(loaded, backend="hf"), None, None
    names = list(FAST_BACKENDS) if wanted == "auto" else [wanted]
    if loaded.rust_json is None:
        why = "the slow (Python) tokenizer has no tokenizer.json pipeline"
        note = None if wanted == "auto" else f"{why}; using hf"
        return replace(loaded, backend="hf"), note, None
    reasons: list[str] = []
    ref: HfEncoder | None = None
    texts = [*adversarial_texts(loaded.added_tokens), *sample]
    for name in names:
        if not backends.available(name):
            if wanted != "auto":  # auto says nothing about a backend nobody asked for
                reasons.append(f"{name} is not installed ({FAST_BACKENDS[name].install})")
            continue
        try:
            fast = backends.build(name, loaded.rust_json)
        except BackendRefused as e:
            reasons.append(f"{name} cannot load this tokenizer ({e})")
            continue
        ref = ref or HfEncoder(loaded.rust_json)
        diff = first_mismatch(ref, fast, texts)
        if diff is None:
            return replace(loaded, backend=name), None, Built(ref.tok, fast)
        reasons.append(f"{name} differs from hf on {diff}")
    note = f"{'; '.join(reasons)}; using hf" if reasons else None
    return replace(loaded, backend="hf"), note, Built(ref.tok if ref else None, None)


def _load_hf(spec: TokenizerSpec) -> LoadedTokenizer:
    """The folder as transformers loads it; read back from tokenizer_cache when its files
    are unchanged since an earlier run (skips transformers' ~2.5 s import)."""
    folder = _need_dir(spec.name_or_path, "--tokenizer-name-or-path")
    key = tokenizer_cache.folder_key(folder, spec.use_fast) if tokenizer_cache.enabled() else None
    if key is not None and (hit := tokenizer_cache.read(key, LoadedTokenizer)) is not None:
        return hit
    loaded = _load_hf_now(folder, spec)
    if key is not None:
        tokenizer_cache.write(key, loaded)
    return loaded


def _load_hf_now(folder: Path, spec: TokenizerSpec) -> LoadedTokenizer:
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
        added_tokens=tuple(str(t) for t in tok.get_added_vocab()),
        unk=tok.unk_token_id,
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


def load_slow(loaded: LoadedTokenizer) -> Any:
    """The slow (Python) Hugging Face tokenizer, with the special tokens a template added."""
    from transformers import AutoTokenizer

    slow = AutoTokenizer.from_pretrained(loaded.slow_path, use_fast=False, local_files_only=True)
    if loaded.extra_special:
        add_special_tokens(slow, loaded.extra_special)
    return slow


def add_special_tokens(slow: Any, tokens: Sequence[str]) -> None:
    """As MindSpeed's `add_special_tokens` (never normalized or split), transformers 4 or 5."""
    from tokenizers import AddedToken

    slow.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], True)


class Backend:
    """Batch encode/decode in a worker: fastokens when chosen, else `tokenizers` directly.

    With fastokens, a sample of documents (all, with verify="all") is re-encoded with the
    reference; a difference makes this call's whole batch come from the reference and the
    reference is kept from then on (`fell_back` says why).
    """

    def __init__(self, loaded: LoadedTokenizer, built: Built | None = None) -> None:
        self.loaded = loaded
        self._rust: Any = built.rust if built else None
        self._slow: Any = None
        self._fast: Any = built.fast if built and loaded.backend != "hf" else None
        self.fell_back: str | None = None
        self._check = SampledCheck(loaded.verify)
        if loaded.rust_json is not None:
            if self._rust is None:
                from tokenizers import Tokenizer

                self._rust = Tokenizer.from_str(loaded.rust_json)
            if loaded.backend != "hf" and self._fast is None:
                self._fast = backends.build(loaded.backend, loaded.rust_json)
        else:
            self._slow = load_slow(loaded)

    @property
    def name(self) -> str:
        return self.loaded.backend if self._fast is not None else "hf"

    def use_reference(self, why: str) -> None:
        if self._fast is not None:
            self._fast = None
            self.fell_back = why

    def encode_flat(self, texts: Sequence[str], add_special: bool) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, per-text lengths int64), the texts' ids back to back."""
        if self._fast is not None:
            ids, lens = self._fast.encode_flat(texts, add_special)
            picked = self._check.pick(len(texts))
            bad = self._first_difference(texts, add_special, ids, lens, picked)
            if bad is None:
                return ids, lens
            self.use_reference(f"{self.loaded.backend} differed from hf on {texts[bad][:40]!r}")
        if self._rust is not None:
            return encode_flat_hf(self._rust, texts, add_special)
        seqs = [self._slow.encode(t, add_special_tokens=add_special) for t in texts]
        lens = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        flat = np.fromiter((i for s in seqs for i in s), dtype=np.int64, count=int(lens.sum()))
        return flat, lens

    def _first_difference(
        self,
        texts: Sequence[str],
        add_special: bool,
        ids: np.ndarray,
        lens: np.ndarray,
        picked: np.ndarray,
    ) -> int | None:
        """Index of the first picked text whose fast ids differ from the reference's."""
        if not picked.size:
            return None
        ref_ids, ref_lens = encode_flat_hf(self._rust, [texts[i] for i in picked], add_special)
        starts = np.concatenate([[0], np.cumsum(lens)])
        ref_start = 0
        for i, n_ref in zip(picked.tolist(), ref_lens.tolist(), strict=True):
            got = ids[starts[i] : starts[i] + lens[i]]
            if lens[i] != n_ref or not np.array_equal(got, ref_ids[ref_start : ref_start + n_ref]):
                return i
            ref_start += n_ref
        return None

    def encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        ids, lens = self.encode_flat(texts, add_special_tokens)
        flat = ids.tolist()
        out: list[list[int]] = []
        pos = 0
        for n in lens.tolist():
            out.append(flat[pos : pos + n])
            pos += n
        return out

    def decode(self, ids: list[int]) -> str:
        if self._rust is not None:
            return self._rust.decode(ids, skip_special_tokens=False)
        return self._slow.decode(ids, skip_special_tokens=False)
