"""Preference, PPO-prompt and process-reward data, written as MindSpeed-LLM writes it.

Same outputs as MindSpeed-LLM v2.0.0's `AlpacaStylePairwiseHandler`,
`SharegptStylePairwiseHandler` (DPO/reward-model data: `chosen_input_ids`,
`chosen_labels`, `rejected_input_ids`, `rejected_labels`), `PPOAlpacaStyleInstructionHandler`
(`input_ids`, `attention_mask` of the prompt only) and `AlpacaStyleProcessRewardHandler`
(`input_ids`, `labels`, `attention_mask`: the reward label's id at each step marker).
Conversations come from the same Alpaca/ShareGPT readers and templates as instruction
data, so a template renders alike in SFT and DPO data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from atelier.llm.data.conversation import Conversation, RecordError
from atelier.llm.data.render import message_ids, messages
from atelier.llm.data.render import texts as element_texts
from atelier.llm.data.sources import Chunk

if TYPE_CHECKING:
    from atelier.llm.data.handlers import ChunkResult, Encoder

_ANSWER = "__atelier_answer__"  # the column a chosen/rejected reply is read from
_MESSAGES = "__atelier_messages__"


def encode(enc: Encoder, chunk: Chunk) -> ChunkResult:
    from atelier.llm.data.handlers import ChunkResult, _where, iter_records, store_samples

    res = ChunkResult(chunk.index, {}, nbytes=chunk.nbytes)
    make = {
        "alpaca_pairwise": _pairwise,
        "sharegpt_pairwise": _pairwise,
        "alpaca_ppo": _ppo,
        "process_reward": _process_reward,
    }[enc.kind]
    jobs: list[tuple[Any, ...]] = []  # per record: what `make` needs once texts are encoded
    texts: list[str] = []
    for number, rec in iter_records(chunk, "text"):
        res.read += 1
        try:
            if isinstance(rec, RecordError):
                raise rec
            jobs.append((number, *make(enc, rec, texts)))
        except RecordError as e:
            res.errors.append(f"{_where(chunk, number)}: {e}")
            res.skipped["bad_record"] += 1
    encoded = iter(enc.backend.encode_batch(texts, False) if texts else [])
    samples: list[tuple[list[int], ...] | None] = []
    for number, finish, n_texts in jobs:
        try:
            sample = finish([next(encoded) for _ in range(n_texts)])
        except RecordError as e:
            res.errors.append(f"{_where(chunk, number)}: {e}")
            res.skipped["bad_record"] += 1
            continue
        samples.append(None if enc.job.too_long(max(map(len, sample))) else sample)
    store_samples(res, enc.job, samples)
    return res


# ------------------------------------------------------------------ rendering


def _render(enc: Encoder, conv: Conversation, texts: list[str]) -> tuple[list, int]:
    """The conversation's template messages; their texts are queued in `texts`."""
    msgs = messages(enc.job.template, conv)  # type: ignore[arg-type]
    queued = list(element_texts(msgs))
    texts.extend(queued)
    return msgs, len(queued)


def _ids(enc: Encoder, msgs: list, encoded: Iterator[list[int]]) -> list[list[int]]:
    """The ids of each message (MindSpeed's `Template._encode`)."""
    tok = enc.job.tokenizer
    return message_ids(enc.job.template, msgs, encoded, tok.bos, tok.eos)  # type: ignore[arg-type]


# ------------------------------------------------------------------ pairwise


def _pair_records(enc: Encoder, rec: Any) -> tuple[Conversation, Conversation]:
    """The chosen and the rejected conversation of one record (MindSpeed's alignment)."""
    if not isinstance(rec, dict):
        raise RecordError(f"expected a JSON object, got {type(rec).__name__}")
    keys = enc.job.map_keys
    chosen_key, rejected_key = keys.get("chosen", "chosen"), keys.get("rejected", "rejected")
    for key in (chosen_key, rejected_key):
        if key not in rec:
            present = ", ".join(sorted(map(str, rec))) or "none"
            raise RecordError(
                f"missing key {key!r} (keys present: {present}); pairwise data needs the "
                'chosen and rejected replies, map them with --map-keys \'{"chosen": "<column>"}\''
            )
    chosen, rejected = rec[chosen_key], rec[rejected_key]
    if enc.kind == "alpaca_pairwise":
        if isinstance(chosen, list):  # MindSpeed: a list column holds [chosen, rejected]
            if len(chosen) < 1 or not isinstance(rejected, list) or len(rejected) < 2:
                raise RecordError(f"{chosen_key!r}/{rejected_key!r}: lists need 2 replies")
            chosen, rejected = chosen[0], rejected[1]
        for key, value in ((chosen_key, chosen), (rejected_key, rejected)):
            if not isinstance(value, str):
                raise RecordError(f"{key!r} must be text, got {type(value).__name__}")
        mk = {**keys, "response": _ANSWER}
        return tuple(  # type: ignore[return-value]
            enc._conversation_with({**rec, _ANSWER: v}, mk) for v in (chosen, rejected)
        )
    for key, value in ((chosen_key, chosen), (rejected_key, rejected)):
        if not isinstance(value, dict):
            raise RecordError(f"{key!r} must be one message object (role and content)")
    messages_key = keys.get("messages") or next(
        (k for k in ("conversations", "messages") if k in rec), "conversations"
    )
    messages = rec.get(messages_key)
    if not isinstance(messages, list):
        raise RecordError(f"missing message list {messages_key!r}")
    mk = {**keys, "messages": _MESSAGES}
    return tuple(  # type: ignore[return-value]
        enc._conversation_with({**rec, _MESSAGES: [*messages, v]}, mk) for v in (chosen, rejected)
    )


def _pairwise(enc: Encoder, rec: Any, texts: list[str]) -> tuple[Any, int]:
    """MindSpeed's `encode_oneturn`: every message but the last is the prompt."""
    rendered = [_render(enc, c, texts) for c in _pair_records(enc, rec)]
    tok = enc.job.tokenizer
    t = enc.job.template
    assert t is not None

    def finish(encoded: list[list[int]]) -> tuple[list[int], ...]:
        it = iter(encoded)
        out: list[list[int]] = []
        prompt: list[int] = []
        for k, (msgs, _) in enumerate(rendered):
            per_message = _ids(enc, msgs, it)
            if k == 0:  # MindSpeed takes the prompt from the chosen conversation
                prompt = [i for ids in per_message[:-1] for i in ids]
            answer = list(per_message[-1])
            if t.efficient_eos:
                answer.append(tok.eos)  # type: ignore[arg-type]
            out += [prompt + answer, [-100] * len(prompt) + answer]
        return tuple(out)

    return finish, sum(n for _, n in rendered)


# ------------------------------------------------------------------ PPO prompts


def _ppo(enc: Encoder, rec: Any, texts: list[str]) -> tuple[Any, int]:
    """MindSpeed keeps each (prompt, reply) pair's prompt: the text to sample from."""
    msgs, n = _render(enc, enc._conversation(rec), texts)

    def finish(encoded: list[list[int]]) -> tuple[list[int], ...]:
        per_message = _ids(enc, msgs, iter(encoded))
        prompt = [i for ids in per_message[0::2] for i in ids]
        return prompt, [1] * len(prompt)

    return finish, n


# ------------------------------------------------------------------ process reward


def _process_reward(enc: Encoder, rec: Any, texts: list[str]) -> tuple[Any, int]:
    """`input` tokenized without special tokens; each step marker is labelled with the
    id of the matching `value` (one of --reward-tokens), everything else -100."""
    job = enc.job
    if not isinstance(rec, dict):
        raise RecordError(f"expected a JSON object, got {type(rec).__name__}")
    for key in ("input", "value"):
        if key not in rec:
            present = ", ".join(sorted(map(str, rec))) or "none"
            raise RecordError(f"missing key {key!r} (keys present: {present})")
    if not isinstance(rec["input"], str):
        raise RecordError("'input' must be text")
    values = rec["value"]
    if not isinstance(values, list):
        raise RecordError("'value' must be a list of reward labels (one per step)")
    label_ids = []
    for v in values:
        if v not in job.reward_ids:
            known = " ".join(job.reward_ids) or "none (pass --reward-tokens)"
            raise RecordError(f"'value' label {v!r} is not one of --reward-tokens: {known}")
        label_ids.append(job.reward_ids[v])
    texts.append(rec["input"])

    def finish(encoded: list[list[int]]) -> tuple[list[int], ...]:
        ids = encoded[0]
        labels = [-100] * len(ids)
        marks = [i for i, t in enumerate(ids) if t == job.placeholder_id]
        if len(marks) > len(label_ids):
            raise RecordError(
                f"{len(marks)} step markers (--placeholder-token) but {len(label_ids)} labels"
            )
        for i, label in zip(marks, label_ids, strict=False):
            labels[i] = label
        return ids, labels, [1] * len(ids)

    return finish, 1
