"""MindSpeed-LLM v2.0.0's example data scripts run with only the program name replaced.

Each line below is the python command of `examples/mcore/<family>/data_convert_*.sh`
(llama2, llama3, qwen2, qwen25, mistral, yi) as MindSpeed ships it, with
`python ./preprocess_data.py` replaced by `atelier llm preprocess` and the dataset and
model paths by tiny local ones. Every flag must be supported or accepted; the outputs
MindSpeed's code writes for such lines are checked byte for byte in
test_mindspeed_goldens.py.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atelier.cli.main import main
from atelier.llm.assets.build import demo_texts, train_bpe
from atelier.llm.data.indexed import IndexedReader

from ...conftest import SPECIALS

DATA = Path(__file__).parent / "mindspeed"

EXAMPLES = {
    "llama2_instruction": """--input {alpaca_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --workers 4 --log-interval 1000
        --tokenizer-type PretrainedFromHF --overwrite-cache
        --handler-name AlpacaStyleInstructionHandler --prompt-type llama2""",
    "llama2_instruction_pack": """--input {alpaca_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --workers 4 --log-interval 1000
        --tokenizer-type PretrainedFromHF --overwrite-cache
        --handler-name AlpacaStyleInstructionHandler --prompt-type llama2 --pack --append-eod
        --seq-length 4096""",
    "llama2_pairwise": """--input {orca} --tokenizer-type PretrainedFromHF
        --tokenizer-not-use-fast --tokenizer-name-or-path {tok} --output-prefix {out}/orca_rlhf
        --workers 4 --log-interval 1000 --handler-name AlpacaStylePairwiseHandler
        --prompt-type llama2 --seq-length 4096
        --map-keys '{{"prompt":"question", "query":"", "system":"system"}}'""",
    "llama2_ppo": """--input {alpaca_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --workers 4 --log-interval 1000
        --tokenizer-type PretrainedFromHF --overwrite-cache
        --handler-name PPOAlpacaStyleInstructionHandler --prompt-type llama2""",
    "llama2_pretrain": """--input {wiki_parquet} --tokenizer-name-or-path {tok}
        --tokenizer-type PretrainedFromHF --handler-name GeneralPretrainHandler
        --output-prefix {out}/enwiki --json-keys text --workers 4 --log-interval 1000""",
    "llama2_pretrain_pack": """--input {wiki_parquet} --tokenizer-name-or-path {tok}
        --tokenizer-type PretrainedFromHF --handler-name GeneralPretrainHandler
        --output-prefix {out}/enwiki --json-keys text --append-eod --workers 4
        --log-interval 1000""",
    "llama2_process_reward": """--input {shepherd_parquet} --tokenizer-type PretrainedFromHF
        --tokenizer-not-use-fast --tokenizer-name-or-path {tok}
        --output-prefix {out}/math_shepherd_prm --workers 4 --log-interval 1000
        --handler-name AlpacaStyleProcessRewardHandler --seq-length 4096
        --placeholder-token ки --reward-tokens + -""",
    "llama3_instruction": """--input {alpaca_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --workers 4 --log-interval 1000
        --tokenizer-type PretrainedFromHF --tokenizer-not-use-fast
        --handler-name AlpacaStyleInstructionHandler --prompt-type llama3 --seq-length 8192""",
    "llama3_instruction_pack": """--input {alpaca_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --workers 4 --log-interval 1000
        --tokenizer-type PretrainedFromHF --tokenizer-not-use-fast
        --handler-name AlpacaStyleInstructionHandler --prompt-type llama3 --seq-length 8192
        --pack --append-eod""",
    "llama3_pairwise": """--input {orca} --tokenizer-type PretrainedFromHF
        --tokenizer-not-use-fast --tokenizer-name-or-path {tok}
        --output-prefix {out}/orca_rlhf_llama3 --workers 4 --log-interval 1000
        --handler-name AlpacaStylePairwiseHandler --prompt-type llama3
        --map-keys '{{"prompt":"question", "query":"", "system":"system"}}'""",
    "llama3_ppo": """--input {descriptiveness_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/descriptiveness --workers 16 --log-interval 1000
        --tokenizer-type PretrainedFromHF --handler-name  PPOAlpacaStyleInstructionHandler
        --prompt-type llama3
        --map-keys '{{"prompt":"prompt", "query":"", "response": "prompt", "system":""}}'""",
    "llama3_pretrain": """--input {wiki_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/enwiki --workers 4 --log-interval 1000
        --tokenizer-type PretrainedFromHF""",
    "llama3_pretrain_pack": """--input {wiki_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/enwiki --workers 4 --log-interval 1000
        --tokenizer-type PretrainedFromHF --append-eod""",
    "mistral_instruction": """--input {alpaca_json} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --handler-name AlpacaStyleInstructionHandler
        --json-keys text --workers 4 --log-interval 1000 --prompt-type mistral
        --tokenizer-type PretrainedFromHF""",
    "mistral_pretrain": """--input {wiki_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/enwiki --handler-name GeneralPretrainHandler --json-keys text
        --workers 4 --log-interval 1000 --tokenizer-type PretrainedFromHF""",
    "qwen2_instruction": """--input {alpaca_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --handler-name AlpacaStyleInstructionHandler
        --tokenizer-type PretrainedFromHF --workers 16 --log-interval 1000 --prompt-type qwen""",
    "qwen2_pretrain": """--input {wiki_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --tokenizer-type PretrainedFromHF --workers 4
        --log-interval 1000""",
    "qwen25_instruction": """--input {alpaca_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --handler-name AlpacaStyleInstructionHandler
        --tokenizer-type PretrainedFromHF --workers 4 --log-interval 1000 --prompt-type qwen""",
    "qwen25_instruction_history": """--input {history_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --handler-name AlpacaStyleInstructionHandler
        --tokenizer-type PretrainedFromHF --workers 4 --log-interval 1000 --prompt-type qwen
        --map-keys '{{"prompt":"instruction","query":"input","response":"output",
        "history":"history"}}'""",
    "qwen25_instruction_pack": """--input {alpaca_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --handler-name AlpacaStyleInstructionHandler
        --tokenizer-type PretrainedFromHF --workers 4 --log-interval 1000 --prompt-type qwen
        --pack --neat-pack --seq-length 4096""",
    "qwen25_pretrain": """--input {wiki_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --tokenizer-type PretrainedFromHF --workers 4
        --log-interval 1000""",
    "yi_pretrain": """--input {wiki_parquet} --tokenizer-name-or-path {tok}
        --output-prefix {out}/alpaca --workers 4 --log-interval 1000
        --tokenizer-type PretrainedFromHF""",
}


def _records(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The scripts' datasets, tiny: parquet where the scripts read parquet."""
    d = tmp_path_factory.mktemp("inputs")
    alpaca = _records("alpaca.jsonl")[:8]
    tables = {
        "alpaca_parquet": [{k: r[k] for k in ("instruction", "input", "output")} for r in alpaca],
        "history_parquet": [
            {**r, "history": r.get("history", [])} for r in _records("alpaca_history.jsonl")[:8]
        ],
        "wiki_parquet": _records("text.jsonl")[:8],
        "descriptiveness_parquet": [{"prompt": r["instruction"]} for r in alpaca],
        "shepherd_parquet": [
            {**r, "input": r["input"].replace("<reserved_106>", "ки")}
            for r in _records("process_reward.jsonl")[:8]
        ],
    }
    out = {}
    for key, rows in tables.items():
        out[key] = str(d / f"{key}.parquet")
        pq.write_table(pa.Table.from_pylist(rows), out[key])
    out["alpaca_json"] = str(d / "alpaca_gpt4_data_zh.json")
    Path(out["alpaca_json"]).write_text(json.dumps(alpaca, ensure_ascii=False))
    out["orca"] = str(DATA / "pairwise.jsonl")
    # PRM's default step marker as one token, as in the Llama-2 tokenizer the script uses
    out["tok"] = str(
        train_bpe(
            demo_texts() * 3,
            d / "tok",
            vocab_size=600,
            special_tokens=[*SPECIALS, "ки"],
            bos="<s>",
            eos="</s>",
            pad="</s>",
        )
    )
    return out


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_line_runs(name: str, inputs: dict[str, str], tmp_path: Path) -> None:
    argv = shlex.split(EXAMPLES[name].format(out=tmp_path, **inputs))
    assert main(["llm", "preprocess", *argv]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.idx"))
    assert written, "nothing written"
    for idx in written:
        assert len(IndexedReader.open(tmp_path / idx[: -len(".idx")])) > 0
