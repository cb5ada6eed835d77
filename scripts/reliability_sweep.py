"""Hostile-user sweep of the llm data/convert verbs and core: each trial runs the real
`atelier` CLI in a subprocess and is judged by the project's bad-input rule.

A trial is *clean* when it ends as the rule says: exit 2 with exactly one
`atelier: error:` line and no traceback, within the time bound (or, for trials
that must succeed, exit 0); files it must not touch are byte-identical after;
and no temporary of ours (`.NAME.HOST-PID.X.partial`) is left behind. Anything
else is a *failure* and is listed. The totals go to docs/reliability.md so the
next sweep can be compared:

    PYTHONPATH=src .venv/bin/python scripts/reliability_sweep.py [--only llm|convert|core]

Root is needed for the full-disk and read-only trials (small tmpfs mounts); they
are reported as skipped otherwise. Takes a few minutes (one interpreter per trial).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PY = sys.executable
# Temporaries of ours: `.NAME.HOST-PID.X.partial|old|commit` now, `.NAME.X.partial` and
# `.NAME.X.old` before (counted too, so a sweep of older code is judged the same way).
OURS = re.compile(r"^\..+\.[^.]+\.(partial|old|commit)$")
TIMEOUT_S = 90


@dataclass
class Trial:
    suite: str
    name: str
    argv: list[str]
    expect: int = 2  # 2: one-line error; 0: must succeed; 141: quiet broken pipe
    guard: list[Path] = field(default_factory=list)  # must stay byte-identical
    shell: str | None = None  # run through the shell instead (pipes)
    setup: Callable[[], None] | None = None
    check: Callable[[], str | None] | None = None  # extra judgement; returns a failure
    needs_root: bool = False


def digest(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(folders: list[Path]) -> list[str]:
    found = []
    for f in folders:
        if f.is_dir():
            found += [str(f / n) for n in os.listdir(f) if OURS.match(n)]
    return found


def run_trial(t: Trial, env: dict[str, str], watch: list[Path]) -> tuple[str, str]:
    if t.needs_root and os.geteuid() != 0:
        return "skipped", "needs root (tmpfs mount)"
    if t.setup:
        t.setup()
    before = digest(t.guard)
    start = time.monotonic()
    try:
        if t.shell:
            r = subprocess.run(
                t.shell, shell=True, capture_output=True, text=True, env=env, timeout=TIMEOUT_S
            )
        else:
            r = subprocess.run(
                [PY, "-m", "atelier", *t.argv],
                capture_output=True,
                text=True,
                env=env,
                timeout=TIMEOUT_S,
            )
    except subprocess.TimeoutExpired:
        return "failure", f"hung past {TIMEOUT_S}s"
    took = time.monotonic() - start
    err = r.stderr
    errors = [x for x in err.splitlines() if x.startswith("atelier: error:")]
    why = []
    if r.returncode != t.expect:
        why.append(f"exit {r.returncode}, wanted {t.expect}")
    if "Traceback" in err:
        why.append("traceback: " + err.strip().splitlines()[-1][:160])
    if t.expect == 2 and len(errors) != 1:
        why.append(f"{len(errors)} error lines")
    if digest(t.guard) != before:
        why.append("a guarded file changed")
    left = leftovers(watch)
    if left:
        why.append(f"temporaries left: {left[:2]}")
    if t.check and (extra := t.check()):
        why.append(extra)
    detail = errors[0] if errors else (err.strip().splitlines() or [""])[-1]
    if why:
        return "failure", "; ".join(why) + f" | {detail[:200]}"
    return "clean", f"{took:.1f}s {detail[:160]}"


# ---------------------------------------------------------------- fixtures


@contextlib.contextmanager
def tmpfs(where: Path, size: str, ro: bool = False) -> Iterator[Path | None]:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield None
        return
    opts = f"size={size}" + (",ro" if ro else "")
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)]).returncode == 0
    try:
        yield where if ok else None
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(where)])


def make_fixtures(w: Path) -> dict[str, Path]:
    from atelier.llm.assets.build import demo_texts, train_bpe

    f: dict[str, Path] = {}
    f["tok"] = train_bpe(
        demo_texts() * 3,
        w / "tok",
        vocab_size=600,
        special_tokens=["<s>", "</s>"],
        bos="<s>",
        eos="</s>",
        pad="</s>",
    )
    texts = [t for t in demo_texts() if t.strip()]
    lines = [json.dumps({"text": texts[i % len(texts)] * 3}) for i in range(3000)]
    (w / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    f["corpus"] = w / "corpus.jsonl"
    (w / "three.jsonl").write_text("\n".join(lines[:3]) + "\n")
    f["three"] = w / "three.jsonl"
    alpaca = [{"instruction": f"Q{i}?", "input": "", "output": f"A{i}."} for i in range(5)]
    (w / "alpaca.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca))
    f["alpaca"] = w / "alpaca.jsonl"
    gz = gzip.compress(f["corpus"].read_bytes())
    (w / "trunc.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    f["trunc_gz"] = w / "trunc.jsonl.gz"
    (w / "plain.jsonl.gz").write_bytes(f["three"].read_bytes())
    f["plain_gz"] = w / "plain.jsonl.gz"
    (w / "bad.jsonl").write_text('{"text": \n{oops\n[1,2\n')
    f["bad"] = w / "bad.jsonl"
    (w / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    f["latin1"] = w / "latin1.jsonl"
    (w / "binary.jsonl").write_bytes(os.urandom(4096))
    f["binary"] = w / "binary.jsonl"
    (w / "empty.jsonl").write_bytes(b"")
    f["empty"] = w / "empty.jsonl"
    (w / "types.jsonl").write_text('{"text": 5}\n{"text": ["a"]}\n{"text": null}\n{"text": {}}\n')
    f["types"] = w / "types.jsonl"
    (w / "array.json").write_text('[{"text": "a"}, {"text": "b"')
    f["trunc_array"] = w / "array.json"
    (w / "bad.csv").write_text("text,b\n1\n2,3,4\n")
    f["bad_csv"] = w / "bad.csv"
    (w / "bad.parquet").write_bytes(b"PAR1" + os.urandom(100))
    f["bad_parquet"] = w / "bad.parquet"
    (w / "regular").write_text("a file")
    f["regular"] = w / "regular"
    (w / "blob.bin").write_bytes(os.urandom(2048))
    f["blob"] = w / "blob.bin"
    (w / "not_vocab.json").write_text(json.dumps({"a": 1, "b": 2}))
    f["not_vocab"] = w / "not_vocab.json"
    bad_tok = w / "bad_tok"
    shutil.copytree(f["tok"], bad_tok)
    (bad_tok / "tokenizer.json").write_text("{not json")
    f["bad_tok"] = bad_tok
    (w / "templates.yaml").write_text("key: [unclosed\n")
    f["bad_yaml"] = w / "templates.yaml"
    (w / "nodata").mkdir()
    f["nodata"] = w / "nodata"
    return f


def make_model(w: Path, tok: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    t = AutoTokenizer.from_pretrained(str(tok))
    cfg = LlamaConfig(
        vocab_size=len(t),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    hf = w / "hf"
    LlamaForCausalLM(cfg).save_pretrained(str(hf))
    t.save_pretrained(str(hf))
    return hf


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return list(f.keys())


def atelier(env: dict[str, str], *argv: str) -> None:
    subprocess.run([PY, "-m", "atelier", *argv], check=True, capture_output=True, env=env)


# ---------------------------------------------------------------- trials


def llm_trials(w: Path, f: dict[str, Path], env: dict[str, str]) -> list[Trial]:
    tok = ["--tokenizer-name-or-path", str(f["tok"])]
    out = w / "out" / "ds"
    (w / "out").mkdir(exist_ok=True)
    atelier(
        env, "llm", "preprocess", "--input", str(f["corpus"]), "--output-prefix", str(out), *tok
    )
    good = [Path(f"{out}_text_document.bin"), Path(f"{out}_text_document.idx")]

    def pre(*extra: str, prefix: Path = out, inp: Path = f["corpus"]) -> list[str]:
        return [
            "llm",
            "preprocess",
            "--input",
            str(inp),
            "--output-prefix",
            str(prefix),
            *tok,
            *extra,
        ]

    def bert(vocab: Path) -> list[str]:
        return [
            "llm",
            "preprocess",
            "--input",
            str(f["three"]),
            "--output-prefix",
            str(out),
            "--tokenizer-type",
            "BertWordPieceCase",
            "--vocab-file",
            str(vocab),
        ]

    trunc_idx = w / "trunc"
    shutil.copy(good[0], f"{trunc_idx}.bin")
    Path(f"{trunc_idx}.idx").write_bytes(good[1].read_bytes()[:40])
    mism = w / "mism"
    shutil.copy(good[1], f"{mism}.idx")
    Path(f"{mism}.bin").write_bytes(good[0].read_bytes()[:100])
    ds = f"{out}_text_document"
    ro = w / "ro"
    full = w / "full"
    T = Trial
    trials = [
        T("llm", "preprocess truncated .jsonl.gz", pre(inp=f["trunc_gz"]), guard=good),
        T("llm", "preprocess non-gzip .jsonl.gz", pre(inp=f["plain_gz"]), guard=good),
        T("llm", "preprocess BertWordPieceCase random-bytes vocab", bert(f["blob"]), guard=good),
        T("llm", "preprocess BertWordPieceCase JSON as vocab", bert(f["not_vocab"]), guard=good),
        T("llm", "preprocess --output-prefix under /proc", pre(prefix=Path("/proc/atelier/x"))),
        T("llm", "preprocess --output-prefix under a regular file", pre(prefix=f["regular"] / "x")),
        T("llm", "preprocess --output-prefix is a folder", pre(prefix=w / "out")),
        T(
            "llm",
            "preprocess --skip-bad-records on all-bad file",
            pre("--skip-bad-records", inp=f["bad"]),
            guard=good,
        ),
        T("llm", "preprocess --seq-length 1", pre("--seq-length", "1"), guard=good),
        T(
            "llm",
            "preprocess --pack --seq-length 1",
            pre(
                "--handler-name",
                "AlpacaStyleInstructionHandler",
                "--prompt-type",
                "qwen",
                "--pack",
                "--seq-length",
                "1",
                inp=f["alpaca"],
            ),
        ),
        T(
            "llm",
            "preprocess --num-shards 50 --shard 49 on 3 records",
            pre("--num-shards", "50", "--shard", "48", inp=f["three"]),
            guard=good,
        ),
        T("llm", "preprocess --input folder without data", pre(inp=f["nodata"])),
        T("llm", "preprocess latin-1 bytes in .jsonl", pre(inp=f["latin1"]), guard=good),
        T("llm", "preprocess random bytes as .jsonl", pre(inp=f["binary"]), guard=good),
        T("llm", "preprocess empty .jsonl", pre(inp=f["empty"]), guard=good),
        T("llm", "preprocess non-string text values", pre(inp=f["types"]), guard=good),
        T("llm", "preprocess truncated JSON array", pre(inp=f["trunc_array"]), guard=good),
        T("llm", "preprocess malformed CSV", pre(inp=f["bad_csv"]), guard=good),
        T("llm", "preprocess corrupt Parquet", pre(inp=f["bad_parquet"]), guard=good),
        T(
            "llm",
            "preprocess --tokenizer-name-or-path a file",
            [
                "llm",
                "preprocess",
                "--input",
                str(f["three"]),
                "--output-prefix",
                str(out),
                "--tokenizer-name-or-path",
                str(f["regular"]),
            ],
        ),
        T(
            "llm",
            "preprocess corrupt tokenizer.json",
            [
                "llm",
                "preprocess",
                "--input",
                str(f["three"]),
                "--output-prefix",
                str(out),
                "--tokenizer-name-or-path",
                str(f["bad_tok"]),
            ],
            guard=good,
        ),
        T(
            "llm",
            "preprocess GPT2 --merge-file random bytes",
            [
                "llm",
                "preprocess",
                "--input",
                str(f["three"]),
                "--output-prefix",
                str(out),
                "--tokenizer-type",
                "GPT2BPETokenizer",
                "--vocab-file",
                str(f["not_vocab"]),
                "--merge-file",
                str(f["blob"]),
            ],
            guard=good,
        ),
        T(
            "llm",
            "preprocess --prompt-type-path broken YAML",
            pre(
                "--handler-name",
                "AlpacaStyleInstructionHandler",
                "--prompt-type",
                "qwen",
                "--prompt-type-path",
                str(f["bad_yaml"]),
                inp=f["alpaca"],
            ),
        ),
        T(
            "llm",
            "preprocess --map-keys a JSON list",
            pre(
                "--handler-name",
                "AlpacaStyleInstructionHandler",
                "--prompt-type",
                "qwen",
                "--map-keys",
                "[1]",
                inp=f["alpaca"],
            ),
        ),
        T("llm", "preprocess --input glob matching nothing", pre(inp=w / "none*.jsonl")),
        T(
            "llm",
            "preprocess sharegpt handler on plain text",
            pre(
                "--handler-name",
                "SharegptStyleInstructionHandler",
                "--prompt-type",
                "qwen",
                inp=f["three"],
            ),
            guard=good,
        ),
        T(
            "llm",
            "preprocess --output-prefix on a read-only fs",
            pre(prefix=ro / "x"),
            needs_root=True,
        ),
        T("llm", "preprocess full disk (300 KB tmpfs)", pre(prefix=full / "x"), needs_root=True),
        T(
            "llm",
            "preprocess --help | head -1",
            [],
            expect=0,
            shell=f"{PY} -m atelier llm preprocess --help | head -1",
        ),
        T(
            "llm",
            "merge --output-prefix under /proc",
            ["llm", "merge", "--input", ds, "--output-prefix", "/proc/atelier/m"],
        ),
        T(
            "llm",
            "merge --output-prefix under a regular file",
            ["llm", "merge", "--input", ds, "--output-prefix", str(f["regular"] / "m")],
        ),
        T(
            "llm",
            "merge input missing",
            ["llm", "merge", "--input", str(w / "nope"), "--output-prefix", str(w / "m")],
        ),
        T(
            "llm",
            "merge truncated .idx",
            ["llm", "merge", "--input", str(trunc_idx), "--output-prefix", str(w / "m")],
        ),
        T(
            "llm",
            "merge .bin shorter than its .idx",
            ["llm", "merge", "--input", str(mism), "--output-prefix", str(w / "m")],
        ),
        T(
            "llm",
            "merge output is the input (./ spelling)",
            [
                "llm",
                "merge",
                "--input",
                ds,
                ds,
                "--output-prefix",
                str(Path(ds).parent / "." / Path(ds).name),
            ],
            guard=good,
        ),
        T(
            "llm",
            "merge folder without pairs",
            ["llm", "merge", "--input", str(f["nodata"]), "--output-prefix", str(w / "m")],
        ),
        T(
            "llm",
            "merge full disk (300 KB tmpfs)",
            ["llm", "merge", "--input", ds, ds, "--output-prefix", str(full / "m")],
            needs_root=True,
        ),
        T("llm", "inspect missing prefix", ["llm", "inspect", str(w / "nope")]),
        T("llm", "inspect truncated .idx", ["llm", "inspect", str(trunc_idx)]),
        T(
            "llm",
            "inspect random bytes as .idx",
            ["llm", "inspect", str(w / "rnd")],
            setup=lambda: (
                Path(f"{w / 'rnd'}.idx").write_bytes(os.urandom(64)),
                Path(f"{w / 'rnd'}.bin").write_bytes(b""),
            ),
        ),
        T(
            "llm",
            "preprocess --output-prefix name of 300 characters",
            pre(prefix=w / ("n" * 300)),
        ),
        T(
            "llm",
            "preprocess where the old .idx is a folder",
            pre(prefix=w / "dirclash", inp=f["three"]),
            setup=lambda: Path(f"{w / 'dirclash'}_text_document.idx").mkdir(exist_ok=True),
        ),
        T(
            "llm",
            "inspect | head -1",
            [],
            expect=0,
            shell=f"{PY} -m atelier llm inspect {out} | head -1",
        ),
    ]
    return trials


def convert_trials(w: Path, f: dict[str, Path], env: dict[str, str]) -> list[Trial]:
    hf = make_model(w, f["tok"])
    mg = w / "mg"
    atelier(env, "llm", "convert", "hf2mg", "--load-dir", str(hf), "--save-dir", str(mg), "-T", "2")
    user = w / "user_hf"
    shutil.copytree(hf, user)
    (user / "README.md").write_text("mine")
    bad_json = w / "hf_badjson"
    shutil.copytree(hf, bad_json)
    (bad_json / "config.json").write_text("{oops")
    no_fields = w / "hf_nofields"
    shutil.copytree(hf, no_fields)
    (no_fields / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    trunc = w / "hf_trunc"
    shutil.copytree(hf, trunc)
    st = trunc / "model.safetensors"
    st.write_bytes(st.read_bytes()[:5000])
    vocab_cfg = w / "cfg_vocab"
    shutil.copytree(hf, vocab_cfg)
    cfg = json.loads((vocab_cfg / "config.json").read_text())
    cfg["vocab_size"] += 64
    (vocab_cfg / "config.json").write_text(json.dumps(cfg))
    bad_tracker = w / "mg_tracker"
    shutil.copytree(mg, bad_tracker)
    (bad_tracker / "latest_checkpointed_iteration.txt").write_text("banana\n")
    trunc_rank = w / "mg_trunc"
    shutil.copytree(mg, trunc_rank)
    rank = next(trunc_rank.rglob("model_optim_rng.pt"))
    rank.write_bytes(rank.read_bytes()[:3000])
    (w / "empty_dir").mkdir()
    sharded = w / "hf_sharded"
    shutil.copytree(hf, sharded)
    names = list(json.loads(json.dumps(_tensor_names(hf / "model.safetensors"))))
    index = {"metadata": {}, "weight_map": {n: "model-00001-of-00002.safetensors" for n in names}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    (sharded / "model.safetensors").unlink()
    full, ro = w / "full", w / "ro"

    def conv(verb: str, load: Path, save: Path, *extra: str) -> list[str]:
        return ["llm", "convert", verb, "--load-dir", str(load), "--save-dir", str(save), *extra]

    T = Trial
    user_files = [user / n for n in os.listdir(user)]

    def user_kept() -> str | None:
        now = sorted(os.listdir(user))
        return None if "mg2hf" in now else f"no mg2hf/ output: {now}"

    return [
        T("convert", "hf2mg --save-dir under /proc", conv("hf2mg", hf, Path("/proc/atelier/mg"))),
        T(
            "convert",
            "hf2mg --save-dir under a regular file",
            conv("hf2mg", hf, f["regular"] / "mg"),
        ),
        T("convert", "hf2mg --load-dir a file", conv("hf2mg", f["regular"], w / "o1")),
        T("convert", "hf2mg --load-dir empty folder", conv("hf2mg", w / "empty_dir", w / "o1")),
        T("convert", "hf2mg config.json not JSON", conv("hf2mg", bad_json, w / "o1")),
        T("convert", "hf2mg config.json without sizes", conv("hf2mg", no_fields, w / "o1")),
        T("convert", "hf2mg truncated safetensors", conv("hf2mg", trunc, w / "o1")),
        T(
            "convert",
            "hf2mg --overwrite into a user folder",
            conv("hf2mg", hf, user, "--overwrite"),
            guard=[user],
        ),
        T(
            "convert",
            "hf2mg --save-dir = --load-dir",
            conv("hf2mg", hf, hf, "--overwrite"),
            guard=[hf],
        ),
        T("convert", "hf2mg -T 3 (does not divide heads)", conv("hf2mg", hf, w / "o1", "-T", "3")),
        T(
            "convert",
            "hf2mg --tokenizer-model missing",
            conv("hf2mg", hf, w / "o1", "--tokenizer-model", str(w / "nope")),
        ),
        T(
            "convert",
            "hf2mg full disk (300 KB tmpfs)",
            conv("hf2mg", hf, full / "mg"),
            needs_root=True,
        ),
        T(
            "convert",
            "hf2mg --save-dir on a read-only fs",
            conv("hf2mg", hf, ro / "mg"),
            needs_root=True,
        ),
        T(
            "convert",
            "mg2hf --overwrite into the original HF folder",
            conv("mg2hf", mg, user, "--overwrite", "--hf-config-dir", str(hf)),
            expect=0,
            guard=user_files,
            check=user_kept,
        ),
        T(
            "convert",
            "mg2hf --hf-config-dir with another vocab_size",
            conv("mg2hf", mg, w / "o2", "--hf-config-dir", str(vocab_cfg)),
        ),
        T(
            "convert",
            "mg2hf --hf-config-dir missing",
            conv("mg2hf", mg, w / "o2", "--hf-config-dir", str(w / "nope")),
        ),
        T("convert", "mg2hf --load-dir is an HF folder", conv("mg2hf", hf, w / "o2")),
        T("convert", "mg2hf tracker file garbage", conv("mg2hf", bad_tracker, w / "o2")),
        T("convert", "mg2hf truncated rank file", conv("mg2hf", trunc_rank, w / "o2")),
        T(
            "convert",
            "mg2hf --max-shard-size abc",
            conv("mg2hf", mg, w / "o2", "--max-shard-size", "abc"),
        ),
        T(
            "convert",
            "mg2hf --max-shard-size 0",
            conv("mg2hf", mg, w / "o2", "--max-shard-size", "0"),
        ),
        T(
            "convert",
            "mg2hf full disk (300 KB tmpfs)",
            conv("mg2hf", mg, full / "hf"),
            needs_root=True,
        ),
        T("convert", "mg2mg -T 3", conv("mg2mg", mg, w / "o3", "-T", "3", "-P", "1")),
        T(
            "convert",
            "mg2mg --save-dir on a read-only fs",
            conv("mg2mg", mg, ro / "mg", "-T", "1", "-P", "1"),
            needs_root=True,
        ),
        T("convert", "hf2mg index names a missing shard", conv("hf2mg", sharded, w / "o1")),
        T(
            "convert",
            "hf2mg --make-vocab-size-divisible-by 0",
            conv("hf2mg", hf, w / "o1", "--make-vocab-size-divisible-by", "0"),
        ),
        T(
            "convert",
            "hf2mg --save-dir is a symlink to a user folder",
            conv("hf2mg", hf, w / "link", "--overwrite"),
            guard=[user],
            setup=lambda: (w / "link").is_symlink() or (w / "link").symlink_to(user),
        ),
        T("convert", "inspect a regular file", ["llm", "convert", "inspect", str(f["regular"])]),
        T(
            "convert",
            "inspect | head -1",
            [],
            expect=0,
            shell=f"{PY} -m atelier llm convert inspect {mg} | head -1",
        ),
    ]


def core_trials(w: Path, f: dict[str, Path], env: dict[str, str]) -> list[Trial]:
    T = Trial
    trials = [
        T(
            "core",
            f"atelier {s} --help | head -1",
            [],
            expect=0,
            shell=f"{PY} -m atelier {s} --help | head -1",
        )
        for s in ("", "llm", "llm convert", "sd", "lipsync", "dws", "demo")
    ]
    return trials + permission_trials(w, f)


def permission_trials(w: Path, f: dict[str, Path]) -> list[Trial]:
    """Permission denied, for real: as root the CLI runs as `nobody` (setpriv)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return [Trial("core", "permission trials", [], needs_root=True)]
    os.chmod(w, 0o755)
    locked = w / "locked"  # root-owned 0755: nobody may not write here
    locked.mkdir(exist_ok=True)
    secret = w / "secret.jsonl"
    secret.write_text('{"text": "private"}\n')
    os.chmod(secret, 0o600)
    as_nobody = f"setpriv --reuid 65534 --regid 65534 --clear-groups {PY} -m atelier"
    tok = f"--tokenizer-name-or-path {f['tok']}"
    pre = f"{as_nobody} llm preprocess {tok}"
    hf = w / "hf"
    return [
        Trial(
            "core",
            "preprocess --output-prefix in a folder nobody may write",
            [],
            shell=f"{pre} --input {f['three']} --output-prefix {locked / 'x'}",
        ),
        Trial(
            "core",
            "preprocess --input nobody may read",
            [],
            shell=f"{pre} --input {secret} --output-prefix /tmp/atelier-nobody-x",
        ),
        Trial(
            "core",
            "merge --output-prefix in a folder nobody may write",
            [],
            shell=f"{as_nobody} llm merge --input {w / 'out' / 'ds'} "
            f"--output-prefix {locked / 'm'}",
        ),
        Trial(
            "core",
            "hf2mg --save-dir in a folder nobody may write",
            [],
            shell=f"{as_nobody} llm convert hf2mg --load-dir {hf} --save-dir {locked / 'mg'}",
        ),
    ]


# ---------------------------------------------------------------- kill trials


def preprocess_workers_argv(big: Path, prefix: Path, tok: list[str]) -> list[str]:
    return [PY, "-m", "atelier", "llm", "preprocess", "--input", str(big), "--output-prefix",
            str(prefix), *tok, "--workers", "2"]  # fmt: skip


def kill_trials(w: Path, f: dict[str, Path], env: dict[str, str], n: int) -> list[tuple[str, str]]:
    """kill -9 of `preprocess --workers 2` mid-run: no orphaned worker, the rerun
    cleans our temporaries and writes a complete dataset identical to a clean run."""
    big = w / "big.jsonl"
    with open(big, "w") as out:
        for _ in range(8):
            out.write(f["corpus"].read_text())
    tok = ["--tokenizer-name-or-path", str(f["tok"])]
    (w / "kill").mkdir(exist_ok=True)
    prefix = w / "kill" / "ds"
    argv = preprocess_workers_argv(big, prefix, tok)
    subprocess.run(argv, check=True, capture_output=True, env=env)
    ref = digest([Path(f"{prefix}_text_document.bin"), Path(f"{prefix}_text_document.idx")])
    results = []
    for i in range(n):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        kids: set[int] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            kids |= children(proc.pid)
            if len(kids) >= 2 and any(OURS.match(n) for n in os.listdir(w / "kill")):
                break
            time.sleep(0.05)
        time.sleep(0.3 * (i % 4))
        kids |= children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5 and [k for k in kids if alive(k)]:
            time.sleep(0.05)
        orphans = [k for k in kids if alive(k)]
        had_temps = bool(leftovers([w / "kill"]))
        r = subprocess.run(argv, capture_output=True, text=True, env=env)
        now = digest([Path(f"{prefix}_text_document.bin"), Path(f"{prefix}_text_document.idx")])
        why = []
        if orphans:
            why.append(f"orphaned workers {orphans}")
            for k in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(k, signal.SIGKILL)
        if r.returncode != 0:
            why.append(f"rerun exit {r.returncode}: {r.stderr.strip()[-200:]}")
        if leftovers([w / "kill"]):
            why.append("temporaries left after the rerun")
        if had_temps and "stale temporar" not in r.stderr:
            why.append("rerun did not say it cleaned temporaries")
        if list(now.values()) != list(ref.values()):
            why.append("rerun output differs from a clean run")
        name = f"kill -9 preprocess --workers 2 (trial {i + 1}, {len(kids)} workers)"
        results.append((name, "failure: " + "; ".join(why) if why else "clean"))
    return results


def interrupt_trials(
    w: Path, f: dict[str, Path], env: dict[str, str], _n: int = 0
) -> list[tuple[str, str]]:
    """SIGINT / SIGTERM mid-run: exit 130 / 143, one line, no temporaries, old output
    intact; kill -9 of hf2mg mid-write: the rerun removes the partial folder and says so."""
    big = w / "big.jsonl"
    tok = ["--tokenizer-name-or-path", str(f["tok"])]
    (w / "sig").mkdir(exist_ok=True)
    prefix = w / "sig" / "ds"
    argv = preprocess_workers_argv(big, prefix, tok)
    subprocess.run(argv, check=True, capture_output=True, env=env)
    guard = [Path(f"{prefix}_text_document.bin"), Path(f"{prefix}_text_document.idx")]
    results = []
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        before = digest(guard)
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        kids = wait_for_temps(proc, w / "sig", 2)
        proc.send_signal(sig)
        why = []
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            why.append(f"still running 60 s after {sig.name}")
        time.sleep(1)
        if proc.returncode != code and not why:
            why.append(f"exit {proc.returncode}, wanted {code}")
        if "Traceback" in err:
            why.append("traceback")
        if leftovers([w / "sig"]):
            why.append("temporaries left")
        if digest(guard) != before:
            why.append("old output changed")
        if [k for k in kids if alive(k)]:
            why.append("workers left")
        results.append(
            (
                f"{sig.name} mid preprocess --workers 2",
                "failure: " + "; ".join(why) if why else "clean",
            )
        )
    hf = w / "hf"
    if hf.is_dir():
        save = w / "sig" / "mg"
        cargv = [
            PY,
            "-m",
            "atelier",
            "llm",
            "convert",
            "hf2mg",
            "--load-dir",
            str(hf),
            "--save-dir",
            str(save),
            "-T",
            "2",
            "-P",
            "2",
        ]
        why = []
        proc = subprocess.Popen(
            cargv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        wait_for_temps(proc, w / "sig", 0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if not leftovers([w / "sig"]):
            why.append("the kill came too late to leave a partial folder")
        r = subprocess.run(cargv, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            why.append(f"rerun exit {r.returncode}")
        if "stale temporar" not in r.stderr:
            why.append("rerun did not say it cleaned the partial folder")
        if leftovers([w / "sig"]):
            why.append("partial folder left after the rerun")
        results.append(
            ("kill -9 mid hf2mg, then rerun", "failure: " + "; ".join(why) if why else "clean")
        )
    return results


def wait_for_temps(proc: subprocess.Popen, folder: Path, workers: int) -> set[int]:
    kids: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        kids |= children(proc.pid)
        if len(kids) >= workers and any(OURS.match(n) for n in os.listdir(folder)):
            break
        time.sleep(0.02)
    return kids | children(proc.pid)


def children(pid: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{d}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(d))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["llm", "convert", "core"], action="append")
    ap.add_argument("--kills", type=int, default=5, help="kill -9 trials (0 to skip)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unmount and clean up on TERM
    suites = args.only or ["llm", "convert", "core"]
    w = Path(tempfile.mkdtemp(prefix="atelier-sweep-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1] / "src"))
    results: list[tuple[str, str, str, str]] = []
    try:
        f = make_fixtures(w)
        with tmpfs(w / "full", "300k"), tmpfs(w / "ro", "1m", ro=True):
            trials: list[Trial] = []
            if "llm" in suites:
                trials += llm_trials(w, f, env)
            if "convert" in suites:
                trials += convert_trials(w, f, env)
            if "core" in suites:
                trials += core_trials(w, f, env)
            watch = [w, w / "out", w / "full", w / "ro"]
            for t in trials:
                verdict, detail = run_trial(t, env, watch)
                results.append((t.suite, t.name, verdict, detail))
                print(f"{verdict:8} {t.suite:8} {t.name}: {detail}", flush=True)
        if "llm" in suites and args.kills:
            for trials_of in (kill_trials, interrupt_trials):
                for name, verdict in trials_of(w, f, env, args.kills):
                    v = "clean" if verdict == "clean" else "failure"
                    suite = "convert" if "hf2mg" in name else "llm"
                    results.append((suite, name, v, verdict))
                    print(f"{v:8} {suite:8} {name}: {verdict}", flush=True)
    finally:
        shutil.rmtree(w, ignore_errors=True)
    print("\nsuite     tried  clean  failures  skipped")
    for s in suites:
        rows = [r for r in results if r[0] == s]
        count = {v: sum(r[2] == v for r in rows) for v in ("clean", "failure", "skipped")}
        tried = count["clean"] + count["failure"]
        print(f"{s:8} {tried:6} {count['clean']:6} {count['failure']:9} {count['skipped']:8}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if any(r[2] == "failure" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
