"""SentencePiece-BPE (`Metaspace`) tokenizers rewritten into a pipeline fastokens accepts.

fastokens 0.3.5 refuses the `Metaspace` pre-tokenizer that transformers writes when it
converts a SentencePiece `tokenizer.model` (Llama-2, Mistral, Yi ...). What `tokenizers`
does with it (tokenizers/src/pre_tokenizers/metaspace.rs), on each piece of text left
between added tokens (added tokens are cut out before normalizers and pre-tokenizers run):

1. replace every " " by the replacement ("▁");
2. prepend the replacement unless the piece already starts with it: `always` on every
   piece, `first` only on the piece at offset 0 of the original text, `never` not at all;
3. with `split`, cut the piece before each replacement (`MergedWithNext`).

The same ids come from steps fastokens has, applied to the same pieces:

- step 1 is the normalizer `Replace(" " -> "▁")`;
- `always` is `Prepend("▁")` before it and `Replace(regex ^▁▁ -> ▁)` after it: a piece
  that started with " " or "▁" gets its second "▁" taken back, so it is prepended only
  when it did not start with one (a piece is never empty: HF drops empty pieces and
  prepends nothing to an empty string);
- `first` cannot be a normalizer (a normalizer does not know a piece's offset), so it is a
  Python step in `encode_flat`: "▁" + text, unless the text is empty, starts with " "/"▁"
  or starts with an added token (then the piece at offset 0 is the token, not text);
- `split` is the pre-tokenizer `Split("▁", MergedWithNext)`.

Where the rewrite is not provably the same it refuses (BackendRefused, with the reason):
a normalizer before Metaspace, Metaspace inside a Sequence, added tokens that contain the
replacement or that the normalizer would see differently (normalized with " ", lstrip,
rstrip or single_word), and for `first` a single_word added token. The load-time and
sampled checks in tokenizer_backends.py still compare every chosen backend with `hf`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atelier.llm.data.tokenizer_backends import BackendRefused

SCHEMES = ("first", "always", "never")


@dataclass(frozen=True)
class Rewritten:
    """A tokenizer JSON fastokens loads, and the Python step its texts need first."""

    rust_json: str
    # `first`: the replacement to put before each text that starts with none of `keep`
    # (by first character: one dict look-up per text however many added tokens there are)
    prepend: str | None = None
    keep: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """The texts as fastokens must see them (HF's `first` prepend, done once per text)."""
        if self.prepend is None:
            return list(texts)
        rep, keep = self.prepend, self.keep
        return [rep + t if t and not t.startswith(keep.get(t[0], ())) else t for t in texts]


def _regex_char(c: str) -> str:
    return f"\\x{{{ord(c):X}}}"  # the same escape in PCRE2, Rust regex and Oniguruma


def _check_added(tokens: list[dict[str, Any]], rep: str, scheme: str) -> None:
    for t in tokens:
        content = t.get("content", "")
        if rep in content:
            raise BackendRefused(f"added token {content!r} contains the Metaspace replacement")
        if t.get("normalized") and (
            " " in content or t.get("lstrip") or t.get("rstrip") or t.get("single_word")
        ):
            raise BackendRefused(
                f"normalized added token {content!r} has a space, lstrip, rstrip or "
                "single_word: the rewrite's normalizer would change how it matches"
            )
        if scheme == "first" and t.get("single_word"):
            raise BackendRefused(
                f"single_word added token {content!r}: whether a text starts with it "
                "depends on the next character"
            )


def rewrite_metaspace(rust_json: str) -> Rewritten:
    """The fastokens form of a tokenizer whose pre-tokenizer is Metaspace (see the module)."""
    spec = json.loads(rust_json)
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") != "Metaspace":
        kinds = [p.get("type") for p in pre.get("pretokenizers", [])]
        if "Metaspace" in kinds:
            raise BackendRefused("Metaspace inside a pre-tokenizer Sequence is not rewritten")
        raise BackendRefused("no Metaspace pre-tokenizer to rewrite")
    rep = pre.get("replacement", "\u2581")
    scheme = pre.get("prepend_scheme")
    if len(rep) != 1 or rep == " ":
        raise BackendRefused(f"Metaspace replacement {rep!r} is not one character other than ' '")
    if scheme not in SCHEMES:
        raise BackendRefused(f"Metaspace prepend_scheme {scheme!r} is not one of {SCHEMES}")
    if spec.get("normalizer") is not None:
        raise BackendRefused(
            "a normalizer before Metaspace: the prepend test would see normalized text"
        )
    added = spec.get("added_tokens") or []
    _check_added(added, rep, scheme)
    steps: list[dict[str, Any]] = [{"type": "Replace", "pattern": {"String": " "}, "content": rep}]
    if scheme == "always":
        twice = _regex_char(rep) * 2
        steps = [
            {"type": "Prepend", "prepend": rep},
            *steps,
            {"type": "Replace", "pattern": {"Regex": f"^{twice}"}, "content": rep},
        ]
    spec["normalizer"] = {"type": "Sequence", "normalizers": steps}
    spec["pre_tokenizer"] = (
        {"type": "Split", "pattern": {"String": rep}, "behavior": "MergedWithNext", "invert": False}
        if pre.get("split")
        else None
    )
    if scheme != "first":
        return Rewritten(json.dumps(spec, ensure_ascii=False))
    keep: dict[str, tuple[str, ...]] = {" ": (" ",), rep: (rep,)}
    for content in {t["content"] for t in added if t.get("content")}:
        keep[content[0]] = (*keep.get(content[0], ()), content)
    return Rewritten(json.dumps(spec, ensure_ascii=False), prepend=rep, keep=keep)
