"""SentencePiece-BPE (Metaspace) tokenizers on fastokens vs Hugging Face `tokenizers`.

For each tokenizer folder: the pipeline as transformers loads it and every other Metaspace
variant of the same vocabulary (prepend_scheme x split). Every document of the real-text
set is encoded by `hf` and by fastokens (the Metaspace rewrite of fastokens_pipeline.py),
with and without special tokens; the script prints the number of documents whose ids
differ (must be 0, or the backend is refused) and, for the pipeline as loaded, the
single-thread encode throughput of both, same texts, alternated, best of `--repeat`.

    PYTHONPATH=src python bench/sentencepiece_fastokens.py \
        --tokenizer-dirs ../realtok/mistral-sp2 --text-dir ../shared/data/llm
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from atelier.llm.data.tokenizer_backends import (
    BackendRefused,
    FastokensEncoder,
    HfEncoder,
    adversarial_texts,
    single_threaded,
)


def documents(text_dir: Path) -> list[str]:
    """C4 records, Wikipedia lines, Alpaca (en, zh) fields, tool-call conversations."""
    docs = [
        json.loads(line)["text"] for line in (text_dir / "c4_demo.jsonl").open(encoding="utf-8")
    ]
    docs += [t for t in (text_dir / "wiki_demo.txt").read_text("utf-8").splitlines() if t]
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json"):
        for r in json.loads((text_dir / name).read_text("utf-8")):
            docs += [r[k] for k in ("instruction", "input", "output") if r.get(k)]
    for r in json.loads((text_dir / "glaive_toolcall_en_demo.json").read_text("utf-8")):
        docs += [m["value"] for m in r["conversations"]]
    return docs


def differing(ref: HfEncoder, fast: FastokensEncoder, texts: list[str]) -> int:
    """Documents whose ids differ, with or without special tokens."""
    bad = np.zeros(len(texts), dtype=bool)
    for add_special in (False, True):
        a_ids, a_len = ref.encode_flat(texts, add_special)
        b_ids, b_len = fast.encode_flat(texts, add_special)
        a_off = np.concatenate([[0], np.cumsum(a_len)])
        b_off = np.concatenate([[0], np.cumsum(b_len)])
        for i in range(len(texts)):
            a = a_ids[a_off[i] : a_off[i + 1]]
            bad[i] |= not np.array_equal(a, b_ids[b_off[i] : b_off[i + 1]])
    return int(bad.sum())


def throughput(encoders: dict[str, object], texts: list[str], repeat: int) -> dict[str, float]:
    """Tokens per second of each encoder on one thread, alternated, best of `repeat`."""
    best = dict.fromkeys(encoders, float("inf"))
    tokens = {}
    for _ in range(repeat):
        for name, enc in encoders.items():
            t0 = time.perf_counter()
            ids, _ = enc.encode_flat(texts, True)
            best[name] = min(best[name], time.perf_counter() - t0)
            tokens[name] = ids.size
    return {name: tokens[name] / best[name] for name in encoders}


def one(label: str, rust_json: str, texts: list[str], repeat: int) -> None:
    """Differing documents, and (repeat > 0) the single-thread throughput of both."""
    ref = HfEncoder(rust_json)
    try:
        fast = FastokensEncoder(rust_json)
    except BackendRefused as e:
        print(f"{label}: fastokens refused: {e}")
        return
    line = f"{label}: {len(texts)} documents, {differing(ref, fast, texts)} differ"
    if repeat:
        rate = throughput({"hf": ref, "fastokens": fast}, texts, repeat)
        line += (
            f"; single thread hf {rate['hf'] / 1e6:.3f} M tok/s, fastokens "
            f"{rate['fastokens'] / 1e6:.3f} M tok/s ({rate['fastokens'] / rate['hf']:.1f}x)"
        )
    print(line, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer-dirs", required=True, help="comma-separated HF folders")
    p.add_argument("--text-dir", default="../shared/data/llm")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    single_threaded()
    from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer

    base = documents(Path(args.text_dir))
    for folder in args.tokenizer_dirs.split(","):
        loaded = load_tokenizer(TokenizerSpec(name_or_path=folder))
        spec = json.loads(loaded.rust_json)
        pre = spec["pre_tokenizer"]
        if len(spec["model"]["vocab"]) < 1000:
            print(f"{folder}: only {len(spec['model']['vocab'])} tokens (a broken conversion?)")
        texts = adversarial_texts(loaded.added_tokens) + base
        name = f"{Path(folder).name} ({pre.get('prepend_scheme')}, split {pre.get('split')})"
        one(name, loaded.rust_json, texts, args.repeat)
        for scheme in ("first", "always", "never"):  # the other Metaspace variants, same vocab
            for split in (False, True):
                if (scheme, split) == (pre.get("prepend_scheme"), pre.get("split")):
                    continue
                spec["pre_tokenizer"] = {**pre, "prepend_scheme": scheme, "split": split}
                one(f"  as {scheme}, split {split}", json.dumps(spec), texts, 0)


if __name__ == "__main__":
    main()
