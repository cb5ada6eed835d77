"""Special ids MindSpeed-LLM derives: a template's EOS (EOD, pad), PRM step/label ids.

MindSpeed's `fix_model_tokenizer` (mindspeed_llm/tasks/preprocess/templates.py) makes a
template's first stop word the tokenizer's EOS when the template has `replace_eos`; its
`--append-eod` then appends that id and `--pack` pads with the tokenizer's pad, or that
EOS where the tokenizer has no pad. A Qwen base tokenizer (EOS `<|endoftext|>`) with
`--prompt-type qwen` thus ends samples with `<|im_end|>`.
"""

from __future__ import annotations

from atelier.core.errors import AtelierError
from atelier.llm.data.templates import Template
from atelier.llm.data.tokenizer import Backend, LoadedTokenizer

# MindSpeed-LLM v2.0.0 configs/finetune/templates.json: the templates with
# "replace_eos": true and their first stop word. A template that carries its own
# `replace_eos`/`stop_words` fields (a --prompt-type-path file) takes precedence.
REPLACED_EOS = {
    "chatml": "<|im_end|>",
    "chatml_de": "<|im_end|>",
    "qwen": "<|im_end|>",
    "qwen_r1": "<|im_end|>",
    "qwen_math_r1": "<|im_end|>",
    "llama3": "<|eot_id|>",
}


def replaced_eos_token(template: Template) -> str | None:
    """The token that replaces the tokenizer's EOS under `template`, if any."""
    stop_words = getattr(template, "stop_words", None)
    if getattr(template, "replace_eos", False) and stop_words:
        return str(stop_words[0])
    return REPLACED_EOS.get(template.name)


def token_id(tok: LoadedTokenizer, token: str, what: str) -> int:
    """The one id `token` encodes to (MindSpeed's `convert_token_to_id`), or an error."""
    ids = Backend(tok).encode_batch([token], False)[0]
    if len(ids) != 1:
        raise AtelierError(
            f"{what} {token!r}: the tokenizer encodes it as {len(ids)} tokens, not one; "
            "use a tokenizer that has it as a single (special) token"
        )
    return int(ids[0])


def template_eos(tok: LoadedTokenizer, template: Template | None) -> int | None:
    """MindSpeed's EOS id for instruction data under `template`."""
    if template is not None and (token := replaced_eos_token(template)) is not None:
        return token_id(tok, token, f"--prompt-type {template.name} ends samples with")
    return tok.eos if tok.eos is not None else tok.eod


def template_pad(tok: LoadedTokenizer, eos: int | None) -> int:
    """The pad id of packed rows: the tokenizer's pad, else the (template's) EOS."""
    for candidate in (tok.pad, eos):
        if candidate is not None:
            return candidate
    raise AtelierError("--pack: the tokenizer has neither a pad nor an EOS token to pad rows with")


def reward_ids(
    tok: LoadedTokenizer, placeholder: str, rewards: list[str]
) -> tuple[int, dict[str, int]]:
    """Process-reward data: the step marker's id and each reward label's id."""
    marker = token_id(tok, placeholder, "--placeholder-token")
    return marker, {r: token_id(tok, r, "--reward-tokens") for r in rewards}
