"""tiktoken encodes a `tokenizer.json` byte-level BPE, only where it provably gives hf's ids.

A custom `tiktoken.Encoding` is built from the vocab (byte-level characters -> bytes), the
added tokens (special tokens) and the pre-tokenizer's regex; the post-processor's BOS/EOS
are put around each text. It is used only when (1) its rank BPE provably equals hf's merges
(`tiktoken_merges.py`: checked once per tokenizer file, the verdict cached by SHA-256 under
`$XDG_CACHE_HOME/atelier/tiktoken/`) and (2) the pipeline is one tiktoken expresses:
normalizer none or NFC (tokenizers' own NFC, per segment between added tokens, as hf does),
byte-level pre-tokenizer (GPT-2's regex, or `Split(regex, Isolated)` +
`ByteLevel(use_regex=false)`, every code point matched: tiktoken drops unmatched text), no
dropout / unk / subword prefix / word suffix / byte fallback / truncation / padding, added
tokens without lstrip / rstrip / single_word and none a prefix of another (hf matches added
tokens leftmost-longest, tiktoken's special-token regex leftmost-first in hash order; tokens
that only contain another one are found at the same leftmost start by both), and a
post-processor that is none, ByteLevel or TemplateProcessing `[specials] $A [specials]`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atelier.core.paths import user_cache
from atelier.llm.data.tiktoken_merges import (
    added_ids_as_hf,
    byte_decoder,
    encodable,
    merge_conditions,
)
from atelier.llm.data.tokenizer_backends import BackendRefused, single_threaded

CONDITIONS_VERSION = 1  # bump when a condition changes: cached verdicts are then recomputed

# tokenizers' ByteLevel(use_regex=True) pattern (GPT-2's)
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# Oniguruma escapes whose meaning differs in fancy-regex (or that it lacks)
_ONIG_ONLY = ("\\h", "\\H", "\\R", "\\X", "\\K", "\\G", "\\Z", "\\O", "\\y", "\\Y")


def cache_dir() -> Path:
    return user_cache("tiktoken")


def _empty(v: Any) -> bool:
    return v is None or v == "" or v is False


def _pattern(pre: Any) -> str:
    """The tiktoken regex for hf's pre-tokenizer (BackendRefused when there is none)."""
    kind = pre.get("type") if pre else None
    if kind == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise BackendRefused("pre_tokenizer ByteLevel add_prefix_space=true")
        if not pre.get("use_regex", True):
            raise BackendRefused("pre_tokenizer ByteLevel use_regex=false without a Split")
        return GPT2_PATTERN
    if kind == "Sequence" and len(pre.get("pretokenizers", [])) == 2:
        split, level = pre["pretokenizers"]
        if (
            split.get("type") == "Split"
            and level.get("type") == "ByteLevel"
            and not level.get("use_regex", True)
            and not level.get("add_prefix_space")
        ):
            if split.get("behavior") != "Isolated" or split.get("invert"):
                raise BackendRefused(
                    f"pre_tokenizer Split behavior={split.get('behavior')} invert="
                    f"{split.get('invert')} (tiktoken keeps matches, Isolated)"
                )
            regex = split.get("pattern", {}).get("Regex")
            if regex is None:
                raise BackendRefused("pre_tokenizer Split with a String pattern")
            return onig_to_fancy(regex)
    raise BackendRefused(f"pre_tokenizer {kind} (not a byte-level BPE split tiktoken expresses)")


def onig_to_fancy(regex: str) -> str:
    """Oniguruma (tokenizers) regex -> fancy-regex (tiktoken); refuse what differs."""
    for esc in _ONIG_ONLY:
        if re.search(r"(?<!\\)(?:\\\\)*" + re.escape(esc), regex):
            raise BackendRefused(f"pre_tokenizer regex uses Oniguruma's {esc}")
    # Ruby/Oniguruma's (?m) is dot-matches-newline, fancy-regex's (?s)
    return re.sub(r"\(\?([a-z]*)m", lambda m: f"(?{m.group(1)}s", regex)


def _affixes(post: Any) -> tuple[list[int], list[int]]:
    """Ids hf's post-processor puts before and after a single text (add_special=True)."""
    if post is None:
        return [], []
    procs = post.get("processors", []) if post.get("type") == "Sequence" else [post]
    before: list[int] = []
    after: list[int] = []
    for proc in procs:
        if proc.get("type") == "ByteLevel":
            continue  # only moves offsets
        if proc.get("type") != "TemplateProcessing" or before or after:
            raise BackendRefused(f"post_processor {proc.get('type')}")
        seen_a = False
        for item in proc["single"]:
            if "Sequence" in item:
                if item["Sequence"]["id"] != "A" or seen_a:
                    raise BackendRefused(
                        "post_processor TemplateProcessing single is not [..] $A [..]"
                    )
                seen_a = True
            else:
                ids = proc["special_tokens"][item["SpecialToken"]["id"]]["ids"]
                (after if seen_a else before).extend(int(i) for i in ids)
        if not seen_a:
            raise BackendRefused("post_processor TemplateProcessing single has no $A")
    return before, after


def _overlap(a: str, b: str) -> bool:
    """Whether some text can hold a and b sharing characters (one inside or across the other)."""
    if a in b or b in a:
        return True
    n = min(len(a), len(b))
    return any(a.endswith(b[:k]) or b.endswith(a[:k]) for k in range(1, n + 1))


def _check_added(added: list[dict], nfc: bool) -> None:
    for tok in added:
        for flag in ("lstrip", "rstrip", "single_word"):
            if tok.get(flag):
                raise BackendRefused(f"added token {tok['content']!r} has {flag}=true")
        if tok.get("normalized") and nfc:
            raise BackendRefused(
                f"added token {tok['content']!r} is normalized (matched after NFC)"
            )
    groups: dict[bool, list[str]] = {}
    for tok in added:
        groups.setdefault(bool(tok.get("normalized")), []).append(tok["content"])
    for contents in groups.values():
        ordered = sorted(contents)  # a prefix sorts right before the tokens it starts
        for a, b in itertools.pairwise(ordered):
            if b.startswith(a):
                raise BackendRefused(f"added token {a!r} is a prefix of {b!r}")
    if len(groups) == 2:  # hf matches non-normalized tokens first, then normalized ones
        for a in groups[True]:
            for b in groups[False]:
                if _overlap(a, b):
                    raise BackendRefused(f"added tokens {a!r} and {b!r} overlap")


def _structure(spec: dict) -> tuple[str, bool, list[int], list[int]]:
    """(regex, nfc, bos ids, eos ids), or BackendRefused naming the component."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise BackendRefused(f"model {model.get('type')} (tiktoken is BPE)")
    for field in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
        if not _empty(model.get(field)):
            raise BackendRefused(f"model {field}={model.get(field)!r}")
    if model.get("byte_fallback"):
        raise BackendRefused("model byte_fallback=true")
    for field in ("truncation", "padding"):
        if spec.get(field):
            raise BackendRefused(f"{field} is set")
    norm = spec.get("normalizer")
    if norm is not None and norm.get("type") != "NFC":
        raise BackendRefused(f"normalizer {norm.get('type')} (tiktoken: none or NFC)")
    nfc = norm is not None
    pattern = _pattern(spec.get("pre_tokenizer"))
    _check_added(spec.get("added_tokens", []), nfc)
    before, after = _affixes(spec.get("post_processor"))
    return pattern, nfc, before, after


def _cache_key(rust_json: str) -> str:
    import tokenizers

    h = hashlib.sha256(rust_json.encode("utf-8"))
    h.update(f"|conditions {CONDITIONS_VERSION}|tokenizers {tokenizers.__version__}".encode())
    return h.hexdigest()


def _cache_path(rust_json: str) -> Path:
    return cache_dir() / f"{_cache_key(rust_json)}.json"


def read_verdict(rust_json: str) -> tuple[bool, str | None]:
    """(found, why refused) of an earlier check of this exact tokenizer file."""
    try:
        return True, json.loads(_cache_path(rust_json).read_text("utf-8"))["refused"]
    except (OSError, ValueError, KeyError, TypeError):
        return False, None


def write_verdict(rust_json: str, verdict: str | None) -> None:
    try:
        from atelier.core.atomic import write_text_atomic

        write_text_atomic(_cache_path(rust_json), json.dumps({"refused": verdict}) + "\n")
    except OSError:
        pass  # a read-only or full cache only costs the check next time


class TiktokenEncoder:
    """A custom `tiktoken.Encoding` built from the vocab and merges of a tokenizer.json."""

    def __init__(self, rust_json: str) -> None:
        single_threaded()
        import tiktoken

        found, why = read_verdict(rust_json)
        if why is not None:
            raise BackendRefused(why)
        spec = json.loads(rust_json)
        pattern, self.nfc, self.before, self.after = _structure(spec)
        added = {t["content"]: int(t["id"]) for t in spec.get("added_tokens", [])}
        dec = byte_decoder()
        ranks = {bytes(dec[c] for c in tok): i for tok, i in encodable(spec).items()}
        try:
            self.enc = tiktoken.Encoding(
                "atelier", pat_str=pattern, mergeable_ranks=ranks, special_tokens=added
            )
        except ValueError as e:
            raise BackendRefused(f"tiktoken rejects the pre_tokenizer regex ({e})") from None
        self._core = self.enc._core_bpe
        self._special = frozenset(added)
        self.added = added
        # hf matches added tokens leftmost-longest: longest first in a leftmost-first regex
        alts = sorted(added, key=len, reverse=True)
        self._split = re.compile("|".join(map(re.escape, alts))) if alts else None
        if self.nfc:
            from tokenizers.normalizers import NFC

            self._normalize = NFC().normalize_str
        if not found:  # checked once per tokenizer file
            why = added_ids_as_hf(rust_json, spec) or merge_conditions(spec) or self._uncovered()
            write_verdict(rust_json, why)
            if why is not None:
                raise BackendRefused(why)

    def _uncovered(self) -> str | None:
        """tiktoken drops text its regex does not match (hf keeps it): all must match."""
        # every code point of the first planes, then a spread over the rest
        codes = [*range(0x3000), *range(0x3000, 0xD800, 7), *range(0xE000, 0x110000, 61)]
        points = [chr(c) for c in codes]
        for sep in (" ", "\n"):
            probe = sep.join(points)
            got = self._core.decode_bytes(self._core.encode_ordinary(probe))
            if got != probe.encode("utf-8"):
                return "pre_tokenizer regex leaves some characters unmatched"
        return None

    def _encode_one(self, text: str) -> np.ndarray:
        if not self.nfc:
            buf = self._core.encode_to_tiktoken_buffer(text, self._special)
            return np.frombuffer(buf, dtype=np.uint32)
        parts: list[int] = []
        pos = 0
        for m in self._split.finditer(text) if self._split else ():
            parts += self._core.encode_ordinary(self._normalize(text[pos : m.start()]))
            parts.append(self.added[m.group()])
            pos = m.end()
        parts += self._core.encode_ordinary(self._normalize(text[pos:]))
        return np.asarray(parts, dtype=np.uint32)

    def encode_flat(self, texts: Sequence[str], add_special: bool) -> tuple[np.ndarray, np.ndarray]:
        arrays = [self._encode_one(t) for t in texts]
        lens = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
        if add_special and (self.before or self.after):
            pre = np.asarray(self.before, dtype=np.uint32)
            post = np.asarray(self.after, dtype=np.uint32)
            arrays = [x for a in arrays for x in (pre, a, post)]
            lens += len(pre) + len(post)
        ids = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)
        return ids, lens
