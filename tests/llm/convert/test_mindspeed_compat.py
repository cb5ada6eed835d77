"""MindSpeed-LLM 2.0.0's checkpoint example command lines, run with only the program name
replaced (`python convert_ckpt.py` -> `atelier llm convert`, no MODE word).

The lines are the python lines of `examples/{mcore,legacy}/{llama2,llama3,qwen15,qwen2,
qwen25,mistral,yi}/{ckpt_convert,convert_ckpt}_*.sh` at tag v2.0.0, flags verbatim; only
paths change: `./model_from_hf/NAME/` is a tiny random model of the family the script is
for, `./model_weights/NAME/` a folder under tmp, and a `--tokenizer-model` file is that
tiny model's `tokenizer.json` (no SentencePiece model ships with the test environment).

MindSpeed's whole convert_ckpt cannot run here (its megatron_adaptor patches need
torch_npu and the `mindspeed` package); its conversion code does, for the goldens of
`test_mindspeed_goldens.py`. Here the expected Megatron tensors of every example line are
rebuilt independently in `_mindspeed_rank_states` from the conventions of its writer code
(mindspeed_llm/tasks/checkpoint/models.py
`qkv_concatenate_weight`, saver.py `vocab_padding` + `torch.chunk` per TP rank, W/V
halves of fc1; Megatron core_r0.8.0's legacy GPTModel nesting) and compared tensor by
tensor (name, shape, dtype, values) with what Atelier wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from atelier.cli.main import main

from .conftest import make_hf_model
from .helpers import flat, hf_state, load_rank

HIDDEN, HEADS, GROUPS, FFN, LAYERS = 64, 16, 8, 128, 8

# (script, flags verbatim from MindSpeed-LLM v2.0.0, family of the model it is for)
HF2MG = [
    (
        "legacy/llama2/ckpt_convert_llama2_hf2legacy.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 1 --target-pipeline-parallel-size 2 "
        "--load-dir ./model_from_hf/llama-2-7b-hf/ --save-dir ./model_weights/llama-2-legacy/ "
        "--tokenizer-model ./model_from_hf/llama-2-7b-hf/tokenizer.model --model-type-hf llama2",
    ),
    (
        "legacy/llama3/ckpt_convert_llama3_hf2legacy.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 8 --target-pipeline-parallel-size 1 "
        "--load-dir ./model_from_hf/Llama3-hf/ --save-dir ./model_weights/Llama3-legacy/ "
        "--tokenizer-model ./model_from_hf/Llama3-hf/tokenizer.json --model-type-hf llama2",
    ),
    (
        "legacy/mistral/convert_ckpt_mistral_hf2legacy.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--load-dir ./model_from_hf/Mistral-hf/ --save-dir ./model_weights/Mistral-legacy/ "
        "--tokenizer-model ./model_from_hf/Mistral-hf/tokenizer.model "
        "--target-tensor-parallel-size 8 --target-pipeline-parallel-size 1 --model-type-hf llama2",
    ),
    (
        "legacy/qwen15/convert_ckpt_qwen15_hf2legacy.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 --add-qkv-bias "
        "--load-dir ./model_from_hf/qwen15-hf/ --save-dir ./model_weights/qwen15-legacy/ "
        "--tokenizer-model ./model_from_hf/qwen15-hf/tokenizer.json --model-type-hf llama2",
    ),
    (
        "legacy/yi/convert_ckpt_yi_hf2legacy.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 8 --target-pipeline-parallel-size 2 "
        "--load-dir ./model_from_hf/Yi-hf/ --save-dir ./model_weights/Yi-legacy/ "
        "--tokenizer-model ./model_from_hf/Yi-hf/tokenizer.model --params-dtype bf16 "
        "--model-type-hf llama2",
    ),
    (
        "mcore/llama2/ckpt_convert_llama2_hf2mcore.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 1 --target-pipeline-parallel-size 2 "
        "--load-dir ./model_from_hf/llama-2-7b-hf/ --save-dir ./model_weights/Llama2-mcore/ "
        "--tokenizer-model ./model_from_hf/llama-2-7b-hf/tokenizer.model --use-mcore-models "
        "--model-type-hf llama2",
    ),
    (
        "mcore/llama3/ckpt_convert_llama3_hf2mcore.sh",
        "--use-mcore-models --model-type-hf llama2 --model-type GPT --load-model-type hf "
        "--save-model-type mg --params-dtype bf16 --target-tensor-parallel-size 8 "
        "--target-pipeline-parallel-size 1 --load-dir ./model_from_hf/llama3_hf/ "
        "--save-dir ./model_weights/llama3_mcore/ "
        "--tokenizer-model ./model_from_hf/llama3_hf/tokenizer.json",
    ),
    (
        "mcore/mistral/convert_ckpt_mistral_hf2mcore.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--load-dir ./model_from_hf/Mistral-hf/ --save-dir ./model_weights/Mistral-mcore/ "
        "--tokenizer-model ./model_from_hf/Mistral-hf/tokenizer.model "
        "--target-tensor-parallel-size 8 --target-pipeline-parallel-size 1 "
        "--use-mcore-models --model-type-hf llama2",
    ),
    (
        "mcore/qwen15/ckpt_convert_qwen15_hf2mcore.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 8 --target-pipeline-parallel-size 8 "
        "--load-dir ./model_from_hf/qwen15_hf/ --save-dir ./model_weights/qwen15_mcore/ "
        "--tokenizer-model ./model_from_hf/qwen15_hf/tokenizer.model --use-mcore-models "
        "--model-type-hf llama2 --add-qkv-bias",
    ),
    (
        "mcore/qwen2/ckpt_convert_qwen2_hf2mcore.sh",
        "--use-mcore-models --model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 --add-qkv-bias "
        "--load-dir ./model_from_hf/qwen2_hf/ --save-dir ./model_weights/qwen2_mcore/ "
        "--tokenizer-model ./model_from_hf/qwen2_hf/tokenizer.json --model-type-hf llama2 "
        "--params-dtype bf16",
    ),
    (
        "mcore/qwen25/ckpt_convert_qwen25_hf2mcore.sh",
        "--use-mcore-models --model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 4 --target-pipeline-parallel-size 2 --add-qkv-bias "
        "--load-dir ./model_from_hf/qwen2.5_7b_hf/ --save-dir ./model_weights/qwen2.5_mcore/ "
        "--tokenizer-model ./model_from_hf/qwen2.5_7b_hf/tokenizer.json --model-type-hf llama2 "
        "--params-dtype bf16",
    ),
    (
        "mcore/yi/ckpt_convert_yi_hf2mcore.sh",
        "--use-mcore-models --model-type-hf llama2 --model-type GPT --load-model-type hf "
        "--save-model-type mg --params-dtype bf16 --target-tensor-parallel-size 8 "
        "--target-pipeline-parallel-size 2 --load-dir ./model_from_hf/Yi-hf/ "
        "--save-dir ./model_weights/Yi-mcore/ "
        "--tokenizer-model ./model_from_hf/Yi-hf/tokenizer.model",
    ),
]
MG2HF = [
    (
        "legacy/llama2/ckpt_convert_llama2_legacy2hf.sh",
        "--model-type GPT --load-model-type mg --save-model-type hf "
        "--load-dir ./model_weights/llama-2-legacy/ --target-tensor-parallel-size 1 "
        "--target-pipeline-parallel-size 1 --save-dir ./model_from_hf/llama-2-7b-hf/",
    ),
    (
        "legacy/llama3/ckpt_convert_llama3_legacy2hf.sh",
        "--model-type GPT --load-model-type mg --save-model-type hf --model-type-hf llama2 "
        "--load-dir ./model_weights/Llama3-legacy/ --target-tensor-parallel-size 1 "
        "--target-pipeline-parallel-size 1 --save-dir ./model_from_hf/Llama3-hf/",
    ),
    (
        "legacy/mistral/convert_ckpt_mistral_legacy2hf.sh",
        "--target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 --model-type GPT "
        "--load-model-type mg --save-model-type hf --model-type-hf llama2 "
        "--load-dir ./model_weights/Mistral-legacy/ --save-dir ./model_from_hf/Mistral-hf/",
    ),
    (
        "legacy/qwen15/convert_ckpt_qwen15_legacy2hf.sh",
        "--model-type GPT --load-model-type mg --save-model-type hf --model-type-hf llama2 "
        "--load-dir ./model_weights/qwen15-legacy/ --target-tensor-parallel-size 1 "
        "--target-pipeline-parallel-size 1 --add-qkv-bias --save-dir ./model_from_hf/qwen15-hf/",
    ),
    (
        "legacy/yi/convert_ckpt_yi_legacy2hf.sh",
        "--model-type GPT --load-model-type mg --save-model-type hf --model-type-hf llama2 "
        "--load-dir ./model_weights/Yi-legacy/ --target-tensor-parallel-size 1 "
        "--target-pipeline-parallel-size 1 --save-dir ./model_from_hf/Yi-hf/",
    ),
    (
        "mcore/llama2/ckpt_convert_llama2_mcore2hf.sh",
        "--model-type GPT --load-model-type mg --save-model-type hf "
        "--target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 "
        "--load-dir ./model_weights/Llama2-mcore/ --save-dir ./model_from_hf/llama-2-7b-hf/ "
        "--use-mcore-models",
    ),
    (
        "mcore/llama3/ckpt_convert_llama3_mcore2hf.sh",
        "--use-mcore-models --model-type-hf llama2 --model-type GPT --load-model-type mg "
        "--save-model-type hf --target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 "
        "--load-dir ./model_weights/llama3_mcore/ --save-dir ./model_from_hf/llama3_hf/",
    ),
    (
        "mcore/qwen15/ckpt_convert_qwen15_mcore2hf.sh",
        "--use-mcore-models --model-type GPT --model-type-hf llama2 --load-model-type mg "
        "--save-model-type hf --target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 "
        "--add-qkv-bias --load-dir ./model_weights/qwen15_mcore/ "
        "--save-dir ./model_from_hf/qwen15_hf/",
    ),
    (
        "mcore/qwen2/ckpt_convert_qwen2_mcore2hf.sh",
        "--use-mcore-models --model-type GPT --model-type-hf llama2 --load-model-type mg "
        "--save-model-type hf --target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 "
        "--add-qkv-bias --load-dir ./model_weights/qwen2_mcore/ "
        "--save-dir ./model_from_hf/qwen2_hf/",
    ),
    (
        "mcore/qwen25/ckpt_convert_qwen25_mcore2hf.sh",
        "--use-mcore-models --model-type GPT --model-type-hf llama2 --load-model-type mg "
        "--save-model-type hf --target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 "
        "--add-qkv-bias --load-dir ./model_weights/qwen2.5_mcore/ "
        "--save-dir ./model_from_hf/qwen2.5_7b_hf/",
    ),
    (
        "mcore/yi/ckpt_convert_yi_mcore2hf.sh",
        "--use-mcore-models --model-type-hf llama2 --model-type GPT --load-model-type mg "
        "--save-model-type hf --params-dtype bf16 --target-tensor-parallel-size 1 "
        "--target-pipeline-parallel-size 1 --load-dir ./model_weights/Yi-mcore "
        "--save-dir ./model_from_hf/Yi-hf/",
    ),
]
# Lines Atelier refuses, with the word the one-line reason must contain.
REFUSED = [
    (
        "mcore/llama2/ckpt_convert_llama2_hf2mcore_orm.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 1 --target-pipeline-parallel-size 2 "
        "--load-dir ./model_from_hf/llama-2-7b-hf-orm/ "
        "--save-dir ./model_weights/Llama2-mcore-orm/ "
        "--tokenizer-model ./model_from_hf/llama-2-7b-hf/tokenizer.model --use-mcore-models "
        "--model-type-hf llama2 --orm",
        "reward-model",
    ),
    (
        "mcore/llama2/ckpt_convert_llama2_mcore2hf_orm.sh",
        "--model-type GPT --load-model-type mg --save-model-type hf "
        "--target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 "
        "--load-dir ./model_weights/Llama2-mcore-orm/ "
        "--save-dir ./model_from_hf/llama-2-7b-hf-orm/ "
        "--use-mcore-models --orm",
        "reward-model",
    ),
    (
        "mcore/llama2/ckpt_convert_llama2_hf2mcore_qlora.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 2 --target-pipeline-parallel-size 1 "
        "--load-dir ./model_from_hf/llama-2-70b-hf/ --save-dir ./model_weights/Llama2-mcore/ "
        "--tokenizer-model ./model_from_hf/llama-2-70b-hf/tokenizer.model --use-mcore-models "
        "--qlora-nf4 --model-type-hf llama2",
        "NF4",
    ),
    (
        "mcore/llama2/ckpt_convert_llama2_optim.sh",
        "--model-type GPT --load-model-type optim --load-dir ./ckpt/llama2/ "
        "--target-tensor-parallel-size 4 --target-pipeline-parallel-size 2 "
        "--save-dir ./ckpt/llama2-7b-tp4pp2_optim_test/ --use-mcore-models --model-type-hf llama2",
        "optimizer-state",
    ),
    (
        "legacy/qwen/convert_ckpt_qwen_hf2legacy.sh",
        "--model-type GPT --load-model-type hf --save-model-type mg "
        "--target-tensor-parallel-size 8 --load-dir ./model_from_hf/qwen-7b/ "
        "--save-dir ./model_weights/qwen-7b-legacy/ "
        "--tokenizer-model ./model_from_hf/qwen-7b/qwen.tiktoken --model-type-hf qwen "
        "--add-qkv-bias",
        "QWenLMHeadModel",
    ),
]
# LoRA lines: mcore2hf_lora runs below (mg2hf's LoRA flags, shared with this form; the
# other mg->hf LoRA lines differ only in paths and names, test_lora.py covers the merge);
# mg2mg_lora (and legacy2legacy_lora, the same flags) is refused in one line.

FAMILY_OF = {  # ./model_from_hf/NAME -> (family config, dtype the hub stores it in[, tied])
    "llama-2-7b-hf": ("llama", torch.float16),
    "llama-2-7b-hf-orm": ("llama", torch.float16),
    "Llama3-hf": ("llama", torch.bfloat16),
    "llama3_hf": ("llama", torch.bfloat16),
    "Mistral-hf": ("mistral", torch.bfloat16),
    "qwen15-hf": ("qwen2", torch.bfloat16, True),  # small Qwen1.5 models tie embeddings
    "qwen15_hf": ("qwen2", torch.bfloat16, True),
    "qwen2_hf": ("qwen2", torch.bfloat16),
    "qwen2.5_7b_hf": ("qwen2", torch.bfloat16),
    "Yi-hf": ("llama", torch.bfloat16),
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _tiny(out: Path, family: str, dtype: torch.dtype, tokenizer: Path, tied: bool = False) -> None:
    """A random model every example's T and P divide (16 heads, 8 groups, 8 layers)."""
    sizes = {"hidden_size": HIDDEN, "intermediate_size": FFN, "num_attention_heads": HEADS}
    make_hf_model(
        out,
        family,
        LAYERS,
        dtype=dtype,
        tokenizer=tokenizer,
        num_key_value_heads=GROUPS,
        tie_word_embeddings=tied,
        **sizes,
    )


def _argv(flags: str, root: Path, tokenizer: Path) -> list[str]:
    """The example's flags with its paths moved under `root` (tiny models made on demand)."""
    out = []
    for tok in shlex.split(flags):
        m = re.match(r"^\./(model_from_hf|model_weights|ckpt)/([^/]+)/?(.*)$", tok)
        if not m:
            out.append(tok)
            continue
        kind, name, rest = m.groups()
        folder = root / kind / name
        if kind == "model_from_hf" and not folder.exists() and name in FAMILY_OF:
            family, dtype, *tied = FAMILY_OF[name]
            _tiny(folder, family, dtype, tokenizer, *tied)
        out.append(str(folder / "tokenizer.json") if rest else str(folder))
    return ["llm", "convert", *out]


def _flag(argv: list[str], name: str, default: str | None = None) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else default


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- MindSpeed's writer conventions, rebuilt from its code ---------------------------------


def _mindspeed_rank_states(hf: dict, tp: int, pp: int, mcore: bool, dtype: torch.dtype):
    """{(tp, pp): flat state} as MindSpeed-LLM 2.0.0's hf->mg converter lays it out."""
    ng, nh = GROUPS, HEADS
    dim = HIDDEN // nh
    leg = "language_model.encoder.layers.{i}."
    mc = "decoder.layers.{i}."
    names = {  # models.py module mappings (MegatronLegacyModel / MegatronMCoreModel)
        "in": (leg + "input_norm.weight", mc + "input_layernorm.weight"),
        "qkv": (
            leg + "self_attention.query_key_value.weight",
            mc + "self_attention.linear_qkv.weight",
        ),
        "qkv_b": (
            leg + "self_attention.query_key_value.bias",
            mc + "self_attention.linear_qkv.bias",
        ),
        "proj": (leg + "self_attention.dense.weight", mc + "self_attention.linear_proj.weight"),
        "post": (leg + "post_attention_norm.weight", mc + "pre_mlp_layernorm.weight"),
        "fc1": (leg + "mlp.dense_h_to_4h.weight", mc + "mlp.linear_fc1.weight"),
        "fc2": (leg + "mlp.dense_4h_to_h.weight", mc + "mlp.linear_fc2.weight"),
        "embed": (
            "language_model.embedding.word_embeddings.weight",
            "embedding.word_embeddings.weight",
        ),
        "final": ("language_model.encoder.final_norm.weight", "decoder.final_layernorm.weight"),
        "out": ("language_model.output_layer.weight", "output_layer.weight"),
        # tied, P > 1: the last stage's copy of the embedding (saver.set_model_postprocess)
        "head": ("word_embeddings_for_head.weight", "output_layer.weight"),
    }

    def name(key: str, i: int = 0) -> str:
        return names[key][int(mcore)].format(i=i)

    def qkv_cat(q, k, v):  # HuggingfaceModel.qkv_concatenate_weight / _bias
        parts = [q.reshape(ng, dim * nh // ng, -1), k.reshape(ng, dim, -1), v.reshape(ng, dim, -1)]
        return torch.cat(parts, dim=1).reshape(-1, *q.shape[1:])

    def pad(t):  # saver.vocab_padding to _vocab_size_with_padding(V, divisible_by=1 * tp)
        padded = math.ceil(t.shape[0] / tp) * tp
        return torch.cat([t, t[-1:].expand(padded - t.shape[0], -1)])

    per = LAYERS // pp
    states = {(t, p): {} for t in range(tp) for p in range(pp)}
    for p in range(pp):
        for j in range(per):
            i = p * per + j
            pre = f"model.layers.{i}."
            w = {k: hf[pre + k].to(dtype) for k in hf_keys(hf, pre)}
            qkv = torch.chunk(qkv_cat(*(w[f"self_attn.{x}_proj.weight"] for x in "qkv")), tp)
            proj = torch.chunk(w["self_attn.o_proj.weight"], tp, dim=1)
            gate = torch.chunk(w["mlp.gate_proj.weight"], tp)
            up = torch.chunk(w["mlp.up_proj.weight"], tp)
            fc2 = torch.chunk(w["mlp.down_proj.weight"], tp, dim=1)
            bias = None
            if "self_attn.q_proj.bias" in w:
                bias = torch.chunk(qkv_cat(*(w[f"self_attn.{x}_proj.bias"] for x in "qkv")), tp)
            for t in range(tp):
                s = states[(t, p)]
                s[name("in", j)] = w["input_layernorm.weight"]
                s[name("qkv", j)] = qkv[t]
                if bias is not None:
                    s[name("qkv_b", j)] = bias[t]
                s[name("proj", j)] = proj[t]
                s[name("post", j)] = w["post_attention_layernorm.weight"]
                s[name("fc1", j)] = torch.cat([gate[t], up[t]])
                s[name("fc2", j)] = fc2[t]
    embed = torch.chunk(pad(hf["model.embed_tokens.weight"].to(dtype)), tp)
    tied = "lm_head.weight" not in hf
    out = embed if tied else torch.chunk(pad(hf["lm_head.weight"].to(dtype)), tp)
    for t in range(tp):
        states[(t, 0)][name("embed")] = embed[t]
        states[(t, pp - 1)][name("final")] = hf["model.norm.weight"].to(dtype)
        if not tied:
            states[(t, pp - 1)][name("out")] = out[t]
        elif pp > 1:
            states[(t, pp - 1)][name("head")] = embed[t]
    return states


def hf_keys(hf: dict, prefix: str) -> list[str]:
    return [k.removeprefix(prefix) for k in hf if k.startswith(prefix)]


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_tokenizer):
    """(root, run): run(script) runs that hf->mg example line once (cached) -> (argv, rc)."""
    root = tmp_path_factory.mktemp("ms")
    runs: dict[str, tuple[list[str], int]] = {}

    def run(script: str) -> tuple[list[str], int]:
        if script not in runs:
            argv = _argv(dict(HF2MG)[script], root, tiny_tokenizer)
            runs[script] = (argv, main(argv))
        return runs[script]

    return root, run


def _producer(load_dir_flag: str) -> str:
    """The hf->mg example line whose --save-dir an mg->hf line loads."""
    want = load_dir_flag.rstrip("/")
    return next(s for s, f in HF2MG if _flag(shlex.split(f), "--save-dir").rstrip("/") == want)


@pytest.mark.parametrize("script", [s for s, _ in HF2MG])
def test_hf2mg_example_line_matches_mindspeeds_layout(converted, script):
    _, run = converted
    argv, rc = run(script)
    assert rc == 0, script
    tp = int(_flag(argv, "--target-tensor-parallel-size", "1"))
    pp = int(_flag(argv, "--target-pipeline-parallel-size", "1"))
    mcore = "--use-mcore-models" in argv
    dtype = DTYPES[_flag(argv, "--params-dtype", "fp16")]  # MindSpeed's default: fp16
    save = Path(_flag(argv, "--save-dir"))
    hf = hf_state(Path(_flag(argv, "--load-dir")))
    expected = _mindspeed_rank_states(hf, tp, pp, mcore, dtype)
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    for (t, p), want in expected.items():
        rank = f"mp_rank_{t:02d}" if pp == 1 else f"mp_rank_{t:02d}_{p:03d}"
        ck = load_rank(save / "iter_0000001" / rank / "model_optim_rng.pt")
        if not mcore:  # legacy: nested as Megatron's legacy GPTModel saves it
            assert set(ck["model"]) <= {"language_model", "word_embeddings_for_head"}
            assert set(ck["model"]["language_model"]) <= {"embedding", "encoder", "output_layer"}
        got = flat(ck["model"])
        assert sorted(got) == sorted(want), (script, rank)
        for k, v in want.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, (script, rank, k)
            assert torch.equal(got[k], v), (script, rank, k)
        args = ck["args"]
        assert args.make_vocab_size_divisible_by == 1  # MindSpeed's HF loader default
        assert args.padded_vocab_size == math.ceil(300 / tp) * tp
        assert args.params_dtype == dtype and args.use_mcore_models == mcore


@pytest.mark.parametrize("script", [s for s, _ in MG2HF])
def test_mg2hf_example_line_writes_into_the_hf_folder_mg2hf(converted, tiny_tokenizer, script):
    root, run = converted
    flags = dict(MG2HF)[script]
    assert run(_producer(_flag(shlex.split(flags), "--load-dir")))[1] == 0
    argv = _argv(flags, root, tiny_tokenizer)
    hf_dir = Path(_flag(argv, "--save-dir"))
    before = {k: v for k, v in _digests(hf_dir).items() if not k.startswith("mg2hf/")}
    original = hf_state(hf_dir)
    assert main(argv) == 0, script
    after = _digests(hf_dir)
    assert {k: v for k, v in after.items() if not k.startswith("mg2hf/")} == before
    out = hf_dir / "mg2hf"
    for f in ("config.json", "generation_config.json", "tokenizer.json"):
        assert (out / f).is_file(), f
    # the values MindSpeed's chain gives: HF -> hf2mg dtype -> --params-dtype (default fp16)
    # -> the original config's torch_dtype
    mg = Path(_flag(argv, "--load-dir"))
    stored = load_rank(next((mg / "iter_0000001").rglob("model_optim_rng.pt")))["args"].params_dtype
    via = DTYPES[_flag(argv, "--params-dtype", "fp16")]
    config = json.loads((hf_dir / "config.json").read_text())
    final = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(
        config.get("torch_dtype", config.get("dtype")), torch.float32
    )
    got = hf_state(out)
    assert sorted(got) == sorted(original)
    for k, v in original.items():
        want = v.to(stored).to(via).to(final)
        assert got[k].dtype == final and torch.equal(got[k], want), (script, k)


@pytest.mark.parametrize("script,flags,reason", REFUSED, ids=[s for s, _, _ in REFUSED])
def test_refused_example_lines_say_why_in_one_line(
    tmp_path, tiny_tokenizer, capsys, script, flags, reason
):
    argv = _argv(flags, tmp_path, tiny_tokenizer)
    if "qwen-7b" in flags:  # a Qwen-1 folder: its config names QWenLMHeadModel
        folder = tmp_path / "model_from_hf" / "qwen-7b"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"architectures": ["QWenLMHeadModel"]}))
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atelier: error:") and reason in err[0], err
    assert not (tmp_path / "model_weights").exists()


def test_model_type_hf_is_checked_against_the_model(converted, tiny_tokenizer, capsys):
    root, _ = converted
    base = _argv(dict(HF2MG)["mcore/qwen2/ckpt_convert_qwen2_hf2mcore.sh"], root, tiny_tokenizer)
    save = root / "checked"
    argv = [*base[: base.index("--save-dir") + 1], str(save), *base[base.index("--save-dir") + 2 :]]
    i = argv.index("--model-type-hf")
    for value, message in (
        ("mistral", "is a qwen2 model; use one of llama2, qwen2, qwen25"),
        ("baichuan2", "a MindSpeed-LLM model type Atelier does not convert"),
        ("gpt5", "unknown"),
    ):
        assert main([*argv[: i + 1], value, *argv[i + 2 :]]) == 2
        assert message in capsys.readouterr().err
    assert not save.exists()
    for value in ("qwen2", "qwen25"):  # friendly names of the family work like llama2
        assert main([*argv[: i + 1], value, *argv[i + 2 :], "--overwrite"]) == 0
    no_bias = [a for a in argv if a != "--add-qkv-bias"]  # Qwen2 without the flag: kept
    assert main([*no_bias, "--overwrite"]) == 0
    assert (
        "decoder.layers.0.self_attention.linear_qkv.bias"
        in load_rank(save / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt")["model"]
    )
    llama = _argv(dict(HF2MG)["mcore/llama2/ckpt_convert_llama2_hf2mcore.sh"], root, tiny_tokenizer)
    assert main([*llama, "--add-qkv-bias", "--overwrite"]) == 2
    assert "--add-qkv-bias" in capsys.readouterr().err


def test_direction_is_required_without_a_mode_word(capsys):
    assert main(["llm", "convert", "--load-dir", "a", "--save-dir", "b"]) == 2
    assert "--load-model-type" in capsys.readouterr().err
    assert (
        main(["llm", "convert", "--load-model-type", "hf", "--load-dir", "a", "--save-dir", "b"])
        == 2
    )
    assert "--save-model-type is missing" in capsys.readouterr().err


def test_mg2hf_reads_a_torch_dist_checkpoint_megatron_core_wrote(hf_model, tmp_path, capsys):
    """Megatron's default --ckpt-format (torch_dist): written by megatron-core's own
    dist_checkpointing.save from its GPTModel, read back on CPU without a process group."""
    import subprocess
    import sys

    hf = hf_model("qwen2")  # QKV bias, tied embeddings, GQA
    mg = tmp_path / "mg"
    assert main(["llm", "convert", "hf2mg", "--load-dir", str(hf), "--save-dir", str(mg)]) == 0
    dist = tmp_path / "dist"
    script = Path(__file__).with_name("megatron_core_dist_save.py")
    rank = mg / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt"
    done = subprocess.run(
        [sys.executable, "-W", "ignore", str(script), str(rank), str(dist)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (dist / "iter_0000001" / ".metadata").is_file()
    assert not list(dist.rglob("mp_rank_*"))
    out = tmp_path / "hf-out"
    argv = ["llm", "convert", "mg2hf", "--load-dir", str(dist), "--save-dir", str(out)]
    assert main([*argv, "--hf-config-dir", str(hf)]) == 0
    want, got = hf_state(hf), hf_state(out)
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    # and in MindSpeed's form, into the original folder's mg2hf/
    orig = tmp_path / "orig"
    shutil.copytree(hf, orig)
    ms = ["llm", "convert", "--load-model-type", "mg", "--save-model-type", "hf"]
    ms += ["--use-mcore-models", "--add-qkv-bias", "--params-dtype", "fp32"]
    assert main([*ms, "--load-dir", str(dist), "--save-dir", str(orig)]) == 0
    got = hf_state(orig / "mg2hf")
    assert all(torch.equal(got[k], v) for k, v in want.items())


def test_every_verb_flag_is_accepted_without_a_mode_word():
    """The MODE-less form shares the verbs' argparse actions (e.g. mg2hf's LoRA flags)."""
    import argparse

    from atelier.cli.main import build_parser

    def sub(parser, name):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices[name]

    conv = sub(sub(build_parser(), "llm"), "convert")
    for verb in ("hf2mg", "mg2hf", "mg2mg"):
        for action in sub(conv, verb)._actions:
            for flag in action.option_strings:
                assert flag in conv._option_string_actions, (verb, flag)


def test_mg2mg_without_a_mode_word_uses_mindspeeds_defaults(converted):
    """mg->mg: T/P default 1, fp16, mcore only with --use-mcore-models (as MindSpeed's saver)."""
    _, run = converted
    argv, rc = run("legacy/llama3/ckpt_convert_llama3_hf2legacy.sh")  # legacy, T=8, bf16 model
    assert rc == 0
    src = Path(_flag(argv, "--save-dir"))
    out = src.parent / "llama3-mcore-t2"
    ms = ["llm", "convert", "--model-type", "GPT", "--load-model-type", "mg"]
    ms += ["--save-model-type", "mg", "--load-dir", str(src), "--save-dir", str(out)]
    assert main([*ms, "--target-tensor-parallel-size", "2", "--use-mcore-models"]) == 0
    ranks = sorted(p.name for p in (out / "iter_0000001").iterdir())
    assert ranks == ["mp_rank_00", "mp_rank_01"]
    ck = load_rank(out / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt")
    assert ck["args"].params_dtype == torch.float16 and ck["args"].use_mcore_models
    assert "decoder.layers.0.self_attention.linear_qkv.weight" in ck["model"]
    back = src.parent / "llama3-legacy-t1"
    assert main([*ms[:-3], str(out), "--save-dir", str(back)]) == 0  # no flag: legacy, T=1
    ck = load_rank(back / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt")
    assert set(ck["model"]) == {"language_model"}


def test_virtual_pipeline_chunks_hold_megatrons_layers(converted, tiny_tokenizer):
    """`--num-layers-per-virtual-pipeline-stage 2` (the qwen15/qwen2 scripts' optional flag):
    chunk v of stage p holds layers v L/V + p n + j (megatron-core's layer offset) as
    `model{v}`, and converts back to the same Hugging Face model."""
    root, _ = converted
    flags = dict(HF2MG)["mcore/qwen2/ckpt_convert_qwen2_hf2mcore.sh"]
    flags = flags.replace("qwen2_mcore/", "qwen2_vpp/").replace(
        "--target-pipeline-parallel-size 1", "--target-pipeline-parallel-size 2"
    )
    argv = _argv(flags + " --num-layers-per-virtual-pipeline-stage 2", root, tiny_tokenizer)
    assert main(argv) == 0
    save = Path(_flag(argv, "--save-dir"))
    hf = hf_state(Path(_flag(argv, "--load-dir")))
    whole = _mindspeed_rank_states(hf, 1, 1, True, torch.bfloat16)[(0, 0)]  # global numbering
    pp, n, vp = 2, 2, LAYERS // 4
    for p in range(pp):
        ck = load_rank(save / "iter_0000001" / f"mp_rank_00_{p:03d}" / "model_optim_rng.pt")
        assert [k for k in ck if k.startswith("model")] == [f"model{v}" for v in range(vp)]
        assert ck["args"].virtual_pipeline_model_parallel_size == vp
        for v in range(vp):
            for name, t in ck[f"model{v}"].items():
                m = re.match(r"decoder\.layers\.(\d+)\.(.+)$", name)
                ref = (
                    name
                    if m is None
                    else f"decoder.layers.{v * LAYERS // vp + p * n + int(m[1])}.{m[2]}"
                )
                assert torch.equal(t, whole[ref]), (p, v, name)
            names = set(ck[f"model{v}"])
            assert ("embedding.word_embeddings.weight" in names) == (p == 0 and v == 0)
            assert ("output_layer.weight" in names) == (p == pp - 1 and v == vp - 1)
    back = root / "qwen2-vpp-hf"
    assert main(["llm", "convert", "mg2hf", "--load-dir", str(save), "--save-dir", str(back)]) == 0
    got = hf_state(back)
    assert sorted(got) == sorted(hf)
    assert all(torch.equal(got[k], v.to(torch.bfloat16)) for k, v in hf.items())


def test_lora_merge_into_megatron_is_refused_in_one_line(converted, tiny_tokenizer, capsys):
    """mcore/llama2/ckpt_convert_llama2_mg2mg_lora.sh: mg -> mg with a LoRA merge."""
    root, run = converted
    assert run("mcore/llama2/ckpt_convert_llama2_hf2mcore.sh")[1] == 0
    flags = (
        "--model-type GPT --load-model-type mg --save-model-type mg "
        "--load-dir ./model_weights/Llama2-mcore --lora-load ./ckpt/llama-7b-lora-mcore-tp1pp1 "
        "--lora-r 16 --lora-alpha 32 --lora-target-modules linear_qkv linear_proj linear_fc1 "
        "linear_fc2 --target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 "
        "--save-dir ./model_weights/llama2-7b-lora2mcore --use-mcore-models --model-type-hf llama2"
    )
    capsys.readouterr()
    assert main(_argv(flags, root, tiny_tokenizer)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lora" in err[0].lower(), err
    assert not (root / "model_weights" / "llama2-7b-lora2mcore").exists()


def test_a_foreign_mg2hf_subfolder_is_never_replaced(converted, tiny_tokenizer, capsys):
    """MindSpeed's form replaces an earlier Atelier output in SAVE/mg2hf/, nothing else."""
    root, run = converted
    assert run("mcore/yi/ckpt_convert_yi_hf2mcore.sh")[1] == 0
    argv = _argv(dict(MG2HF)["mcore/yi/ckpt_convert_yi_mcore2hf.sh"], root, tiny_tokenizer)
    mine = Path(_flag(argv, "--save-dir")) / "mg2hf"
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(argv) == 2
    assert "holds files Atelier did not write (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    shutil.rmtree(mine)


def test_lora_example_line_merges_into_the_hf_folder_mg2hf(converted, tiny_tokenizer):
    """mcore/llama2/ckpt_convert_llama2_mcore2hf_lora.sh without a MODE word: mg2hf's LoRA
    flags are shared with this form (adapters in MindSpeed's layout, as test_lora.py writes
    them, merged onto the fp16 base the hf2mcore line wrote)."""
    from .test_lora import _close, _meta, hand_merged, hf_adapters, write_lora

    root, run = converted
    argv, rc = run("mcore/llama2/ckpt_convert_llama2_hf2mcore.sh")
    assert rc == 0
    hf, base = Path(_flag(argv, "--load-dir")), Path(_flag(argv, "--save-dir"))
    adapters = hf_adapters(_meta(hf), r=16)
    lora = root / "ckpt" / "llama-2-7b-lora"
    shutil.rmtree(lora, ignore_errors=True)
    write_lora(base, lora, _meta(hf), adapters, filter_only=True, record_args=False)
    flags = (
        "--model-type GPT --use-mcore-models --load-model-type mg --save-model-type hf "
        "--load-dir ./model_weights/Llama2-mcore/ --lora-load ./ckpt/llama-2-7b-lora "
        "--lora-r 16 --lora-alpha 32 "
        "--lora-target-modules linear_qkv linear_proj linear_fc1 linear_fc2 "
        "--target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 "
        "--save-dir ./model_from_hf/llama-2-7b-hf/"
    )
    before = {k: v for k, v in _digests(hf).items() if not k.startswith("mg2hf/")}
    assert main(_argv(flags, root, tiny_tokenizer)) == 0
    assert {k: v for k, v in _digests(hf).items() if not k.startswith("mg2hf/")} == before
    got = hf_state(hf / "mg2hf")
    want = hand_merged(hf, adapters, scale=32 / 16)
    assert all(got[k].dtype == want[k].dtype for k in want)  # fp16, as the original
    _close(got, want, atol=1e-2)  # merged on the fp16 base, through fp16
