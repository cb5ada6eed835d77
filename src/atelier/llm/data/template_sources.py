"""Where `--prompt-type` names come from: MindSpeed-LLM's set (default) or LLaMA-Factory's.

`mindspeed` is `templates.py` (MindSpeed-LLM's templates, byte-identical to its
`preprocess_data.py`). `llamafactory` is `lf_templates.py`: LLaMA-Factory's current set,
byte-identical to its SFT preprocessing (`get_template_and_fix_tokenizer` +
`SupervisedDatasetProcessor`), including the tokenizer fix LLaMA-Factory applies before
encoding (EOS replaced by the template's first stop word, the other stop words made special
tokens, pad = EOS when there is none).
"""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.data.lf_templates import LFTemplate, get_lf_template, today
from atelier.llm.data.templates import get_template
from atelier.llm.data.tokenizer import LoadedTokenizer

log = get_logger(__name__)

SOURCES = ("mindspeed", "llamafactory")


def resolve_template(
    source: str,
    name: str,
    path: str | None = None,
    *,
    train_on_prompt: bool = False,
    mask_history: bool = False,
    tool_date: str | None = None,
    default_system: str | None = None,
    enable_thinking: bool = True,
) -> Any:
    """The template object for `name` in `source`; options LF-only are refused elsewhere."""
    if source not in SOURCES:
        raise AtelierError(f"--template-source {source}: unknown; use one of {', '.join(SOURCES)}")
    if source == "mindspeed":
        lf_only = (
            ("--train-on-prompt", train_on_prompt),
            ("--mask-history", mask_history),
            ("--default-system", default_system is not None),
            ("--enable-thinking false", not enable_thinking),
        )
        for flag, on in lf_only:
            if on:
                raise AtelierError(f"{flag} goes with --template-source llamafactory")
        return get_template(name, path)
    t = get_lf_template(name, path)
    if tool_date is not None:
        try:
            datetime.datetime.strptime(tool_date, "%d %b %Y")
        except ValueError:
            raise AtelierError(
                f"--tool-date {tool_date!r}: use LLaMA-Factory's form 'DD Mon YYYY', "
                "e.g. '26 Jul 2024'"
            ) from None
    if train_on_prompt and mask_history:  # LLaMA-Factory's DataArguments refuse it too
        raise AtelierError("--mask-history and --train-on-prompt exclude each other")
    if train_on_prompt and t.efficient_eos:
        raise AtelierError(
            f"--train-on-prompt: LLaMA-Factory's template {name} (efficient_eos) does not allow it"
        )
    return replace(
        t,
        train_on_prompt=train_on_prompt,
        mask_history=mask_history,
        tool_date=tool_date or today(),
        # LLaMA-Factory's data_args.default_system / enable_thinking (reasoning templates)
        default_system=t.default_system if default_system is None else default_system,
        enable_thinking=enable_thinking,
    )


def is_lf(template: Any) -> bool:
    return isinstance(template, LFTemplate)


def fix_tokenizer(t: LFTemplate, loaded: LoadedTokenizer) -> tuple[LFTemplate, LoadedTokenizer]:
    """LLaMA-Factory's `Template.fix_special_tokens`, on the serialised fast tokenizer.

    Tokens it adds that the vocabulary lacks get new ids past the vocabulary, as in
    LLaMA-Factory (which then asks for `resize_vocab`); a warning names them.
    """
    if loaded.rust_json is None:
        raise AtelierError(
            "--template-source llamafactory needs a fast tokenizer (tokenizer.json); "
            "drop --tokenizer-not-use-fast"
        )
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_str(loaded.rust_json)
    size = tok.get_vocab_size(with_added_tokens=True)
    added: list[str] = []
    specials = {str(a.content) for a in tok.get_added_tokens_decoder().values() if a.special}

    def special(token: str) -> int:
        if token not in specials:
            if tok.token_to_id(token) is None:
                added.append(token)
            tok.add_special_tokens([AddedToken(token, normalized=False, special=True)])
            specials.add(token)
        return tok.token_to_id(token)

    eos, pad = loaded.eos, loaded.pad
    stop = list(t.stop_words)
    if t.replace_eos:
        eos_token = stop.pop(0)
        if eos is None or tok.id_to_token(eos) != eos_token:
            eos = special(eos_token)
    if eos is None:
        eos = special("<|endoftext|>")
    if pad is None:
        pad = eos
    for word in stop:
        special(word)
    ids = []
    for name in t.tokens_needed():
        found = tok.token_to_id(name)
        if found is None:
            raise AtelierError(
                f"--prompt-type {t.name}: the tokenizer has no token {name!r}, which "
                "LLaMA-Factory's template looks up by id; use the model's own tokenizer"
            )
        ids.append((name, found))
    if added:
        log.warning(
            "LLaMA-Factory template %s added %s to the tokenizer as new ids %d..%d: the model's "
            "embeddings must be resized (LLaMA-Factory's resize_vocab)",
            t.name,
            ", ".join(added),
            size,
            tok.get_vocab_size(with_added_tokens=True) - 1,
        )
    fixed = replace(
        loaded,
        rust_json=tok.to_str(),
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        eos=eos,
        pad=pad,
        added_tokens=tuple(dict.fromkeys([*loaded.added_tokens, *added])),
    )
    return replace(t, token_ids=tuple(ids)), fixed
