"""tiktoken encodes a `tokenizer.json` byte-level BPE, only where it provably gives hf's ids.

tiktoken's BPE repeatedly joins the adjacent pair whose concatenation has the lowest id,
while `tokenizers` joins the adjacent pair that is the earliest *merge*. They agree when
(checked once per tokenizer file, verdict cached by SHA-256 under
`$XDG_CACHE_HOME/atelier/tiktoken/`):

1. every merge makes a distinct vocabulary token and every non-byte token (added tokens
   aside) is made by exactly one merge: the pairs tiktoken can join are then exactly
   hf's merges, except pairs (p, q) whose concatenation t is made by another split;
2. ids increase with merge order and every merge's result has a larger id than its parts:
   tiktoken's id order is hf's merge order, and hf applies merges in increasing rank;
3. every token's bytes, encoded by hf's merges (ignore_merges off), give back that token.
   If tiktoken ever joined a non-merge pair (p, q) -> t from a state hf also reached,
   hf on t's bytes alone would stop at [p, q] (nothing joins them), contradicting 3.
   Condition 3 also makes tiktoken's (and `ignore_merges`') whole-piece vocabulary look-up
   give what the merges give, so `ignore_merges` true or false encodes the same.

Tokenizers converted *from* tiktoken (Llama-3, Qwen2) list every split of a token as a
merge (280k merges for 128k tokens): condition 1 fails and they are refused, because hf
then breaks ties between two splits of one token by the parts' ids and tiktoken by
position, which no per-file check here proves equal.

The pipeline must also be one tiktoken expresses: normalizer none or NFC (tokenizers' own
NFC, per segment between added tokens, as hf does), byte-level pre-tokenizer (GPT-2's
regex, or `Split(regex, Isolated)` + `ByteLevel(use_regex=false)`), no dropout / unk /
subword prefix / word suffix / byte fallback / truncation / padding, added tokens without
lstrip / rstrip / single_word and none a prefix of another (hf matches added tokens
leftmost-longest, tiktoken's special-token regex leftmost-first in hash order; tokens that
only contain another one are found at the same leftmost start by both), and a
post-processor that is none, ByteLevel or TemplateProcessing `[specials] $A [specials]`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from atelier.llm.data.tokenizer_backends import BackendRefused, single_threaded

CONDITIONS_VERSION = 1  # bump when a condition changes: cached verdicts are then recomputed

# tokenizers' ByteLevel(use_regex=True) pattern (GPT-2's)
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# Oniguruma escapes whose meaning differs in fancy-regex (or that it lacks)
_ONIG_ONLY = ("\\h", "\\H", "\\R", "\\X", "\\K", "\\G", "\\Z", "\\O", "\\y", "\\Y")


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "atelier" / "tiktoken"


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


def _merges(model: dict) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def added_ids_as_hf(rust_json: str, spec: dict) -> str | None:
    """The file's added-token ids are the ones hf gives them (tiktoken's specials use them)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(rust_json)
    for t in spec.get("added_tokens", []):
        got = tok.token_to_id(t["content"])
        if got != int(t["id"]):
            return f"added token {t['content']!r} has id {t['id']} in the file, hf gives {got}"
    return None


def encodable(spec: dict) -> dict[str, int]:
    """The vocab tokens hf's BPE can output: added tokens aside, and without `ignore_merges`
    only bytes and merge results (GPT-2's `<|endoftext|>` in a plain vocab.json is neither:
    leaving it out of tiktoken's ranks keeps tiktoken from making it either)."""
    model = spec["model"]
    added_ids = {int(t["id"]) for t in spec.get("added_tokens", [])}
    vocab = {tok: i for tok, i in model["vocab"].items() if i not in added_ids}
    if model.get("ignore_merges"):
        return vocab
    made = {a + b for a, b in _merges(model)}
    return {tok: i for tok, i in vocab.items() if len(tok) == 1 or tok in made}


def merge_conditions(spec: dict) -> str | None:
    """Why tiktoken's rank BPE may differ from hf's merges (None: proven equal)."""
    model = spec["model"]
    vocab: dict[str, int] = model["vocab"]
    added_ids = {int(t["id"]) for t in spec.get("added_tokens", [])}
    dec = byte_decoder()
    for tok, i in vocab.items():
        if i not in added_ids and any(c not in dec for c in tok):
            return f"vocab token {tok!r} is not byte-level"
    singles = {tok for tok, i in vocab.items() if len(tok) == 1 and i not in added_ids}
    if len(singles) != 256:
        return f"vocab has {len(singles)} of the 256 byte tokens"
    merges = _merges(model)
    real = encodable(spec)
    tokens = sum(1 for tok in real if len(tok) > 1)
    if len(merges) == tokens:  # trained by BPE: one merge per token
        why = _one_merge_per_token(real, merges)
        return why or _encode_back(vocab, merges, real)
    why = _every_split_a_merge(real, merges)  # converted from tiktoken
    if why is None and not model.get("ignore_merges"):
        why = _encode_back(vocab, merges, real)
    return why


def _one_merge_per_token(vocab: dict[str, int], merges: list[tuple[str, str]]) -> str | None:
    """Conditions 1-2 for a vocabulary where each non-byte token has exactly one merge."""
    made: dict[str, int] = {}
    last = -1
    for rank, (a, b) in enumerate(merges):
        t = a + b
        if a not in vocab or b not in vocab or t not in vocab:
            return f"merge {rank} ({a!r} {b!r}) joins or makes a token outside the vocab"
        if t in made:
            return (
                f"merges and tokens are not one-to-one: {t!r} is made by merges {made[t]} and "
                f"{rank} ({len(merges)} merges)"
            )
        made[t] = rank
        if vocab[t] <= last:
            return f"ids do not increase with merge order: merge {rank} makes id {vocab[t]}"
        last = vocab[t]
        for part in (a, b):
            if len(part) > 1 and vocab[part] >= vocab[t]:
                return f"merge {rank} makes id {vocab[t]} from a later token {part!r}"
    for tok, i in vocab.items():
        if len(tok) > 1 and tok not in made:
            return f"merges and tokens are not one-to-one: {tok!r} (id {i}) has no merge"
    return None


def _every_split_a_merge(vocab: dict[str, int], merges: list[tuple[str, str]]) -> str | None:
    """The conditions for a vocabulary converted from tiktoken (Llama-3, Qwen2).

    The merges must be every split (x, y) of every token with x and y in the vocab, in
    non-decreasing id of x+y: then the pairs both join are the same and the first key is the
    same; only ties differ (hf orders two splits of one token t by merge position, tiktoken
    by text position). Such a tie needs a token with several splits; it cannot change the
    result when every token that starts or ends with t has a larger id than t (joining a
    t-pair then creates no pair of id <= t, so every t-pair present is joined, and runs that
    share no token commute) and of two overlapping splits (s0, s1), (s1, s2) the left one is
    the earlier merge (in a run of overlapping t-pairs hf then also joins the leftmost).
    """
    splits: dict[str, list[tuple[str, str]]] = {}
    count = 0
    for t in vocab:
        for k in range(1, len(t)):
            if t[:k] in vocab and t[k:] in vocab:
                splits.setdefault(t, []).append((t[:k], t[k:]))
                count += 1
    if len(merges) != count or len(set(merges)) != count:
        return (
            f"merges are neither one per token nor every split of each token "
            f"({len(merges)} merges, {count} splits)"
        )
    last = -1
    for rank, (a, b) in enumerate(merges):
        t = a + b
        if (a, b) not in splits.get(t, ()):
            return f"merge {rank} ({a!r} {b!r}) is not a split of a vocab token"
        if vocab[t] < last:
            return f"ids do not increase with merge order: merge {rank} makes id {vocab[t]}"
        last = vocab[t]
    several = {t: sp for t, sp in splits.items() if len(sp) > 1}  # in vocab order: one reason
    position = {m: rank for rank, m in enumerate(merges)}
    for t, t_splits in several.items():
        for x, y in t_splits:
            right = (y, t[len(y) :])  # a split of t too when t starts with y
            if not t.startswith(y) or right == (x, y) or right not in position:
                continue
            if position[right] < position[(x, y)]:
                return (
                    f"token {t!r}: overlapping splits ({x!r} {y!r}), {right!r} are merged "
                    "right one first (tiktoken joins the left one)"
                )
    for u, i in vocab.items():
        for k in range(1, len(u)):
            for part in (u[:k], u[k:]):
                if part in several and vocab[part] > i:
                    return (
                        f"token {u!r} (id {i}) contains {part!r} (id {vocab[part]}, several "
                        "splits) at an end with a smaller id"
                    )
    return None


def _encode_back(
    vocab: dict[str, int], merges: list[tuple[str, str]], real: dict[str, int]
) -> str | None:
    """Condition 3: every token's bytes, by hf's merges alone, give back the token."""
    from tokenizers.models import BPE

    bpe = BPE(vocab=vocab, merges=merges)  # ignore_merges off: the merges alone
    for tok, i in real.items():
        if len(tok) > 1:
            got = [t.id for t in bpe.tokenize(tok)]
            if got != [i]:
                return f"token {tok!r} (id {i}) encodes to {got} by hf's merges, not itself"
    return None


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
