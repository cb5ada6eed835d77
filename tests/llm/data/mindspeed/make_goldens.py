"""Regenerate goldens.json from MindSpeed-LLM v2.0.0's own preprocess_data.py (not a test).

Run by hand where MindSpeed and megatron-core 0.8 can be imported, never by the suite:

    M=<MindSpeed-LLM git dir>; git --git-dir=$M archive v2.0.0 | tar -x -C /tmp/ms
    pip install --target /tmp/ms-deps --no-deps megatron-core==0.8.0 "datasets<4" dill \\
        xxhash multiprocess pandas
    python tests/llm/data/mindspeed/make_goldens.py /tmp/ms /tmp/ms-deps RUNNER

RUNNER is a script that imports MindSpeed's preprocess_data.py with its NPU-side
`mindspeed_llm.tasks.megatron_adaptor` stubbed and the three IndexedDatasetBuilder
wrappers of `patch_datasets()` applied (they change how items are buffered, not bytes).
The tokenizers are the suite's own (tests/conftest.py `hf_tokenizer_dir`, and the same
without a pad token), rebuilt here with the same call, so the test needs no download.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[3]

# name -> argv after the program name; {in} is this folder, {tok}/{nopad} the tokenizers.
# "{len:NAME:I}" is replaced by the length of sample I of scenario NAME's input_ids, so
# that a sample of exactly --seq-length tokens is in the data (MindSpeed drops it: >=).
SFT = ["--handler-name", "AlpacaStyleInstructionHandler"]
SCENARIOS: dict[str, list[str]] = {
    "alpaca_qwen": [*SFT, "--input", "{in}/alpaca.jsonl", "--prompt-type", "qwen"],
    "alpaca_qwen_eod": [
        *SFT,
        "--input",
        "{in}/alpaca.jsonl",
        "--prompt-type",
        "qwen",
        "--append-eod",
    ],
    "alpaca_llama2": [*SFT, "--input", "{in}/alpaca.jsonl", "--prompt-type", "llama2"],
    "alpaca_llama2_seq": [
        *SFT,
        "--input",
        "{in}/alpaca.jsonl",
        "--prompt-type",
        "llama2",
        "--seq-length",
        "{len:alpaca_llama2:5}",
    ],
    "alpaca_llama2_seq_eod": [
        *SFT,
        "--input",
        "{in}/alpaca.jsonl",
        "--prompt-type",
        "llama2",
        "--append-eod",
        "--seq-length",
        "{len:alpaca_llama2:5}",
    ],
    "alpaca_history_qwen": [
        *SFT,
        "--input",
        "{in}/alpaca_history.jsonl",
        "--prompt-type",
        "qwen",
        "--map-keys",
        '{"prompt":"instruction","query":"input","response":"output", "history":"history"}',
    ],
    "alpaca_qwen_pack_eod": [
        *SFT,
        "--input",
        "{in}/alpaca.jsonl",
        "--prompt-type",
        "qwen",
        "--pack",
        "--append-eod",
        "--seq-length",
        "256",
    ],
    "alpaca_qwen_neat_pack": [
        *SFT,
        "--input",
        "{in}/alpaca.jsonl",
        "--prompt-type",
        "qwen",
        "--pack",
        "--neat-pack",
        "--seq-length",
        "128",
    ],
    "alpaca_llama3_pack_nopad": [
        *SFT,
        "--input",
        "{in}/alpaca.jsonl",
        "--prompt-type",
        "llama3",
        "--pack",
        "--seq-length",
        "200",
        "--tokenizer-name-or-path",
        "{nopad}",
    ],
    "sharegpt_qwen_seq": [
        "--input",
        "{in}/sharegpt.jsonl",
        "--handler-name",
        "SharegptStyleInstructionHandler",
        "--prompt-type",
        "qwen",
        "--seq-length",
        "{len:alpaca_qwen:3}",
    ],
    "pairwise_alpaca_llama2_seq": [
        "--input",
        "{in}/pairwise.jsonl",
        "--handler-name",
        "AlpacaStylePairwiseHandler",
        "--prompt-type",
        "llama2",
        "--seq-length",
        "96",
        "--map-keys",
        '{"prompt":"question", "query":"", "system":"system"}',
    ],
    "pairwise_alpaca_chatglm3": [
        "--input",
        "{in}/pairwise.jsonl",
        "--handler-name",
        "AlpacaStylePairwiseHandler",
        "--prompt-type",
        "chatglm3",
        "--map-keys",
        '{"prompt":"question", "query":"", "system":"system"}',
    ],
    "pairwise_sharegpt_qwen": [
        "--input",
        "{in}/pairwise_sharegpt.jsonl",
        "--handler-name",
        "SharegptStylePairwiseHandler",
        "--prompt-type",
        "qwen",
    ],
    "ppo_llama3": [
        "--input",
        "{in}/alpaca.jsonl",
        "--handler-name",
        "PPOAlpacaStyleInstructionHandler",
        "--prompt-type",
        "llama3",
    ],
    "process_reward": [
        "--input",
        "{in}/process_reward.jsonl",
        "--handler-name",
        "AlpacaStyleProcessRewardHandler",
        "--placeholder-token",
        "<reserved_106>",
        "--reward-tokens",
        "+",
        "-",
    ],
    "pretrain": ["--input", "{in}/text.jsonl"],  # no --handler-name: GeneralPretrainHandler
    "pretrain_eod_seq": [
        "--input",
        "{in}/text.jsonl",
        "--handler-name",
        "GeneralPretrainHandler",
        "--append-eod",
        "--seq-length",
        "48",
    ],
}


def build_tokenizers(out: Path) -> dict[str, str]:
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
    from atelier.llm.assets.build import demo_texts, train_bpe
    from conftest import SPECIALS

    kw = dict(vocab_size=600, special_tokens=SPECIALS, bos="<s>", eos="</s>")
    tok = train_bpe(demo_texts() * 3, out / "tok", pad="</s>", **kw)
    nopad = train_bpe(demo_texts() * 3, out / "nopad", pad=None, **kw)
    return {"tok": str(tok), "nopad": str(nopad)}


def resolve(argv: list[str], lengths: dict[str, list[int]]) -> list[str]:
    """{len:NAME:I} -> that length; the result is what goldens.json records."""
    out = []
    for a in argv:
        if a.startswith("{len:"):
            ref, i = a[5:-1].split(":")
            a = str(lengths[ref][int(i)])
        out.append(a)
    return out


def fill(argv: list[str], folder: Path, tokenizers: dict[str, str]) -> list[str]:
    """Placeholders filled; the suite's tokenizer unless the scenario names one."""
    out = []
    for a in argv:
        a = a.replace("{in}", str(folder))
        for key, path in tokenizers.items():
            a = a.replace("{" + key + "}", path)
        out.append(a)
    if "--tokenizer-name-or-path" not in out:
        out += ["--tokenizer-name-or-path", tokenizers["tok"]]
    return ["--tokenizer-type", "PretrainedFromHF", *out]


def main(runner: str) -> None:
    import numpy as np

    goldens = {}
    lengths: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        values = build_tokenizers(Path(tmp))
        for name in SCENARIOS:
            prefix = Path(tmp) / name / "o"
            prefix.parent.mkdir()
            argv = resolve(SCENARIOS[name], lengths)
            subprocess.run(
                [
                    sys.executable,
                    runner,
                    *fill(argv, HERE, values),
                    "--output-prefix",
                    str(prefix),
                    "--cache-dir",
                    str(Path(tmp) / "cache"),
                ],
                check=True,
                capture_output=True,
            )
            files = sorted(prefix.parent.iterdir())
            goldens[name] = {
                "argv": argv,
                "sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files},
            }
            idx = next((f for f in files if f.name.endswith("input_ids_document.idx")), None)
            if idx is not None:
                raw = idx.read_bytes()
                n = int.from_bytes(raw[18:26], "little")
                lengths[name] = np.frombuffer(raw, dtype=np.int32, count=n, offset=34).tolist()
            print(name, "ok")
        prints = {
            k: hashlib.sha256((Path(v) / "tokenizer.json").read_bytes()).hexdigest()
            for k, v in values.items()
        }
    out = {"tokenizers": prints, "scenarios": goldens}
    (HERE / "goldens.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[-1])
