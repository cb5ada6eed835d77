"""Benchmark `atelier llm preprocess` against Megatron-LM's reference method.

Why this exists: Atelier claims to turn JSONL into Megatron indexed datasets much
faster than Megatron-LM's `tools/preprocess_data.py`, byte for byte identically,
in bounded memory. This script checks all three claims in one run, on one
machine, with one tokenizer and one worker count, so the ratio is meaningful even
when absolute timings are noisy.

Steps:

1. Build a synthetic JSONL corpus (default 200 MiB) by sampling and shuffling
   sentences of real text (`../shared/data/llm` when present, otherwise the
   bundled `text_sample.txt` plus random recombinations of its words). Cached.
2. Train a byte-level BPE (vocab 32000) on a sample of it. Cached.
3. Run the reference (Megatron's `process_json_file`, re-implemented below with
   megatron-core's builder) and `atelier llm preprocess`, each in a fresh process.
4. Compare outputs by SHA-256, then run Atelier (`auto`) alone on a 10x corpus to
   see whether its peak RSS grows with the input.
5. Time `auto`'s backend alone (`encode_flat` on the pre-loaded texts, one thread,
   one pass on a fresh encoder): the pipeline's limit is that x workers (target:
   >= 70% of it); beside it, per document, what a worker must also do (parse the
   JSON line, re-check 1 in 256 documents with hf).

Each Atelier run starts with an empty tokenizer cache (its own XDG_CACHE_HOME
under --workdir), so it pays transformers' import as the reference does; the
`warm` backend shows a repeat run with the cache an earlier one left.

Usage: `python bench/preprocess.py [--size-mb 200] [--workers 2] [--workdir DIR]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_TEXT = REPO.parent / "shared" / "data" / "llm"
BUNDLED_TEXT = REPO / "src" / "atelier" / "llm" / "assets" / "text_sample.txt"

MIB = 1 << 20
# Bump when the corpus generator changes, so cached corpora are rebuilt.
GENERATOR_VERSION = 1
MIN_CHARS, MAX_CHARS = 200, 4000
VOCAB_SIZE = 32000
TOKENIZER_SAMPLE_BYTES = 8 * MIB
# Megatron's Pool.imap chunk size in tools/preprocess_data.py.
REFERENCE_CHUNK = 32
RESULT_TAG = "BENCH-RESULT "
RSS_SAMPLE_S = 0.5

# The Atelier run is a `python -c` wrapper around the CLI rather than this file,
# so spawned workers do not re-import the benchmark: what is measured is exactly
# `atelier llm preprocess`. RUSAGE_CHILDREN covers the workers once joined.
ATELIER_WRAPPER = f"""
import json, resource, sys
from atelier.cli.main import main
rc = main(sys.argv[1:])
own = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print({RESULT_TAG!r} + json.dumps(dict(
    rc=rc, main_rss_kb=own.ru_maxrss, worker_rss_kb=kids.ru_maxrss,
    main_cpu_s=own.ru_utime + own.ru_stime, worker_cpu_s=kids.ru_utime + kids.ru_stime,
)), flush=True)
raise SystemExit(rc)
"""


# ------------------------------------------------------------------ corpus


def _split_sentences(text: str) -> list[str]:
    """Sentences of a text, so documents can be rebuilt from shuffled real prose."""
    out = []
    for para in text.splitlines():
        for s in re.split(r"(?<=[.!?])\s+", para.strip()):
            if len(s) >= 20:
                out.append(s)
    return out


def real_sentences(text_dir: Path) -> list[str]:
    """Sentences of the shared C4 and Wikipedia samples; empty when they are absent."""
    sentences: list[str] = []
    c4 = text_dir / "c4_demo.jsonl"
    wiki = text_dir / "wiki_demo.txt"
    if c4.is_file():
        with c4.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    sentences += _split_sentences(json.loads(line).get("text", ""))
    if wiki.is_file():
        sentences += _split_sentences(wiki.read_text("utf-8"))
    return sentences


def fallback_sentences(rng: random.Random, count: int = 20000) -> list[str]:
    """Bundled sentences plus `count` new ones recombined from their words.

    The bundled sample is only a dozen sentences; recombining its words keeps
    the word distribution natural while giving the tokenizer varied sequences.
    """
    base = _split_sentences(BUNDLED_TEXT.read_text("utf-8"))
    words = [w for s in base for w in s.rstrip(".!?").split()]
    made = []
    for _ in range(count):
        picked = rng.choices(words, k=rng.randint(6, 28))
        picked[0] = picked[0][:1].upper() + picked[0][1:]
        made.append(" ".join(picked) + rng.choice(".....?!"))
    return base + made


def make_document(rng: random.Random, pool: list[str]) -> str:
    """One document of shuffled sentences and paragraphs, 200 to 4000 characters.

    Lengths are log-uniform: many short documents and a long tail, as in web
    corpora. Per-document overhead is what separates the two methods, so a
    corpus of only long documents would flatter the reference.
    """
    target = int(math.exp(rng.uniform(math.log(MIN_CHARS), math.log(MAX_CHARS))))
    paras: list[str] = []
    para: list[str] = []
    n = 0
    while n < target:
        s = pool[rng.randrange(len(pool))]
        para.append(s)
        n += len(s) + 1
        if rng.random() < 0.2:
            paras.append(" ".join(para))
            para = []
    if para:
        paras.append(" ".join(para))
    doc = "\n".join(paras)
    if len(doc) > MAX_CHARS:
        doc = doc[:MAX_CHARS].rsplit(" ", 1)[0]
    return doc


@dataclass
class Corpus:
    path: str
    bytes: int
    docs: int
    source: str
    seed: int
    target_bytes: int
    version: int = GENERATOR_VERSION


def ensure_corpus(path: Path, target_bytes: int, seed: int, text_dir: Path) -> Corpus:
    """Write (or reuse) a JSONL corpus of at least `target_bytes`, one `{"text"}` per line.

    Reuse is decided by a sidecar `.meta.json` matching the request and the file size,
    so a 2 GB corpus is not rebuilt on every run.
    """
    meta_path = path.with_suffix(".meta.json")
    source = "shared" if real_sentences(text_dir) else "bundled"
    if path.is_file() and meta_path.is_file():
        meta = Corpus(**json.loads(meta_path.read_text("utf-8")))
        if (
            meta.bytes == path.stat().st_size
            and meta.target_bytes == target_bytes
            and meta.seed == seed
            and meta.source == source
            and meta.version == GENERATOR_VERSION
        ):
            print(f"reusing corpus {path} ({meta.bytes / MIB:.0f} MiB, {meta.docs} docs)")
            return meta
    rng = random.Random(seed)
    pool = real_sentences(text_dir) if source == "shared" else fallback_sentences(rng)
    print(
        f"writing corpus {path} ({target_bytes / MIB:.0f} MiB from {len(pool)} {source} sentences)",
        flush=True,
    )
    t0 = time.perf_counter()
    tmp = path.with_name(path.name + ".tmp")
    written = docs = 0
    with tmp.open("wb") as f:
        while written < target_bytes:
            lines = [
                json.dumps({"text": make_document(rng, pool)}, ensure_ascii=False)
                for _ in range(1000)
            ]
            block = ("\n".join(lines) + "\n").encode("utf-8")
            f.write(block)
            written += len(block)
            docs += len(lines)
    tmp.replace(path)
    corpus = Corpus(str(path), written, docs, source, seed, target_bytes)
    meta_path.write_text(json.dumps(asdict(corpus), indent=2) + "\n", "utf-8")
    print(f"  {docs} docs, {written / MIB:.0f} MiB in {time.perf_counter() - t0:.0f} s")
    return corpus


def ensure_tokenizer(out_dir: Path, corpus: Corpus) -> Path:
    """Train (or reuse) a byte-level BPE of vocab 32000 on the corpus's first 8 MiB."""
    stamp = out_dir / "bench-trained-on.json"
    want = {"corpus": corpus.path, "bytes": corpus.bytes, "vocab_size": VOCAB_SIZE}
    if stamp.is_file() and json.loads(stamp.read_text("utf-8")) == want:
        print(f"reusing tokenizer {out_dir}")
        return out_dir
    from atelier.llm.assets.build import train_bpe

    texts = []
    taken = 0
    with open(corpus.path, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            taken += len(line)
            if taken >= TOKENIZER_SAMPLE_BYTES:
                break
    print(f"training BPE (vocab {VOCAB_SIZE}) on {len(texts)} docs", flush=True)
    t0 = time.perf_counter()
    train_bpe(texts, out_dir, vocab_size=VOCAB_SIZE)
    stamp.write_text(json.dumps(want) + "\n", "utf-8")
    print(f"  trained in {time.perf_counter() - t0:.0f} s")
    return out_dir


# ------------------------------------------------------------------ reference


class ReferenceEncoder:
    """Megatron-LM `tools/preprocess_data.py`'s `Encoder`, for a HuggingFace tokenizer.

    As in Megatron, the tokenizer lives on the class, set by `initializer` in each
    pool worker, and `encode` handles one JSON line: parse, one tokenizer call per
    text, EOD appended to the last sentence. Megatron's `_HuggingFaceTokenizer`
    tokenizes with `tokenizer(text).input_ids` and uses `eos_token_id` as EOD.
    """

    tokenizer: Any = None

    def __init__(self, tokenizer_dir: str, json_keys: tuple[str, ...], append_eod: bool) -> None:
        self.tokenizer_dir = tokenizer_dir
        self.json_keys = json_keys
        self.append_eod = append_eod

    def initializer(self) -> None:
        from transformers import AutoTokenizer

        ReferenceEncoder.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)

    def encode(self, json_line: str) -> tuple[dict[str, list[int]], dict[str, list[int]], int]:
        data = json.loads(json_line)
        ids: dict[str, list[int]] = {}
        lens: dict[str, list[int]] = {}
        tok = ReferenceEncoder.tokenizer
        for key in self.json_keys:
            text = data[key]
            sentences = text if isinstance(text, list) else [text]
            doc_ids: list[int] = []
            sentence_lens: list[int] = []
            for sentence in sentences:
                sentence_ids = tok(sentence).input_ids
                if len(sentence_ids) > 0:
                    doc_ids.extend(sentence_ids)
                    sentence_lens.append(len(sentence_ids))
            if len(doc_ids) > 0 and self.append_eod:
                doc_ids.append(tok.eos_token_id)
                sentence_lens[-1] += 1
            ids[key] = doc_ids
            lens[key] = sentence_lens
        return ids, lens, len(json_line)


def run_reference(
    input_path: str, output_prefix: str, tokenizer_dir: str, workers: int, log_interval: int = 1000
) -> None:
    """Megatron's `Partition.process_json_file`, one partition, no sentence splitting.

    Same structure: a `multiprocessing.Pool` (default start method) with the
    encoder's initializer, `pool.imap(encode, lines, 32)`, and megatron-core's
    `IndexedDatasetBuilder` fed one `add_document` per document in the main process.
    (Megatron finalizes only the last key's builder; with one key that is the same.)
    """
    import multiprocessing

    from megatron.core.datasets import indexed_dataset
    from transformers import AutoTokenizer

    json_keys = ("text",)
    fin = open(input_path, encoding="utf-8")  # noqa: SIM115 (closed below, as Megatron does)
    encoder = ReferenceEncoder(tokenizer_dir, json_keys, append_eod=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)  # main process: vocab size only
    pool = multiprocessing.Pool(workers, initializer=encoder.initializer)
    encoded_docs = pool.imap(encoder.encode, fin, REFERENCE_CHUNK)
    dtype = indexed_dataset.DType.optimal_dtype(len(tokenizer))
    builders = {
        key: indexed_dataset.IndexedDatasetBuilder(
            f"{output_prefix}_{key}_document.bin", dtype=dtype
        )
        for key in json_keys
    }
    proc_start = time.time()
    total_bytes = 0
    for i, (doc, sentence_lens, nbytes) in enumerate(encoded_docs, start=1):
        total_bytes += nbytes
        for key in doc:
            builders[key].add_document(doc[key], sentence_lens[key])
        if i % log_interval == 0:
            elapsed = time.time() - proc_start
            print(
                f"Processed {i} documents ({i / elapsed} docs/s, "
                f"{total_bytes / elapsed / MIB} MB/s).",
                file=sys.stderr,
            )
    fin.close()
    for key in json_keys:
        builders[key].finalize(f"{output_prefix}_{key}_document.idx")
    pool.close()
    pool.join()


def reference_child(args: argparse.Namespace) -> int:
    """Entry of the reference subprocess: run it, then report peak RSS and CPU time of
    itself and of its (joined) workers, as the Atelier wrapper does."""
    import resource

    run_reference(args.input, args.output_prefix, args.tokenizer, args.workers)
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    sizes = {
        "rc": 0,
        "main_rss_kb": own.ru_maxrss,
        "worker_rss_kb": kids.ru_maxrss,
        "main_cpu_s": own.ru_utime + own.ru_stime,
        "worker_cpu_s": kids.ru_utime + kids.ru_stime,
    }
    print(RESULT_TAG + json.dumps(sizes), flush=True)
    return 0


def raw_child(args: argparse.Namespace) -> int:
    """Entry of the raw-encode subprocess: the backend `auto` chooses for this tokenizer,
    `encode_flat` alone on the corpus's texts (pre-loaded, in chunks of the pipeline's
    size), one thread. The first pass, on a fresh encoder, is what a worker does (its
    caches start cold too): the per-core limit of the pipeline. Best of --raw-repeat is
    printed beside it. Also timed, per document, on the same texts: the other steps a
    worker cannot skip (parsing the JSON line, the sampled hf re-check)."""
    from atelier.llm.data.handlers import _loads
    from atelier.llm.data.sources import RECORDS_PER_CHUNK
    from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer, pick_backend
    from atelier.llm.data.tokenizer_backends import SAMPLE_EVERY, HfEncoder, single_threaded

    single_threaded()
    with open(args.input, "rb") as f:
        lines = [line for line in f if line.strip()]
    t0 = time.perf_counter()
    texts = [_loads(line)["text"] for line in lines]
    parse_s = time.perf_counter() - t0
    loaded = load_tokenizer(TokenizerSpec(name_or_path=args.tokenizer, backend=args.internal_raw))
    loaded, _, built = pick_backend(loaded, args.internal_raw, texts[:256])
    # a fresh encoder: pick_backend's has encoded the check's texts only, as a worker's
    encoder = built.fast if built and built.fast is not None else HfEncoder(loaded.rust_json)
    batches = [texts[i : i + RECORDS_PER_CHUNK] for i in range(0, len(texts), RECORDS_PER_CHUNK)]
    passes = []
    tokens = 0
    for _ in range(max(1, args.raw_repeat)):
        t0 = time.perf_counter()
        tokens = sum(int(encoder.encode_flat(b, True)[0].size) for b in batches)
        passes.append(time.perf_counter() - t0)
    ref = HfEncoder(loaded.rust_json)
    sample = texts[::SAMPLE_EVERY]
    t0 = time.perf_counter()
    for i in range(0, len(sample), RECORDS_PER_CHUNK):
        ref.encode_flat(sample[i : i + RECORDS_PER_CHUNK], True)
    check_s = time.perf_counter() - t0
    out = {
        "backend": loaded.backend,
        "tokens": tokens,
        "docs": len(texts),
        "seconds": passes[0],
        "best_seconds": min(passes),
        "json_seconds": parse_s,
        "hf_check_seconds": check_s,
    }
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0


def measure_raw(corpus: str, tokenizer: Path, backend: str, repeat: int) -> dict[str, Any]:
    """Raw single-thread encode throughput of `backend` (as chosen), in a fresh process."""
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--internal-raw", backend,
        "--input", corpus, "--tokenizer", str(tokenizer), "--raw-repeat", str(repeat),
    ]  # fmt: skip
    print(f"raw encode, {backend} ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ))
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not results:
        raise SystemExit(f"raw encode failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    raw = json.loads(results[-1][len(RESULT_TAG) :])
    raw["tokens_per_s"] = raw["tokens"] / raw["seconds"]
    raw["best_tokens_per_s"] = raw["tokens"] / raw["best_seconds"]
    print(f"  {raw['backend']}: {raw['tokens_per_s']:,.0f} tokens/s on one thread")
    return raw


# ------------------------------------------------------------------ measuring


def _tree_rss_kb(root: int) -> int:
    """Sum of resident memory over `root` and its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, frontier = {root}, [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * page_kb
        except OSError:
            continue
    return total


@dataclass
class Run:
    name: str
    seconds: float
    docs: int
    tokens: int
    main_rss_mb: float
    worker_rss_mb: float
    tree_rss_mb: float | None
    main_cpu_s: float
    worker_cpu_s: float
    sha256: dict[str, str] = field(default_factory=dict)

    @property
    def peak_rss_mb(self) -> float:
        """The largest single process: the main one or the biggest worker."""
        return max(self.main_rss_mb, self.worker_rss_mb)

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def _idx_counts(prefix: str) -> tuple[int, int]:
    """(documents, tokens) from an `.idx` header and the `.bin` size, independent of both tools."""
    with open(f"{prefix}.idx", "rb") as f:
        head = f.read(34)
    _, code, _, n_doc = struct.unpack("<QBQQ", head[9:34])
    itemsize = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 8, 7: 4, 8: 2}[code]
    return n_doc - 1, os.path.getsize(f"{prefix}.bin") // itemsize


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 * MIB):
            h.update(block)
    return h.hexdigest()


def measure(
    name: str, cmd: list[str], out_prefix: str, log_path: Path, cache: Path | None = None
) -> Run:
    """Run `cmd` in a fresh process, timing it end to end and sampling its tree's RSS.

    A fresh process per run matters: RUSAGE_CHILDREN is a maximum over every child
    ever waited for, so only a new parent gives a per-run figure. `cache` is Atelier's
    cache folder for the run (XDG_CACHE_HOME): emptied first unless the name says warm,
    so each Atelier run loads its tokenizer with transformers, as the reference does.
    """
    for ext in (".bin", ".idx"):
        Path(out_prefix + ext).unlink(missing_ok=True)
    print(f"running {name} ... (log {log_path})", flush=True)
    env = dict(os.environ)  # explicit, so nothing set in this process after fork leaks in
    if cache is not None:
        if not name.endswith("warm") and (cache / "atelier").is_dir():
            shutil.rmtree(cache / "atelier")
        env["XDG_CACHE_HOME"] = str(cache)
    peak_tree = [0]
    with log_path.open("w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        stop = threading.Event()
        can_sample = Path("/proc/self/statm").exists()

        def sample() -> None:
            while not stop.wait(RSS_SAMPLE_S):
                peak_tree[0] = max(peak_tree[0], _tree_rss_kb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        if can_sample:
            sampler.start()
        rc = proc.wait()
        seconds = time.perf_counter() - t0
        stop.set()
        if can_sample:
            sampler.join()
    text = log_path.read_text("utf-8", errors="replace")
    results = [ln for ln in text.splitlines() if ln.startswith(RESULT_TAG)]
    if rc != 0 or not results:
        tail = "\n".join(text.splitlines()[-20:])
        raise SystemExit(f"{name} failed (exit {rc}); last lines of {log_path}:\n{tail}")
    res = json.loads(results[-1][len(RESULT_TAG) :])
    docs, tokens = _idx_counts(out_prefix)
    run = Run(
        name=name,
        seconds=seconds,
        docs=docs,
        tokens=tokens,
        main_rss_mb=res["main_rss_kb"] / 1024,
        worker_rss_mb=res["worker_rss_kb"] / 1024,
        tree_rss_mb=peak_tree[0] / 1024 if can_sample else None,
        main_cpu_s=res["main_cpu_s"],
        worker_cpu_s=res["worker_cpu_s"],
    )
    print(
        f"  {seconds:.1f} s, {run.docs_per_s:,.0f} docs/s, {run.tokens_per_s:,.0f} tokens/s, "
        f"peak RSS {run.peak_rss_mb:.0f} MB, CPU {run.main_cpu_s:.0f} s main + "
        f"{run.worker_cpu_s:.0f} s workers"
    )
    return run


def best_of(runs: list[Run]) -> Run:
    """The fastest run, with the highest peak RSS seen in any of them (memory is not
    a figure to take the best of)."""
    best = min(runs, key=lambda r: r.seconds)
    best.main_rss_mb = max(r.main_rss_mb for r in runs)
    best.worker_rss_mb = max(r.worker_rss_mb for r in runs)
    trees = [r.tree_rss_mb for r in runs if r.tree_rss_mb is not None]
    best.tree_rss_mb = max(trees) if trees else None
    return best


def atelier_cmd(
    corpus: str, prefix: str, tokenizer: Path, workers: int, backend: str = "auto"
) -> list[str]:
    backend = "auto" if backend == "warm" else backend
    return [
        sys.executable, "-c", ATELIER_WRAPPER,
        "llm", "preprocess", "--input", corpus, "--output-prefix", prefix,
        "--tokenizer-type", "PretrainedFromHF", "--tokenizer-name-or-path", str(tokenizer),
        "--json-keys", "text", "--append-eod", "--workers", str(workers),
        "--token-dtype", "auto",  # Megatron-LM's rule, as the reference: uint16 under 65,500
        *(["--tokenizer-backend", "auto", "--ray"] if backend == "ray" else
          ["--tokenizer-backend", backend]),
    ]  # fmt: skip


def reference_cmd(corpus: str, prefix: str, tokenizer: Path, workers: int) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "--internal-reference",
        "--input", corpus, "--output-prefix", prefix, "--tokenizer", str(tokenizer),
        "--workers", str(workers),
    ]  # fmt: skip


# ------------------------------------------------------------------ report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _rows(runs: list[Run]) -> Iterator[str]:
    yield (
        f"{'method':<14}{'docs':>10}{'tokens':>14}{'seconds':>10}{'docs/s':>10}"
        f"{'tokens/s':>12}{'peak RSS MB':>13}{'tree RSS MB':>13}"
    )
    for r in runs:
        tree = f"{r.tree_rss_mb:.0f}" if r.tree_rss_mb is not None else "n/a"
        yield (
            f"{r.name:<14}{r.docs:>10,}{r.tokens:>14,}{r.seconds:>10.1f}{r.docs_per_s:>10,.0f}"
            f"{r.tokens_per_s:>12,.0f}{r.peak_rss_mb:>13.0f}{tree:>13}"
        )


def _describe(args: argparse.Namespace, vocab: int) -> str:
    """The tokenizer in a few words: the trained one, or a given folder's model type."""
    if not args.tokenizer_dir:
        return f"byte-level BPE trained on it, {vocab} ids (asked {VOCAB_SIZE})"
    spec = json.loads((Path(args.tokenizer_dir) / "tokenizer.json").read_text("utf-8"))
    pre = (spec.get("pre_tokenizer") or {}).get("type", "no pre-tokenizer")
    model = spec.get("model", {}).get("type", "?")
    return f"tokenizer {args.tokenizer_dir} ({model}, {pre}, {vocab} ids)"


def report(
    args: argparse.Namespace,
    corpus: Corpus,
    ref: Run,
    ates: list[Run],
    big: Run | None,
    big_corpus: Corpus | None,
    vocab: int,
    raw: dict[str, Any] | None = None,
    big_ray: Run | None = None,
) -> dict[str, Any]:
    # the targets are judged on `auto` (the default) when it ran, else the last listed; the
    # 10x run is `auto` too
    ate = next((a for a in ates if a.name == "atelier auto"), ates[-1])
    same = ate
    ratio = ate.tokens_per_s / ref.tokens_per_s
    identical = all(ref.sha256 == a.sha256 for a in ates)
    rss_ok = all(a.peak_rss_mb < 1024 for a in ates)
    growth_ok = None
    if big is not None:
        rss_ok = rss_ok and big.peak_rss_mb < 1024
        # "Not growing": 10x the input may add at most 20 % to the peak (the index
        # keeps 12 bytes per document, a few MB per million documents).
        growth_ok = big.peak_rss_mb <= 1.2 * same.peak_rss_mb
    runs = [ref, *ates] + [r for r in (big, big_ray) if r is not None]
    print()
    print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}, Python {platform.python_version()}")
    print(
        f"corpus:  {corpus.path}: {corpus.bytes / MIB:.0f} MiB, {corpus.docs:,} docs "
        f"({corpus.source} text), {_describe(args, vocab)}, "
        f"--workers {args.workers} --append-eod"
    )
    if big_corpus is not None:
        print(
            f"10x:     {big_corpus.path}: {big_corpus.bytes / MIB:.0f} MiB, "
            f"{big_corpus.docs:,} docs"
        )
    print(
        f"seconds: wall clock of the whole command (start-up included), fastest of "
        f"{args.repeat}; peak RSS: the largest "
        "single process (main or a worker); tree RSS: sum over the process tree, sampled "
        f"every {RSS_SAMPLE_S} s"
    )
    print()
    for line in _rows(runs):
        print(line)
    print()
    for r in runs:
        print(
            f"CPU time, {r.name}: main {r.main_cpu_s:.1f} s, workers {r.worker_cpu_s:.1f} s "
            f"({(r.main_cpu_s + r.worker_cpu_s) / r.seconds:.2f} cores busy on average)"
        )
    for a in ates:
        r = a.tokens_per_s / ref.tokens_per_s
        print(f"throughput ratio ({a.name} / reference, tokens/s): {r:.2f}x")
    print(
        f"throughput ratio ({ate.name} / reference, tokens/s): {ratio:.2f}x  "
        f"(target >= 5x: {'MET' if ratio >= 5 else 'MISSED'})"
    )
    print(f"docs/s ratio: {ate.docs_per_s / ref.docs_per_s:.2f}x")
    ray = next((a for a in ates if a.name == "atelier ray"), None)
    ray_gap: dict[str, float] = {}
    if ray is not None and ate is not ray:
        pairs = [("1x", ray, ate)] + ([("10x", big_ray, big)] if big_ray and big else [])
        for size, r, w in pairs:
            gap = r.seconds / w.seconds - 1
            same_bytes = r.sha256 == w.sha256
            print(
                f"ray ({args.workers} local workers) vs --workers {args.workers}, {size}: "
                f"{r.seconds:.1f} s vs {w.seconds:.1f} s, {gap:+.0%}  "
                f"(target within 15%: {'MET' if gap <= 0.15 else 'MISSED'}; "
                f"bytes {'identical' if same_bytes else 'DIFFERENT'})"
            )
            identical = identical and same_bytes
            ray_gap[size] = gap
    print(f"outputs byte-identical (.bin and .idx SHA-256): {'PASS' if identical else 'FAIL'}")
    for ext in (".bin", ".idx"):
        shown = "  ".join(f"{a.name} {a.sha256[ext][:16]}" for a in ates)
        print(f"  {ext}: reference {ref.sha256[ext][:16]}  {shown}")
    limit = None
    if raw is not None:
        auto = next((a for a in ates if a.name == "atelier auto"), None)
        if auto is not None:
            limit = auto.tokens_per_s / (raw["tokens_per_s"] * args.workers)
            print(
                f"raw single-thread encode ({raw['backend']}, encode_flat only, one fresh "
                f"pass): {raw['tokens_per_s']:,.0f} tokens/s (best of {args.raw_repeat}, "
                f"caches warm: {raw['best_tokens_per_s']:,.0f}); atelier auto / "
                f"(raw x {args.workers} workers): {limit:.0%}  "
                f"(target >= 70%: {'MET' if limit >= 0.7 else 'MISSED'})"
            )
            if big is not None:  # start-up spread over 10x the work
                big_limit = big.tokens_per_s / (raw["tokens_per_s"] * args.workers)
                print(f"  the 10x run / (raw x {args.workers} workers): {big_limit:.0%}")
                raw["big_over_raw_x_workers"] = big_limit
            us = {k: raw[f"{k}_seconds"] / raw["docs"] * 1e6 for k in ("json", "hf_check")}
            enc_us = raw["seconds"] / raw["docs"] * 1e6
            ceiling = enc_us / (enc_us + us["json"] + us["hf_check"])
            print(
                f"  per document, one thread: encode {enc_us:.2f} us, JSON line parse "
                f"{us['json']:.2f} us, hf re-check of 1 in 256 {us['hf_check']:.2f} us: "
                f"a worker doing only these reaches {ceiling:.0%} of raw"
            )
            raw["worker_ceiling"] = ceiling
    line = f"Atelier peak RSS ({same.name}): {same.peak_rss_mb:.0f} MB at 1x"
    if big is not None:
        line += f", {big.peak_rss_mb:.0f} MB at 10x"
    line += f"  (target < 1024 MB: {'MET' if rss_ok else 'MISSED'}"
    if growth_ok is not None:
        line += f"; not growing with input: {'MET' if growth_ok else 'MISSED'}"
    print(line + ")")
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
        },
        "corpus": asdict(corpus),
        "large_corpus": asdict(big_corpus) if big_corpus else None,
        "workers": args.workers,
        "vocab_size": vocab,
        "runs": [
            asdict(r)
            | {
                "docs_per_s": r.docs_per_s,
                "tokens_per_s": r.tokens_per_s,
                "peak_rss_mb": r.peak_rss_mb,
            }
            for r in runs
        ],
        "ratio_tokens_per_s": ratio,
        "ratios_by_backend": {a.name: a.tokens_per_s / ref.tokens_per_s for a in ates},
        "identical": identical,
        "rss_under_1gb": rss_ok,
        "rss_not_growing": growth_ok,
        "raw_encode": raw,
        "pipeline_over_raw_x_workers": limit,
        "ray_over_workers": ray_gap or None,
    }


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--size-mb",
        type=int,
        default=200,
        help="corpus size in MiB (default 200); the large one is 10x this",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes for both (default 2)")
    p.add_argument(
        "--workdir",
        default="/tmp/atelier-bench",
        help="corpora, tokenizer, outputs and logs (default /tmp/atelier-bench)",
    )
    p.add_argument("--skip-large", action="store_true", help="skip the 10x memory run")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="alternate reference and Atelier N times and keep each one's fastest (default 1)",
    )
    p.add_argument("--seed", type=int, default=1234, help="corpus RNG seed (default 1234)")
    p.add_argument(
        "--backends",
        default="hf,auto",
        help="Atelier --tokenizer-backend values to run, comma-separated (default hf,auto): "
        "any of atelier's backends, 'ray' (auto with --ray on a local Ray, atelier[ray]) or "
        "'warm' (auto with the tokenizer cache an earlier run in the list left; the others "
        "start with an empty cache)",
    )
    p.add_argument(
        "--raw-repeat",
        type=int,
        default=3,
        help="runs of the raw single-thread encode of `auto`'s backend; the best counts "
        "(default 3; 0 skips it)",
    )
    p.add_argument(
        "--tokenizer-dir",
        default=None,
        help="a real tokenizer folder to use instead of the BPE trained on the corpus",
    )
    p.add_argument(
        "--text-dir",
        default=str(SHARED_TEXT),
        help="real text samples (c4_demo.jsonl, wiki_demo.txt); bundled text if absent",
    )
    # Internal: the reference run re-enters this file in a fresh process.
    p.add_argument("--internal-reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output-prefix", help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", help=argparse.SUPPRESS)
    p.add_argument("--internal-raw", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.internal_reference:
        return reference_child(args)
    if args.internal_raw:
        return raw_child(args)
    if args.size_mb < 1 or args.workers < 1 or args.repeat < 1 or args.raw_repeat < 0:
        raise SystemExit("--size-mb, --workers and --repeat must be at least 1")
    work = Path(args.workdir)
    (work / "out").mkdir(parents=True, exist_ok=True)
    text_dir = Path(args.text_dir)

    corpus = ensure_corpus(
        work / f"corpus-{args.size_mb}mb-s{args.seed}.jsonl",
        args.size_mb * MIB,
        args.seed,
        text_dir,
    )
    tokenizer = (
        Path(args.tokenizer_dir)
        if args.tokenizer_dir
        else ensure_tokenizer(work / f"tokenizer-{args.size_mb}mb-s{args.seed}", corpus)
    )
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    from atelier.llm.data.tokenizer_backends import BACKENDS

    extra = ("ray", "warm")
    unknown = [b for b in backends if b not in (*BACKENDS, *extra)]
    if unknown or not backends:
        raise SystemExit(f"--backends {args.backends}: use {', '.join((*BACKENDS, *extra))}")
    if "warm" in backends and backends.index("warm") == 0:
        raise SystemExit("--backends: 'warm' reuses the cache an earlier backend's run left")

    ref_prefix = str(work / "out" / "reference_text_document")
    ref_runs: list[Run] = []
    ate_runs: dict[str, list[Run]] = {b: [] for b in backends}
    # Alternating the two methods lets both see the same background load; the best
    # of --repeat runs is the least disturbed figure of each.
    for _ in range(args.repeat):
        ref_runs.append(
            measure(
                "reference",
                reference_cmd(
                    corpus.path, str(work / "out" / "reference"), tokenizer, args.workers
                ),
                ref_prefix,
                work / "reference.log",
            )
        )
        for b in backends:
            ate_runs[b].append(
                measure(
                    f"atelier {b}",
                    atelier_cmd(
                        corpus.path, str(work / "out" / f"atelier-{b}"), tokenizer, args.workers, b
                    ),
                    str(work / "out" / f"atelier-{b}_text_document"),
                    work / f"atelier-{b}.log",
                    work / "cache",
                )
            )
    ref = best_of(ref_runs)
    ref.sha256 = {ext: _sha256(ref_prefix + ext) for ext in (".bin", ".idx")}
    ates = []
    for b in backends:
        a = best_of(ate_runs[b])
        prefix = str(work / "out" / f"atelier-{b}_text_document")
        a.sha256 = {ext: _sha256(prefix + ext) for ext in (".bin", ".idx")}
        ates.append(a)

    big = big_corpus = big_ray = None
    big_prefix = str(work / "out" / "atelier10x_text_document")
    if not args.skip_large:
        big_mb = 10 * args.size_mb
        big_corpus = ensure_corpus(
            work / f"corpus-{big_mb}mb-s{args.seed + 1}.jsonl",
            big_mb * MIB,
            args.seed + 1,
            text_dir,
        )
        big = measure(
            "atelier 10x",
            atelier_cmd(
                big_corpus.path,
                str(work / "out" / "atelier10x"),
                tokenizer,
                args.workers,
                "auto",  # the default and the fast path: what must stay flat
            ),
            str(work / "out" / "atelier10x_text_document"),
            work / "atelier10x.log",
            work / "cache",
        )
        big.sha256 = {ext: _sha256(big_prefix + ext) for ext in (".bin", ".idx")}
        if "ray" in backends:  # Ray's start-up is fixed: compare it at 10x as well
            big_ray = measure(
                "atelier ray10x",
                atelier_cmd(
                    big_corpus.path,
                    str(work / "out" / "atelier-ray10x"),
                    tokenizer,
                    args.workers,
                    "ray",
                ),
                str(work / "out" / "atelier-ray10x_text_document"),
                work / "atelier-ray10x.log",
                work / "cache",
            )
            prefix = str(work / "out" / "atelier-ray10x_text_document")
            big_ray.sha256 = {ext: _sha256(prefix + ext) for ext in (".bin", ".idx")}

    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer / "tokenizer.json")).get_vocab_size()
    raw = measure_raw(corpus.path, tokenizer, "auto", args.raw_repeat) if args.raw_repeat else None
    results = report(args, corpus, ref, ates, big, big_corpus, vocab, raw, big_ray)
    results["repeat"] = args.repeat
    results["seconds_all"] = {
        "reference": [r.seconds for r in ref_runs],
        **{f"atelier {b}": [r.seconds for r in runs] for b, runs in ate_runs.items()},
    }
    if args.repeat > 1:
        for name, runs in results["seconds_all"].items():
            print(f"all runs, {name}: " + ", ".join(f"{t:.1f} s" for t in runs))
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print(f"\nresults written to {work / 'results.json'}")
    return 0 if results["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
