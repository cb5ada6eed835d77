"""Faster encoders that must give exactly Hugging Face `tokenizers`' ids, or are not used.

`tokenizers` is the reference (`hf`): every Megatron/MindSpeed dataset is defined by its
ids. Faster backends are rows of `FAST_BACKENDS`. `fastokens` (Apache-2.0, a Rust
re-implementation of the `tokenizer.json` pipeline, used by vLLM) reads the same
`tokenizer.json` and encodes 30-100x faster on one core, with flat buffers instead of
per-token Python objects. Identity is checked, never assumed:

1. at load, `first_mismatch` encodes an adversarial suite (whitespace runs, emoji, CJK,
   combining marks, U+1DF6, control bytes, digits, code, every added token inside and
   between words) plus the input's first documents with both encoders, with and without
   special tokens; any difference keeps `hf` (one notice line);
2. during the run `SampledCheck` re-encodes one document in `every` with `hf`; a mismatch
   redoes that chunk with `hf` and keeps `hf` from then on;
3. `verify="all"` re-encodes every document (audits).

A backend sets its own thread pool to one thread: `--workers N` means N cores.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

VERIFY_MODES = ("sample", "all")
SAMPLE_EVERY = 256


class FlatEncoder(Protocol):
    """What every backend offers: the texts' ids back to back, and one length per text."""

    def encode_flat(
        self, texts: Sequence[str], add_special: bool
    ) -> tuple[np.ndarray, np.ndarray]: ...


class BackendRefused(Exception):
    """A backend cannot represent this tokenizer (the message says which component)."""


def single_threaded() -> None:
    """One encoder thread per process, so `--workers N` keeps N cores busy, not 2N.

    Read when each library starts its threads: rayon (tokenizers) its pool, fastokens its
    BPE helper. fastokens' default `FASTOKENS_BPE_THREADS` (0, automatic) adds a spinning
    helper thread per encoder: with 2 workers on 2 cores four threads fought for them, and
    the run was 25% slower than with one thread each (docs/benchmarks.md).
    """
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["FASTOKENS_BPE_THREADS"] = "1"


class HfEncoder:
    """The reference: Hugging Face `tokenizers` itself."""

    def __init__(self, rust_json: str) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(rust_json)

    def encode_flat(self, texts: Sequence[str], add_special: bool) -> tuple[np.ndarray, np.ndarray]:
        return encode_flat_hf(self.tok, texts, add_special)


class FastokensEncoder:
    """fastokens' `encode_batch_flat`: two flat buffers, no per-token Python objects.

    A JSON fastokens refuses for its `Metaspace` pre-tokenizer (SentencePiece BPE) is
    rewritten into steps it has (fastokens_pipeline.py); tokenizers it loads as they are
    stay as they are.
    """

    def __init__(self, rust_json: str) -> None:
        single_threaded()
        import fastokens

        from atelier.llm.data.fastokens_pipeline import Rewritten, rewrite_metaspace

        self.rewritten = Rewritten(rust_json)
        try:
            self.tok = fastokens.Tokenizer.from_json_str(rust_json)
            return
        except Exception as e:  # an unsupported pipeline component: fastokens refuses it
            refused = _first_line(e)
        try:
            self.rewritten = rewrite_metaspace(rust_json)
        except BackendRefused as e:
            raise BackendRefused(f"{refused}; {e}") from None
        try:
            self.tok = fastokens.Tokenizer.from_json_str(self.rewritten.rust_json)
        except Exception as e:
            raise BackendRefused(f"{refused}; its Metaspace rewrite: {_first_line(e)}") from None

    def encode_flat(self, texts: Sequence[str], add_special: bool) -> tuple[np.ndarray, np.ndarray]:
        texts = self.rewritten.prepare(texts)
        ids, offsets = self.tok.encode_batch_flat(texts, add_special_tokens=add_special)
        offs = np.frombuffer(offsets, dtype=np.uint64).astype(np.int64)
        return np.frombuffer(ids, dtype=np.uint32).astype(np.int64), np.diff(offs)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


@dataclass(frozen=True)
class FastBackend:
    """One faster encoder: how to tell it is installed, and how to build it from JSON."""

    module: str  # the import that must succeed
    build: Callable[[str], FlatEncoder]  # raises BackendRefused for a tokenizer it can't do
    install: str  # what to pip install


def _tiktoken(rust_json: str) -> FlatEncoder:
    from atelier.llm.data.tokenizer_tiktoken import TiktokenEncoder  # imports this module

    return TiktokenEncoder(rust_json)


# Faster backends, fastest first: `auto` takes the first that is installed, accepts the
# tokenizer and gives hf's ids on the load-time check.
FAST_BACKENDS: dict[str, FastBackend] = {
    "fastokens": FastBackend("fastokens", FastokensEncoder, "pip install fastokens"),
    "tiktoken": FastBackend("tiktoken", _tiktoken, "pip install tiktoken"),
}
BACKENDS = ("auto", "hf", *FAST_BACKENDS)


def available(name: str) -> bool:
    try:
        importlib.import_module(FAST_BACKENDS[name].module)
    except ImportError:
        return False
    return True


def build(name: str, rust_json: str) -> FlatEncoder:
    """The backend `name`'s encoder for this tokenizer (BackendRefused if it can't)."""
    return FAST_BACKENDS[name].build(rust_json)


def encode_flat_hf(
    tok: Any, texts: Sequence[str], add_special: bool
) -> tuple[np.ndarray, np.ndarray]:
    encs = tok.encode_batch_fast(list(texts), add_special_tokens=add_special)
    lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int64, count=int(lengths.sum()))
    return ids, lengths


def adversarial_texts(added_tokens: Sequence[str]) -> list[str]:
    """Strings where BPE re-implementations have been seen to differ."""
    base = [
        "",
        " ",
        "  ",
        "\n",
        "\n\n\n",
        "\t \t",
        " \n \n ",
        "hello world",
        "Hello   World  ",
        "   leading and trailing   ",
        "don't won't it's I'm we'll they've she'd",
        "DON'T WON'T IT'S",
        "12345678901234567890 3.14159 1,000,000 0x1F 1e-9",
        "日本語のテキストと中文混合 한국어 텍스트",
        "自然语言处理（NLP）是人工智能的一个分支。",
        "emoji 😀😃😄👩‍👩‍👧‍👦 🇨🇳🇺🇸 ❤️ 👍🏽",
        "combining é (e\u0301) n\u0303 a\u0308 \u1df6x \u0345",
        "ℌ𝔢𝔩𝔩𝔬 ｆｕｌｌｗｉｄｔｈ ﬁ ﬂ Ⅻ ① ㎏",
        "\u200b zero\u200bwidth \u200d joiner \ufeff bom",
        "control \x00 \x01 \x1f \x7f chars",
        "tabs\tand\r\nwindows\rnewlines",
        "def f(x):\n    return x ** 2  # comment\n\n\tif x: pass",
        "for (int i = 0; i < n; ++i) { a[i] = b[i] * 2; }",
        '{"key": [1, 2, 3], "nested": {"a": null}}',
        "https://example.com/path?query=1&b=2#frag user@example.org",
        "Ωμέγα Привет мир العربية עברית हिन्दी ไทย",
        "a" * 300,
        " " * 64 + "x",
        "!!!???...,,,;;;:::---___===+++",
        "<html><body><p>tag soup</p></body></html>",
        "\\n \\t \\\\ escaped",
        # SentencePiece (Metaspace): the replacement "▁" typed literally, leading spaces,
        # whitespace-only and line-start runs, characters only byte fallback can encode
        "\u2581",
        "\u2581\u2581x",
        "x\u2581y \u2581 z",
        " \u2581x",
        "\u2581 x",
        "x\n  y\n\u2581\u2581z",
        "\t",
        "\u3000x \u3000y",
        "\u00a0nbsp\u00a0",
        "rare 𠀀𪚥𫝀 ꙮ 🫨🪿 \U0010fffd \u2028 \ufffd",
    ]
    out = list(base)
    for tok in added_tokens[:64]:
        out += [tok, f"x{tok}y", f" {tok} ", f"{tok}{tok}", f"text {tok}\nmore {tok}text"]
        out += [f"{tok}x", f"{tok}  x", f"x{tok}\u2581y", f"{tok}\n", f"{tok} {tok}x"]
    return out


def first_mismatch(ref: FlatEncoder, fast: FlatEncoder, texts: Sequence[str]) -> str | None:
    """The first text whose ids differ between the two encoders (None when identical)."""
    for add_special in (False, True):
        a_ids, a_len = ref.encode_flat(texts, add_special)
        b_ids, b_len = fast.encode_flat(texts, add_special)
        if np.array_equal(a_len, b_len) and np.array_equal(a_ids, b_ids):
            continue
        a_off = np.concatenate([[0], np.cumsum(a_len)])
        b_off = np.concatenate([[0], np.cumsum(b_len)])
        for i, text in enumerate(texts):
            if not np.array_equal(a_ids[a_off[i] : a_off[i + 1]], b_ids[b_off[i] : b_off[i + 1]]):
                return f"{text[:40]!r} (add_special_tokens={add_special})"
    return None


class SampledCheck:
    """Which documents of a worker's stream are re-encoded with the reference."""

    def __init__(self, verify: str, every: int = SAMPLE_EVERY) -> None:
        self.every = 1 if verify == "all" else every
        self.seen = 0

    def pick(self, n: int) -> np.ndarray:
        """Indices among the next `n` documents to re-encode."""
        first = (-self.seen) % self.every
        picked = np.arange(first, n, self.every)
        self.seen += n
        return picked
