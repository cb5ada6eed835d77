"""Raw single-thread encode speed and identity of each tokenizer backend against hf.

For every tokenizer folder: differing documents (with and without special tokens) of
fastokens and tiktoken against hf, encode tokens/s of hf, fastokens, tiktoken on the same
texts (alternated, best of `--repeat`), and tiktoken's build time (Encoding + conditions)
cold (empty verdict cache) and cached. A tokenizer tiktoken refuses is also measured with
the conditions skipped (`tiktoken*`), to show what the refusal protects against.

    python bench/tokenizer_backends.py --text-dir ../shared/data/llm \\
        --tokenizer-dir ../realtok/llama3 --tokenizer-dir ../realtok/qwen2.5 --tokenizer-dir GPT2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from atelier.llm.data import tokenizer_tiktoken as tt
from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer
from atelier.llm.data.tokenizer_backends import BackendRefused, FastokensEncoder, HfEncoder


def read_texts(folder: Path) -> list[str]:
    """C4 and Wikipedia documents, Alpaca (en, zh) and tool-call records as plain text."""
    lines = (folder / "c4_demo.jsonl").read_text("utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line]
    texts += [t for t in (folder / "wiki_demo.txt").read_text("utf-8").split("\n") if t]
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "glaive_toolcall_en_demo.json"):
        for rec in json.loads((folder / name).read_text("utf-8")):
            texts.append("\n".join(str(v) for v in rec.values()))
    return texts


def differing(ref, fast, texts: list[str]) -> int:
    n = 0
    for add_special in (False, True):
        a, al = ref.encode_flat(texts, add_special)
        b, bl = fast.encode_flat(texts, add_special)
        ao, bo = np.cumsum(al), np.cumsum(bl)
        for i in range(len(texts)):
            if al[i] != bl[i] or not np.array_equal(
                a[ao[i] - al[i] : ao[i]], b[bo[i] - bl[i] : bo[i]]
            ):
                n += 1
    return n


def code_point_texts() -> list[str]:
    """Every code point from U+0080 (surrogates aside) between letters, digits, spaces."""
    cps = [chr(c) for c in range(0x80, 0x110000) if not 0xD800 <= c < 0xE000]
    return [fmt.format(c) for fmt in ("a{}a", "1{}1", "{}a", " {} ") for c in cps]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--text-dir", type=Path, required=True)
    ap.add_argument("--tokenizer-dir", type=Path, action="append", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--code-points",
        action="store_true",
        help="also count differing texts of "
        "every code point in four contexts (4.4M short texts; minutes)",
    )
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"
    texts = read_texts(args.text_dir)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts)} documents, {mb:.1f} MB")
    for folder in args.tokenizer_dir:
        rust_json = load_tokenizer(TokenizerSpec(name_or_path=str(folder))).rust_json
        with tempfile.TemporaryDirectory() as cache:
            os.environ["XDG_CACHE_HOME"] = cache
            t0 = time.perf_counter()
            try:
                tk, tk_name = tt.TiktokenEncoder(rust_json), "tiktoken"
                refused = None
            except BackendRefused as e:
                refused = str(e)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            with contextlib.suppress(BackendRefused):
                tt.TiktokenEncoder(rust_json)
            cached = time.perf_counter() - t0
        if refused:  # measure anyway with the conditions skipped
            real = tt.read_verdict
            tt.read_verdict = lambda js: (True, None)
            tk, tk_name = tt.TiktokenEncoder(rust_json), "tiktoken*"
            tt.read_verdict = real
        encs = {"hf": HfEncoder(rust_json), "fastokens": FastokensEncoder(rust_json), tk_name: tk}
        best = dict.fromkeys(encs, float("inf"))
        n_tok = 0
        for _ in range(args.repeat):
            for name, enc in encs.items():
                t0 = time.perf_counter()
                ids, _ = enc.encode_flat(texts, False)
                best[name] = min(best[name], time.perf_counter() - t0)
                n_tok = len(ids)
        print(
            f"\n{folder.name}: {n_tok} tokens; "
            f"tiktoken build cold {cold:.2f} s, cached {cached:.2f} s"
        )
        if refused:
            print(f"  tiktoken refused: {refused}")
        for name, enc in encs.items():
            diff = (
                "" if name == "hf" else f", differing documents {differing(encs['hf'], enc, texts)}"
            )
            rate = n_tok / best[name]
            print(
                f"  {name:10s} {rate / 1e6:6.2f} M tokens/s "
                f"({rate * best['hf'] / n_tok:5.1f}x hf){diff}"
            )
        if args.code_points:
            cps = code_point_texts()
            for name, enc in list(encs.items())[1:]:
                n_diff = differing(encs["hf"], enc, cps)
                print(f"  {name}: {n_diff} of {len(cps)} code-point texts differ")


if __name__ == "__main__":
    main()
