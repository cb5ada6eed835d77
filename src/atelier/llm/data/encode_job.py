"""The workers' job (`EncodeJob`) from a `PreprocessConfig`: handler, template, tokenizer.

Kept apart from the run (preprocess.py) because `--ray` builds the same job elsewhere, in a
child process of the driver (ray_run.py), and both must build it the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.data import sources
from atelier.llm.data.conversation import parse_map_keys
from atelier.llm.data.handler_kinds import SFT_KINDS, handler_kind
from atelier.llm.data.handlers import EncodeJob, iter_records
from atelier.llm.data.special_ids import reward_ids, template_eos
from atelier.llm.data.template_sources import fix_tokenizer, is_lf, resolve_template
from atelier.llm.data.template_tokens import fit_for_template
from atelier.llm.data.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from atelier.llm.data.preprocess import PreprocessConfig

log = get_logger(__name__)


def resolve_handler(cfg: PreprocessConfig, srcs: list[sources.SourceFile]) -> str:
    if cfg.handler_name != "auto":
        handler_kind(cfg.handler_name)
        return cfg.handler_name
    first = next(sources.iter_chunks(srcs[:1]), None)
    rec = next((r for _, r in iter_records(first, "text")), None) if first else None
    if isinstance(rec, dict) and ("conversations" in rec or "messages" in rec):
        return "SharegptStyleInstructionHandler"
    return "GeneralInstructionHandler"


def build_job(cfg: PreprocessConfig, srcs: list[sources.SourceFile]) -> EncodeJob:
    """The workers' job. Its backend is left to the encoders' load-time check (encode_pool.py,
    ray_shard.py), which build the encoders the check needs anyway."""
    handler = resolve_handler(cfg, srcs)
    kind = handler_kind(handler)
    template = None
    if kind not in ("pretrain", "process_reward"):
        name = cfg.prompt_type
        lf = cfg.template_source == "llamafactory"
        if name is None and handler == "GeneralInstructionHandler" and not lf:
            pass  # MindSpeed's own Alpaca prompter (general_prompt.py), no template
        elif name is None:
            from atelier.llm.data.templates import available

            raise AtelierError(
                f"{handler} needs --prompt-type (or PROMPT_TYPE); known: {', '.join(available())}"
            )
        else:
            template = resolve_template(
                cfg.template_source,
                name,
                cfg.prompt_type_path,
                train_on_prompt=cfg.train_on_prompt,
                mask_history=cfg.mask_history,
                tool_date=cfg.tool_date,
                default_system=cfg.default_system,
                enable_thinking=cfg.enable_thinking,
            )
            if is_lf(template) and cfg.append_eod:
                raise AtelierError(
                    "--append-eod: LLaMA-Factory's SFT preprocessing has no such step; "
                    "drop it with --template-source llamafactory"
                )
    if cfg.pack and kind not in SFT_KINDS:
        raise AtelierError(
            f"--pack is for instruction handlers, not {handler}; drop --pack"
            + (" (pretraining data is not packed)" if kind == "pretrain" else "")
        )
    loaded = load_tokenizer(cfg.tokenizer)
    if is_lf(template):  # LLaMA-Factory fixes the tokenizer (EOS, stop words) before encoding
        template, loaded = fix_tokenizer(template, loaded)
    elif template is not None:  # as MindSpeed's fix_model_tokenizer
        loaded, template = fit_for_template(loaded, template, cfg.strict, cfg.template_quirks)
    eod = None
    if kind in SFT_KINDS:  # LLaMA-Factory's fixed tokenizer already holds the template's EOS
        eod = loaded.eos if is_lf(template) else template_eos(loaded, template)
    if cfg.append_eod and kind in SFT_KINDS and eod is None:
        raise AtelierError("--append-eod: the tokenizer has no EOS/EOD token")
    if cfg.append_eod and kind not in SFT_KINDS and kind != "pretrain":
        log.warning("--append-eod: ignored for %s (MindSpeed appends no EOD there)", handler)
    marker, rewards = (
        reward_ids(loaded, cfg.placeholder_token, list(cfg.reward_tokens))
        if kind == "process_reward"
        else (None, {})
    )
    return EncodeJob(
        handler=handler,
        tokenizer=loaded,
        json_keys=tuple(cfg.json_keys),
        append_eod=cfg.append_eod,
        seq_length=cfg.seq_length,
        map_keys=parse_map_keys(cfg.map_keys),
        template=template,
        empty_documents=cfg.empty_documents and not cfg.pack,
        drop_long=not cfg.neat_pack,
        eod_id=eod,
        placeholder_id=marker,
        reward_ids=rewards,
    )


def input_sample(cfg: PreprocessConfig, srcs: list[sources.SourceFile]) -> list[str]:
    # the input's first records are read again only when a faster backend is to be checked
    return _first_texts(srcs) if cfg.tokenizer.backend != "hf" else []


def _first_texts(srcs: list[sources.SourceFile], limit: int = 256) -> list[str]:
    """Strings of the input's first records, for the load-time backend identity check."""
    first = next(sources.iter_chunks(srcs[:1]), None)
    if first is None:
        return []
    out: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    for _, rec in iter_records(first, "text"):
        collect(rec)
        if len(out) >= limit:
            break
    return out[:limit]


def output_prefixes(job: EncodeJob, prefix: str) -> dict[str, str]:
    if handler_kind(job.handler) == "pretrain":
        return {k: f"{prefix}_{k}_document" for k in job.json_keys}
    return {k: f"{prefix}_packed_{k}_document" for k in job.output_keys}
