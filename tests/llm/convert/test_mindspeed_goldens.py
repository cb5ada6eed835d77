"""Atelier's hf->mg and mg->hf output against goldens made by MindSpeed-LLM 2.0.0's code.

`goldens/mindspeed_hf2mg.json` holds, per case and rank file, every tensor's name, shape,
dtype and sha256 as MindSpeed's converter lays it out for the integer-pattern tiny models
of `golden_models.py`. It was made by running MindSpeed's real conversion logic on CPU:
`mindspeed_llm/tasks/checkpoint/models.py` `HuggingfaceModel` (config mapping from
`configs/checkpoint/model_cfg.json`, per-group QKV fusing, gate/up), `loader_hf.py`'s
message functions, `saver.py`'s `set_model_preprocess` / `set_model_layer_*` /
`set_model_postprocess` / `set_model_output_layer` (TP chunking, W/V halves, vocabulary
padding) recorded through a stand-in for its Megatron model, and the state-dict names
from its `MegatronLegacyModel` / `MegatronMCoreModel` module mappings (legacy head copy
saved as `word_embeddings_for_head`, as Megatron's legacy GPTModel saves it). Only
building the Megatron model and `torch.save` were not run (they need MindSpeed's NPU
adaptor). None of MindSpeed's code is in this repository; the goldens are checksums,
remade with `python tests/llm/convert/make_mindspeed_goldens.py MINDSPEED_LLM_V2.0.0 OUT`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atelier.cli.main import main

from .golden_models import CASES, digest, make_golden_model
from .helpers import flat, load_rank

GOLDENS = json.loads((Path(__file__).parent / "goldens" / "mindspeed_hf2mg.json").read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_hf2mg_equals_mindspeeds_own_conversion(tmp_path, case):
    family, stored, tied, flags = CASES[case]
    hf = make_golden_model(tmp_path / "hf", family, stored, tied)
    f = flags.split()
    tp = f[f.index("-T") + 1] if "-T" in f else "1"
    pp = f[f.index("-P") + 1] if "-P" in f else "1"
    argv = ["llm", "convert", "--model-type", "GPT", "--load-model-type", "hf"]
    argv += ["--save-model-type", "mg", "--model-type-hf", "llama2", "--load-dir", str(hf)]
    argv += ["--save-dir", str(tmp_path / "mg"), "--target-tensor-parallel-size", tp]
    argv += ["--target-pipeline-parallel-size", pp, "--tokenizer-model", str(hf)]
    argv += ["--use-mcore-models"] if "--mcore" in f else []
    argv += ["--params-dtype", "bf16"] if "bf16" in f else []
    argv += ["--add-qkv-bias"] if family == "qwen2" else []
    assert main(argv) == 0
    got = {
        p.parent.name: {k: digest(v) for k, v in flat(load_rank(p)["model"]).items()}
        for p in sorted((tmp_path / "mg" / "iter_0000001").rglob("model_optim_rng.pt"))
    }
    want = GOLDENS[case]
    assert sorted(got) == sorted(want)
    for rank in want:
        assert sorted(got[rank]) == sorted(want[rank]), (case, rank)
        for name, entry in want[rank].items():
            assert got[rank][name] == entry, (case, rank, name)


MG2HF = json.loads((Path(__file__).parent / "goldens" / "mindspeed_mg2hf.json").read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_mg2hf_equals_mindspeeds_own_conversion(tmp_path, case):
    """mg -> hf of the same checkpoints, against MindSpeed's loader_mg messages, saver and
    `HuggingfaceModel.update_module` + `save_pretrained` (transformers 4.43.2, the version
    MindSpeed-LLM 2.0.0 pins): names, shapes, dtypes (the config's torch_dtype after the
    fp16 Megatron model) and values."""
    from .helpers import hf_state

    family, stored, tied, flags = CASES[case]
    hf = make_golden_model(tmp_path / "hf", family, stored, tied)
    f = flags.split()
    argv = ["llm", "convert", "--model-type", "GPT", "--load-model-type", "hf"]
    argv += ["--save-model-type", "mg", "--load-dir", str(hf), "--save-dir", str(tmp_path / "mg")]
    argv += ["--target-tensor-parallel-size", f[f.index("-T") + 1] if "-T" in f else "1"]
    argv += ["--target-pipeline-parallel-size", f[f.index("-P") + 1] if "-P" in f else "1"]
    argv += ["--use-mcore-models"] if "--mcore" in f else []
    argv += ["--params-dtype", "bf16"] if "bf16" in f else []
    bias = ["--add-qkv-bias"] if family == "qwen2" else []
    assert main([*argv, *bias]) == 0
    back = ["llm", "convert", "--model-type", "GPT", "--load-model-type", "mg"]
    back += ["--save-model-type", "hf", "--load-dir", str(tmp_path / "mg"), "--save-dir", str(hf)]
    back += ["--use-mcore-models"] if "--mcore" in f else []
    assert main([*back, *bias]) == 0
    got = {k: digest(v) for k, v in sorted(hf_state(hf / "mg2hf").items())}
    assert got == MG2HF[case]
