"""Search for a vocabulary converted from tiktoken where hf and tiktoken give different ids.

Converted vocabularies (Llama-3, Qwen2: every split of a token is a merge, ordered by the
result's id, then the parts' ids) differ from tiktoken only in how ties between two splits
of one token are broken. Atelier refuses them unless a sufficient condition holds
(docs/llm.md); this script looks for a counterexample showing the refusal is needed:
random vocabularies over a small alphabet, every string up to a length, both encoders.
None found so far (docs/llm.md gives the runs).

    python bench/tiktoken_ties.py --alphabet ab --vocabs 3000 --max-len 8
    python bench/tiktoken_ties.py --alphabet abc --vocabs 1500 --max-len 6 --max-tokens 10
"""

from __future__ import annotations

import argparse
import itertools
import random

import tiktoken
from tokenizers import Tokenizer, models, pre_tokenizers

from atelier.llm.data.tokenizer_tiktoken import GPT2_PATTERN, byte_decoder


def converted(extra: list[str]) -> tuple[Tokenizer, tiktoken.Encoding]:
    """hf and tiktoken for the 256 bytes + `extra` (ids in that order), merges as converted."""
    dec = byte_decoder()
    vocab = {c: i for i, c in enumerate(sorted(dec, key=dec.get))}
    vocab |= {t: 256 + k for k, t in enumerate(extra)}
    splits = [(t[:k], t[k:]) for t in vocab for k in range(1, len(t))]
    splits = [m for m in splits if m[0] in vocab and m[1] in vocab]
    splits.sort(key=lambda m: (vocab[m[0] + m[1]], vocab[m[0]], vocab[m[1]]))
    hf = Tokenizer(models.BPE(vocab=vocab, merges=splits, ignore_merges=True))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ranks = {bytes(dec[c] for c in t): i for t, i in vocab.items()}
    enc = tiktoken.Encoding("ties", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    return hf, enc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alphabet", default="ab")
    ap.add_argument("--vocabs", type=int, default=3000)
    ap.add_argument("--max-len", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    strings = [
        "".join(p)
        for n in range(2, args.max_len + 1)
        for p in itertools.product(args.alphabet, repeat=n)
    ]
    for _ in range(args.vocabs):
        extra: set[str] = set()
        while len(extra) < rng.randint(2, args.max_tokens):
            extra.add("".join(rng.choices(args.alphabet, k=rng.randint(2, 4))))
        order = sorted(extra)
        rng.shuffle(order)
        hf, enc = converted(order)
        for s in strings:
            if hf.encode(s).ids != enc.encode_ordinary(s):
                print(f"differ: tokens {order} (ids 256..), text {s!r}")
                return
    print(f"no difference: {args.vocabs} vocabularies x {len(strings)} strings")


if __name__ == "__main__":
    main()
