"""A template meets a tokenizer: MindSpeed's `fix_model_tokenizer`, and what is missing.

MindSpeed-LLM changes the tokenizer for a template before preprocessing: with
`replace_eos` the first stop word becomes EOS (added as a new token when the
vocabulary lacks it), the other stop words are added as special tokens, a
tokenizer without EOS gets `<|endoftext|>`, one without PAD uses EOS. Atelier does
the same, so the ids (and the packing pad) are MindSpeed's.

What MindSpeed does silently is said here in one warning line: a special token
the template's text needs but the tokenizer lacks (tokenized as plain text, e.g.
`<|im_start|>` as 7 GPT-2 tokens), a stop word added as a new id (the model's
embedding must grow), a BOS the tokenizer has none of (dropped). `strict` makes
that line an error.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from atelier.core.errors import AtelierError
from atelier.llm.data.templates import Template
from atelier.llm.data.tokenizer import LoadedTokenizer, add_special_tokens, load_slow

# Literal text that is meant as one special token: <|im_start|>, <｜User｜>, <reserved_106>,
# <start_of_turn>, [gMASK], <sop>.
_SPECIAL_TEXT = re.compile(
    r"<\|[^|<>\s]+\|>|<｜[^｜<>]+｜>|<reserved_\d+>|<(?:start|end)_of_turn>|\[gMASK\]|<sop>"
)


class _Vocab:
    """The tokenizer being fitted: a `tokenizers.Tokenizer`, or a slow HF tokenizer."""

    def __init__(self, loaded: LoadedTokenizer) -> None:
        self.loaded = loaded
        self.rust: Any = None
        self.slow: Any = None
        if loaded.rust_json is not None:
            from tokenizers import Tokenizer

            self.rust = Tokenizer.from_str(loaded.rust_json)
        else:
            self.slow = load_slow(loaded)

    def id_of(self, token: str) -> int | None:
        """`convert_tokens_to_ids` without the unknown-token fallback."""
        if self.rust is not None:
            return self.rust.token_to_id(token)
        ids = self.slow.convert_tokens_to_ids(token)
        return None if ids == self.slow.unk_token_id and token != self.slow.unk_token else ids

    def unk(self) -> int | None:
        if self.loaded.unk is not None:
            return self.loaded.unk
        if self.rust is not None:
            name = getattr(self.rust.model, "unk_token", None)
            return self.rust.token_to_id(name) if name else None
        return self.slow.unk_token_id

    def single(self, text: str) -> bool:
        if self.rust is not None:
            return len(self.rust.encode(text, add_special_tokens=False).ids) == 1
        return len(self.slow.encode(text, add_special_tokens=False)) == 1

    def add_special(self, token: str) -> int:
        if self.rust is not None:
            from tokenizers import AddedToken

            self.rust.add_special_tokens([AddedToken(token, special=True, normalized=False)])
            return int(self.rust.token_to_id(token))
        add_special_tokens(self.slow, [token])
        return int(self.slow.convert_tokens_to_ids(token))

    def size(self) -> int:
        if self.rust is not None:
            return int(self.rust.get_vocab_size(with_added_tokens=True))
        return len(self.slow)


def _needed(t: Template) -> tuple[list[str], list[str], bool]:
    """(special tokens in the template's text, named `{token:...}` ids, uses BOS)."""
    text, named, bos = [], [], False
    for slots in t.all_slots():
        for e in slots:
            if isinstance(e, str):
                text += [m for m in _SPECIAL_TEXT.findall(e) if m not in text]
            elif e.kind == "token":
                named += [e.token] if e.token not in named else []
            elif e.kind == "bos":
                bos = True
    return text, named, bos


def fit_template(
    loaded: LoadedTokenizer, t: Template, strict: bool = False
) -> tuple[LoadedTokenizer, Template, str | None]:
    """The tokenizer as MindSpeed fixes it for `t`, `t` with its token ids, and a warning."""
    vocab = _Vocab(loaded)
    size_before = vocab.size()
    text, named, uses_bos = _needed(t)
    problems: list[str] = []
    added: list[str] = []
    # judged on the tokenizer as given, before the stop words are added to it
    lacking = [s for s in text if s not in t.stop_words and not vocab.single(s)]
    eos, pad = loaded.eos, loaded.pad
    stop_words = list(t.stop_words)

    def ensure(token: str) -> int:
        """MindSpeed's `add_special_tokens`: always, so the word is never split or merged."""
        tid = vocab.add_special(token)
        if tid >= size_before:
            problems.append(f"{token} (added as new id {tid}: resize the embedding)")
        added.append(token)
        return tid

    if t.replace_eos:
        eos = ensure(stop_words.pop(0))
    if eos is None:
        eos = ensure("<|endoftext|>")
    if pad is None:
        pad = eos
    for word in stop_words:
        ensure(word)
    # looked up after the stop words were added, as MindSpeed encodes after fixing
    token_ids: list[tuple[str, int]] = []
    for name in named:
        tid = vocab.id_of(name)
        if tid is None:
            unk = vocab.unk()
            if unk is None:
                raise AtelierError(
                    f"--prompt-type {t.name}: the tokenizer has no token {name!r} and no "
                    "unknown token to stand for it; use the model's own tokenizer"
                )
            problems.append(f"{name} (its id is the unknown token {unk})")
            tid = unk
        token_ids.append((name, tid))
    problems[:0] = [f"{s} (tokenized as plain text)" for s in lacking]
    if uses_bos and loaded.bos is None:
        problems.append("BOS (the tokenizer has none: left out)")
    notice = None
    if problems:
        notice = f"--prompt-type {t.name}: the tokenizer lacks {'; '.join(problems)}"
        if strict:
            raise AtelierError(f"{notice}; use the model's own tokenizer, or drop --strict")
    fitted = replace(
        loaded,
        eos=eos,
        eod=eos,
        pad=pad,
        vocab_size=vocab.size(),
        rust_json=vocab.rust.to_str() if vocab.rust is not None else None,
        extra_special=loaded.extra_special + tuple(added) if vocab.rust is None else (),
        added_tokens=loaded.added_tokens + tuple(a for a in added if a not in loaded.added_tokens),
    )
    return fitted, replace(t, token_ids=tuple(token_ids)), notice


QUIRKS = ("mindspeed", "fixed")


def fit_for_template(
    loaded: LoadedTokenizer, t: Template, strict: bool, quirks: str
) -> tuple[LoadedTokenizer, Template]:
    """`fit_template` plus `--template-quirks`, its warning logged (preprocess's one call)."""
    from atelier.core.log import get_logger

    if quirks not in QUIRKS:
        raise AtelierError(f"--template-quirks {quirks}: unknown; use one of {', '.join(QUIRKS)}")
    loaded, t, notice = fit_template(loaded, t, strict)
    if notice:
        get_logger(__name__).warning("%s", notice)
    return loaded, replace(t, fixed_quirks=quirks == "fixed")
