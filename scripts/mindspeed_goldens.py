"""Make tests/llm/data/golden_mindspeed/goldens.json with MindSpeed-LLM's own preprocess_data.py.

MindSpeed-LLM runs on CPU for preprocessing once its NPU-side adaptor is left out:
`mindspeed_llm.tasks.megatron_adaptor` is replaced by an empty module, the
`mindspeed_llm.training` / `tasks.posttrain` packages are entered without their
`__init__` (which imports torch_npu), and the part of `patch_datasets()` that
preprocessing depends on (its IndexedDatasetBuilder wrappers: items written from
lists through a buffer) is applied as MindSpeed applies it. Nothing of MindSpeed
is committed: only the sha256 of the .bin/.idx files it writes, and the ids of a
few cases so that a failing test can show where it differs.

    git --git-dir=$M archive v2.0.0 | tar -x -C $MS_ROOT       # MindSpeed-LLM 2.0.0
    git --git-dir=$MLM archive core_r0.8.0 megatron | tar -x -C $MS_DEPS/mlm
    pip install --target $MS_DEPS/site transformers==4.43.2 datasets==2.21.0 \
        "setuptools<70" six  # then remove numpy from $MS_DEPS/site (pyarrow wants 2.x)
    MS_ROOT=... MS_DEPS=... PYTHONPATH=src python scripts/mindspeed_goldens.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests/llm/data/golden_mindspeed"
# MindSpeed's preprocess_data.py --prompt-type choices leave out minicpm3 (same as deepseek2)
REFUSED_BY_MINDSPEED = {"minicpm3"}
VARIANTS = {
    "sharegpt": ("sharegpt.json", "SharegptStyleInstructionHandler", None),
    "sharegpt_mapped": (
        "sharegpt.json",
        "SharegptStyleInstructionHandler",
        '{"system": "system", "tools": "tools"}',
    ),
    "alpaca_mapped": (
        "alpaca.json",
        "AlpacaStyleInstructionHandler",
        '{"system": "system", "history": "history"}',
    ),
    # no --prompt-type: MindSpeed's Prompter with its Python AlpacaTemplate
    "general": ("alpaca.json", "GeneralInstructionHandler", None),
}
PLAN = {"tiny": tuple(VARIANTS), "gpt2": ("sharegpt_mapped", "general")}
WITH_IDS = {("tiny", "sharegpt_mapped", t) for t in ("qwen", "llama3", "mistral", "chatglm3")}

RUNNER = r"""
import importlib.util, json, sys, types
MS, DEPS = sys.argv[1], sys.argv[2]
sys.path[:0] = [f"{DEPS}/site", f"{DEPS}/mlm", MS]
for name in ("mindspeed_llm.training", "mindspeed_llm.tasks.posttrain"):
    mod = types.ModuleType(name)
    mod.__path__ = [f"{MS}/" + name.replace(".", "/")]
    sys.modules[name] = mod
sys.modules["mindspeed_llm.tasks.megatron_adaptor"] = types.ModuleType("megatron_adaptor")
spec = importlib.util.spec_from_file_location(
    "_ms_indexed", f"{MS}/mindspeed_llm/core/datasets/indexed_dataset.py")
wrappers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wrappers)
from megatron.core.datasets import indexed_dataset
B = indexed_dataset.IndexedDatasetBuilder
B.__init__ = wrappers.indexed_dataset_builder_init_wrapper(B.__init__)
B.add_item = wrappers.add_item_wrapper(B.add_item)
B.finalize = wrappers.finalize_wrapper(B.finalize)
spec = importlib.util.spec_from_file_location("ms_preprocess", f"{MS}/preprocess_data.py")
pre = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pre)
for argv in json.load(open(sys.argv[3])):
    sys.argv = ["preprocess_data.py", *argv]
    try:
        pre.main()
        print("MS-OK", flush=True)
    except BaseException as e:
        print("MS-FAIL", repr(e)[:200].replace("\n", " "), flush=True)
"""


def _tokenizers(tmp: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (folder Atelier reads, folder MindSpeed's transformers 4.43 reads)."""
    from conftest import SPECIALS  # noqa: I001 (tests/ is on sys.path, see main)
    from tests.llm.data.golden_tokenizers import gpt2_dir

    from atelier.llm.assets.build import demo_texts, train_bpe

    tiny = train_bpe(
        demo_texts() * 3,
        tmp / "tiny",
        vocab_size=600,
        special_tokens=SPECIALS,
        bos="<s>",
        eos="</s>",
        pad="</s>",
    )
    tiny_ms = tmp / "tiny_ms"
    tiny_ms.mkdir()
    for f in tiny.iterdir():
        (tiny_ms / f.name).write_bytes(f.read_bytes())
    body = json.loads((tiny / "tokenizer.json").read_text("utf-8"))
    body["model"]["merges"] = [
        m if isinstance(m, str) else " ".join(m) for m in body["model"]["merges"]
    ]
    (tiny_ms / "tokenizer.json").write_text(json.dumps(body, ensure_ascii=False), "utf-8")
    gpt2 = gpt2_dir(tmp / "gpt2")
    return {"tiny": (tiny, tiny_ms), "gpt2": (gpt2, gpt2)}


def _digest(prefix: Path) -> dict[str, str] | None:
    from tests.llm.data.golden_tokenizers import packed_sha256

    try:
        return packed_sha256(prefix)
    except FileNotFoundError:
        return None


def _ids(prefix: Path) -> list[dict[str, list[int]]]:
    from atelier.llm.data.indexed import IndexedReader

    ids = IndexedReader.open(f"{prefix}_packed_input_ids_document")
    labels = IndexedReader.open(f"{prefix}_packed_labels_document")
    return [{"input_ids": ids[i].tolist(), "labels": labels[i].tolist()} for i in range(len(ids))]


def dump(golden: dict) -> str:
    """JSON with one line per case (a diff of the goldens stays readable)."""
    head = {k: v for k, v in golden.items() if k != "cases"}
    body = ",\n".join(json.dumps(c, ensure_ascii=False) for c in golden["cases"])
    return json.dumps(head, indent=1)[:-2] + ',\n "cases": [\n' + body + "\n ]\n}\n"


def main() -> int:
    ms_root, deps = os.environ["MS_ROOT"], os.environ["MS_DEPS"]
    sys.path[:0] = [str(REPO / "tests"), str(REPO)]
    templates = [
        t["name"]
        for t in json.loads(Path(ms_root, "configs/finetune/templates.json").read_text("utf-8"))
        if t["name"] not in REFUSED_BY_MINDSPEED
    ]
    from tests.llm.data.golden_tokenizers import fingerprint

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        toks = _tokenizers(tmp)
        cases, batch = [], []
        for tok, variants in PLAN.items():
            for variant in variants:
                data, handler, map_keys = VARIANTS[variant]
                for template in templates if variant != "general" else [None]:
                    out = tmp / "out" / f"{tok}-{variant}-{template}"
                    out.parent.mkdir(exist_ok=True)
                    argv = [
                        "--input", str(GOLDEN / data),
                        "--tokenizer-name-or-path", str(toks[tok][1]),
                        "--handler-name", handler,
                        *(["--prompt-type", template] if template else []),
                        "--output-prefix", str(out),
                        "--cache-dir", str(tmp / "cache" / out.name),
                        "--workers", "1",
                        "--log-interval", "1000",
                    ]  # fmt: skip
                    if map_keys:
                        argv += ["--map-keys", map_keys]
                    cases.append({"tokenizer": tok, "variant": variant, "template": template})
                    batch.append(argv)
        (tmp / "batch.json").write_text(json.dumps(batch))
        (tmp / "runner.py").write_text(RUNNER)
        run = subprocess.run(
            [sys.executable, str(tmp / "runner.py"), ms_root, deps, str(tmp / "batch.json")],
            capture_output=True,
            text=True,
        )
        results = [line for line in run.stdout.splitlines() if line.startswith("MS-")]
        if len(results) != len(cases):
            print(run.stderr[-4000:], file=sys.stderr)
            return 1
        for case, argv, result in zip(cases, batch, results, strict=True):
            prefix = Path(argv[argv.index("--output-prefix") + 1])
            case["mindspeed"] = result
            case["sha256"] = _digest(prefix)
            if (case["tokenizer"], case["variant"], case["template"]) in WITH_IDS:
                case["samples"] = _ids(prefix)
        golden = {
            "made_by": "MindSpeed-LLM v2.0.0 preprocess_data.py (scripts/mindspeed_goldens.py)",
            "tokenizers": {name: fingerprint(pair[0]) for name, pair in toks.items()},
            "variants": {
                k: {"data": v[0], "handler": v[1], "map_keys": v[2]} for k, v in VARIANTS.items()
            },
            "cases": cases,
        }  # fmt: skip
    (GOLDEN / "goldens.json").write_text(dump(golden), "utf-8")
    failed = [c for c in cases if c["sha256"] is None]
    print(f"{len(cases)} cases, {len(failed)} where MindSpeed wrote nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
