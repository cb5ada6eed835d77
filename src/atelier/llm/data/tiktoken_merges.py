"""When tiktoken's rank BPE provably gives hf's merges' ids, for one tokenizer file.

tiktoken repeatedly joins the adjacent pair whose concatenation has the lowest id;
`tokenizers` joins the adjacent pair that is the earliest *merge*. Two vocabulary forms are
proven here (docs/llm.md lists the conditions):

- trained by BPE (GPT-2, `BpeTrainer`): (1) one merge per non-byte token, (2) ids increase
  with merge order and each merge's result has a larger id than its parts, (3) every
  token's bytes, by hf's merges alone, give back the token. If tiktoken ever joined a
  non-merge pair (p, q) -> t from a state hf also reached, hf on t's bytes alone would stop
  at [p, q], contradicting 3; 3 also makes the whole-piece vocabulary look-up (tiktoken's,
  and hf's `ignore_merges`) give what the merges give.
- converted from tiktoken (Llama-3, Qwen2): every split a merge, ties provably harmless
  (`_every_split_a_merge`).
"""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.models import BPE


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


def _merges(model: dict) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def added_ids_as_hf(rust_json: str, spec: dict) -> str | None:
    """The file's added-token ids are the ones hf gives them (tiktoken's specials use them)."""
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
    bpe = BPE(vocab=vocab, merges=merges)  # ignore_merges off: the merges alone
    for tok, i in real.items():
        if len(tok) > 1:
            got = [t.id for t in bpe.tokenize(tok)]
            if got != [i]:
                return f"token {tok!r} (id {i}) encodes to {got} by hf's merges, not itself"
    return None
