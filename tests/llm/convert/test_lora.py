"""LoRA merge and PEFT export (`mg2hf --lora-load ... / --save-lora-to-hf`).

LoRA checkpoints are built here the way MindSpeed-LLM saves them: adapters drawn in
Hugging Face layout (one A per fused linear, shared by its q/k/v or gate/up pieces),
sharded onto hf2mg's rank files with the table's own TP split (A replicated and B split
for column-parallel linears, A split and B replicated for row-parallel ones), base
weights renamed to `X.base_layer.weight`. The expected model is the hand computation
W + (alpha / r) B A on the Hugging Face tensors, and peft itself loads the export.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from atelier.cli.main import main
from atelier.core.errors import AtelierError
from atelier.llm.convert import (
    Hf2MgOptions,
    LoraOptions,
    LoraSpec,
    hf2mg,
    hf_to_megatron_rank,
    megatron_ranks_to_hf,
    megatron_ranks_to_peft,
    mg2hf,
)
from atelier.llm.convert.families import Split
from atelier.llm.convert.hf_checkpoint import HFSource
from atelier.llm.convert.lora import exportable_adapters, lora_targets, merged_rank
from atelier.llm.convert.sharding import shard_part

from .helpers import assert_same_state, flat, hf_state, load_rank, rank_path

ALL = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")
R, ALPHA = 4, 8.0


def _meta(hf: Path):
    src = HFSource(hf)
    src.close()
    return src.meta


def hf_adapters(meta, targets=ALL, r=R, seed=1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """HF weight name -> (A, B): one A per Megatron linear, shared by its pieces."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    parts = lora_targets(meta.fam)
    for i in range(meta.num_layers):
        for name in targets:
            part = parts[name].part
            shapes = part.piece_shapes(meta)
            a = torch.randn(r, shapes[0][1], generator=gen) * 0.3
            for template, shape in zip(part.hf, shapes, strict=True):
                b = torch.randn(shape[0], r, generator=gen) * 0.3
                out[template.format(i=i)] = (a, b)
    return out


def hand_merged(hf: Path, adapters, scale=ALPHA / R) -> dict[str, torch.Tensor]:
    state = hf_state(hf)
    for name, (a, b) in adapters.items():
        w = state[name]
        state[name] = (w.double() + scale * (b.double() @ a.double())).to(w.dtype)
    return state


def add_lora(model: dict, meta, adapters, tp: int, t: int, start: int, targets=ALL):
    """(model with `base_layer` names, adapters) of TP rank `t` of a stage starting at `start`.

    As PEFT wraps a module: everything it held (weight, bias, TE norm) moves under
    `base_layer`; A is replicated and B split for column-parallel linears, A split and B
    replicated for row-parallel ones (the table's own split of the base weight).
    """
    parts = lora_targets(meta.fam)
    model, lora = dict(model), {}
    layers = len({k.split(".")[2] for k in model if k.startswith("decoder.layers.")})
    for j in range(layers):
        for name in targets:
            part = parts[name].part
            module = parts[name].module.format(i=j)
            pieces = [adapters[tpl.format(i=start + j)] for tpl in part.hf]
            a_full = pieces[0][0]
            if part.split is Split.ROW:
                a, b = shard_part(part, [a_full], meta, tp, t), pieces[0][1]
            else:
                a, b = a_full, shard_part(part, [pc[1] for pc in pieces], meta, tp, t)
            lora[f"{module}.lora_A.default.weight"] = a.clone()
            lora[f"{module}.lora_B.default.weight"] = b.clone()
            for key in [k for k in model if k.startswith(module + ".")]:
                model[key.replace(module + ".", module + ".base_layer.", 1)] = model.pop(key)
    return model, lora, layers


def write_lora(
    base: Path,
    out: Path,
    meta,
    adapters,
    *,
    targets=ALL,
    filter_only=False,
    record_args=True,
    iteration=5,
) -> Path:
    """A LoRA checkpoint of `base` (an hf2mg output) in MindSpeed's layout."""
    tp = len({p.name.split("_")[2] for p in (base / "iter_0000001").iterdir()})
    stages = sorted({p.name[11:] for p in (base / "iter_0000001").iterdir()})
    pp = len(stages) if stages != [""] else 1
    start = 0
    for p in range(pp):
        for t in range(tp):
            ck = load_rank(rank_path(base, t, p, pp))
            model, lora, layers = add_lora(flat(ck["model"]), meta, adapters, tp, t, start, targets)
            args = argparse.Namespace(**vars(ck["args"]))
            if record_args:
                args.lora_r, args.lora_alpha = R, ALPHA
                args.lora_target_modules = list(targets)
            state = lora if filter_only else {**model, **lora}
            path = out / f"iter_{iteration:07d}" / rank_path(base, t, p, pp).parent.name
            path.mkdir(parents=True)
            torch.save(
                {"args": args, "iteration": iteration, "model": state},
                path / "model_optim_rng.pt",
            )
        start += layers
    (out / "latest_checkpointed_iteration.txt").write_text(str(iteration))
    return out


def lora_rank(lora: Path, tp: int, pp: int, pp_size: int, iteration: int = 5) -> Path:
    return (
        lora
        / f"iter_{iteration:07d}"
        / rank_path(lora, tp, pp, pp_size).parent.name
        / ("model_optim_rng.pt")
    )


def _close(a: dict, b: dict, atol: float) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def test_merged_rank_is_the_hand_computation() -> None:
    """One column- and one row-parallel linear; base bias kept; fp32 sum, one rounding."""
    from atelier.llm.convert.families import get_family

    g = torch.Generator().manual_seed(0)
    w1, bias = torch.randn(12, 8, generator=g).bfloat16(), torch.randn(12).bfloat16()
    w2 = torch.randn(8, 6, generator=g).bfloat16()
    a1, b1 = torch.randn(2, 8, generator=g), torch.randn(12, 2, generator=g)
    a2, b2 = torch.randn(2, 6, generator=g), torch.randn(8, 2, generator=g)
    qkv, proj = "decoder.layers.0.self_attention.linear_qkv", "decoder.layers.0.self_attention."
    state = {
        "embedding.word_embeddings.weight": torch.zeros(3, 8),
        qkv + ".base_layer.weight": w1,
        qkv + ".base_layer.bias": bias,
        qkv + ".lora_A.default.weight": a1,
        qkv + ".lora_B.default.weight": b1,
        qkv + ".lora_A.default._extra_state": torch.zeros(0),
        proj + "linear_proj.weight": w2,
        proj + "linear_proj.lora_A.default.weight": a2,
        proj + "linear_proj.lora_B.default.weight": b2,
    }
    got = dict(merged_rank(state, LoraSpec(2, 3.0), get_family("qwen2"), "t"))
    assert sorted(got) == sorted(
        [
            "embedding.word_embeddings.weight",
            qkv + ".weight",
            qkv + ".bias",
            proj + "linear_proj.weight",
        ]
    )
    assert torch.equal(got[qkv + ".weight"], (w1.float() + 1.5 * (b1 @ a1)).bfloat16())
    assert torch.equal(got[proj + "linear_proj.weight"], (w2.float() + 1.5 * (b2 @ a2)).bfloat16())
    assert torch.equal(got[qkv + ".bias"], bias)
    with pytest.raises(AtelierError, match=r"rank 2, but lora_r is 4; pass the run's lora_r \(2\)"):
        merged_rank(state, LoraSpec(4, 3.0), get_family("qwen2"), "t")
    with pytest.raises(AtelierError, match=r"no decoder.layers.0.mlp.linear_fc1.lora_A"):
        merged_rank(state, LoraSpec(2, 3.0, ALL), get_family("qwen2"), "t")
    # legacy spellings name the same linears; a misfit update is refused
    legacy = LoraSpec(2, 3.0, ("query_key_value", "dense"))
    assert sorted(merged_rank(state, legacy, get_family("qwen2"), "t")) == sorted(got)
    bad = {**state, proj + "linear_proj.lora_A.default.weight": torch.zeros(2, 5)}
    with pytest.raises(
        AtelierError, match=r"give a \[8, 5\] update but the base weight is \[8, 6\]"
    ):
        merged_rank(bad, LoraSpec(2, 3.0), get_family("qwen2"), "t")
    # PEFT modules_to_save: the trained copy is the weight; an adapter export refuses it
    trained = torch.randn(3, 8, generator=g)
    state["output_layer.original_module.weight"] = torch.zeros(3, 8)
    state["output_layer.modules_to_save.default.weight"] = trained
    got = dict(merged_rank(state, LoraSpec(2, 3.0), get_family("qwen2"), "t"))
    assert torch.equal(got["output_layer.weight"], trained)
    with pytest.raises(AtelierError, match=r"trained fully .*only onto a Megatron base"):
        exportable_adapters(state, "t")


@pytest.fixture
def llama_lora(hf_model, tmp_path: Path):
    """llama (8 heads, 4 groups), 4 layers: base at TP 2 x PP 2 (layers 1,3), full LoRA."""
    hf = hf_model("llama", 4)
    meta = _meta(hf)
    adapters = hf_adapters(meta)
    base = tmp_path / "base"
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=base, tp=2, pp=2, num_layer_list=[1, 3]))
    return hf, meta, adapters, base


def test_merge_equals_hand_and_tp_pp_layouts_agree(llama_lora, tmp_path: Path) -> None:
    hf, meta, adapters, base = llama_lora
    full = write_lora(base, tmp_path / "lora-full", meta, adapters)
    want = hand_merged(hf, adapters)
    # a full LoRA folder: adapters read from --load-dir itself, r/alpha from its args
    mg2hf(full, tmp_path / "m-full")
    got = hf_state(tmp_path / "m-full")
    _close(got, want, atol=1e-6)
    untouched = [k for k in want if k not in adapters]
    assert untouched and all(torch.equal(got[k], hf_state(hf)[k]) for k in untouched)
    # TP 1 x PP 1 base with the same adapters gives the same merged model
    base1 = tmp_path / "base1"
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=base1, mcore_norms="te"))
    full1 = write_lora(base1, tmp_path / "full1", meta, adapters)
    qkv = flat(load_rank(lora_rank(full1, 0, 0, 1))["model"])
    assert "decoder.layers.0.self_attention.linear_qkv.base_layer.layer_norm_weight" in qkv
    mg2hf(full1, tmp_path / "m1-full")
    lora1 = write_lora(base1, tmp_path / "lora1", meta, adapters, filter_only=True)
    mg2hf(base1, tmp_path / "m1", lora=LoraOptions(load=lora1, r=R, alpha=ALPHA))
    assert_same_state(hf_state(tmp_path / "m1"), got)  # TP 1 == TP 2 x PP 2, bit for bit
    assert_same_state(hf_state(tmp_path / "m1-full"), hf_state(tmp_path / "m1"))
    # a full LoRA save as --lora-load lends its adapters; the base is --load-dir
    mg2hf(base, tmp_path / "m-split", lora=LoraOptions(load=full))
    assert_same_state(hf_state(tmp_path / "m-split"), got)
    # a base of another TP x PP than the LoRA save: merged per projection, same result
    mg2hf(base1, tmp_path / "m-regrid", lora=LoraOptions(load=full))
    assert_same_state(hf_state(tmp_path / "m-regrid"), got)


def test_filter_only_lora_dir_with_separate_base(llama_lora, tmp_path: Path, capsys) -> None:
    hf, meta, adapters, base = llama_lora
    targets = ("linear_qkv", "linear_fc2")
    lora = write_lora(
        base,
        tmp_path / "lora",
        meta,
        adapters,
        targets=targets,
        filter_only=True,
        record_args=False,
    )
    names = flat(load_rank(lora_rank(lora, 1, 1, 2))["model"])
    assert names and all(".lora_" in n for n in names)
    wanted = {
        k: v
        for k, v in adapters.items()
        if "self_attn.o_proj" not in k and "gate" not in k and "up_proj" not in k
    }
    cmd = [
        "llm",
        "convert",
        "mg2hf",
        "--load-dir",
        str(base),
        "--lora-load",
        str(lora),
        "--lora-r",
        str(R),
        "--lora-alpha",
        str(ALPHA),
        "--lora-target-modules",
        *targets,
        "--save-dir",
        str(tmp_path / "out"),
    ]
    assert main(cmd) == 0
    _close(hf_state(tmp_path / "out"), hand_merged(hf, wanted), atol=1e-6)
    manifest = json.loads((tmp_path / "out" / ".atelier-output.json").read_text())
    assert "config.json" in manifest["files"]
    # the same adapters merged onto the Hugging Face base folder (a run that loaded HF)
    opts = LoraOptions(load=lora, r=R, alpha=ALPHA, target_modules=targets)
    mg2hf(hf, tmp_path / "out-hf", lora=opts)
    assert_same_state(hf_state(tmp_path / "out-hf"), hf_state(tmp_path / "out"))  # bit for bit
    assert (tmp_path / "out-hf" / "tokenizer.json").is_file()
    mg2hf(hf, tmp_path / "peft-hf", lora=dataclasses.replace(opts, save_to_hf=True))
    config = json.loads((tmp_path / "peft-hf" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(hf)
    with pytest.raises(AtelierError, match=r"lora_r given but load_dir .* Hugging Face folder"):
        mg2hf(hf, tmp_path / "x", lora=LoraOptions(r=R))
    # an adapters-only folder given as --load-dir says what to pass
    capsys.readouterr()
    assert main([*cmd[:4], str(lora), "--lora-r", "4", "--save-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds only LoRA adapters" in err[0] and "--lora-load" in err[0]
    assert not (tmp_path / "x").exists()


def test_modules_trained_fully_in_an_adapters_only_save(llama_lora, tmp_path: Path) -> None:
    """--lora-modules-to-save with --lora-ckpt-filter: those tensors replace the base's."""
    hf, meta, adapters, base = llama_lora
    lora = write_lora(base, tmp_path / "lora", meta, adapters, filter_only=True)
    norm = torch.randn(meta.hidden_size, generator=torch.Generator().manual_seed(5))
    for t in range(2):
        path = lora_rank(lora, t, 1, 2)
        ck = load_rank(path)
        ck["model"]["decoder.final_layernorm.weight"] = norm
        torch.save(ck, path)
    mg2hf(base, tmp_path / "m", lora=LoraOptions(load=lora))
    want = hand_merged(hf, adapters)
    want["model.norm.weight"] = norm
    _close(hf_state(tmp_path / "m"), want, atol=1e-6)
    for load, opts in (
        (base, LoraOptions(load=lora, save_to_hf=True)),
        (hf, LoraOptions(load=lora)),
    ):
        with pytest.raises(
            AtelierError, match=r"final_layernorm.weight' is a module trained fully"
        ):
            mg2hf(load, tmp_path / "x", lora=opts)
    assert not (tmp_path / "x").exists()


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.double()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_peft_export_loads_in_peft_and_matches_merged(hf_model, tmp_path: Path, family) -> None:
    """GQA (llama, 4 groups) and QKV bias + tied embeddings (qwen2), TP 2."""
    import peft
    import transformers

    hf = hf_model(family, 2)
    meta = _meta(hf)
    adapters = hf_adapters(meta, seed=3)
    base = tmp_path / "base"
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=base, tp=2))
    lora = write_lora(base, tmp_path / "lora", meta, adapters, filter_only=True)
    opts = LoraOptions(load=lora, r=R, alpha=ALPHA, target_modules=ALL)
    mg2hf(base, tmp_path / "merged", lora=opts, hf_config_dir=hf)
    assert (
        main(
            [
                "llm",
                "convert",
                "mg2hf",
                "--load-dir",
                str(lora),
                "--save-lora-to-hf",
                "--save-dir",
                str(tmp_path / "peft"),
            ]
        )
        == 0
    )
    folder = tmp_path / "peft"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == R and config["lora_alpha"] == 8
    assert config["target_modules"] == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    from safetensors.torch import load_file

    saved = load_file(str(folder / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight" in saved
    assert len(saved) == 2 * len(adapters)
    for name, (a, b) in adapters.items():  # the fused adapters came back apart exactly
        stem = "base_model.model." + name.removesuffix(".weight")
        assert torch.equal(saved[stem + ".lora_A.weight"], a)
        assert torch.equal(saved[stem + ".lora_B.weight"], b)

    ids = torch.randint(0, meta.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    base_model = transformers.AutoModelForCausalLM.from_pretrained(hf)
    plain = _logits(base_model, ids)  # before peft wraps the model in place
    with_peft = _logits(peft.PeftModel.from_pretrained(base_model, folder).eval(), ids)
    merged = _logits(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged"), ids)
    hand = transformers.AutoModelForCausalLM.from_pretrained(hf)
    hand.load_state_dict(hand_merged(hf, adapters), strict=False)
    assert (with_peft - merged).abs().max() < 1e-5
    assert (_logits(hand, ids) - merged).abs().max() < 1e-5
    assert (with_peft - plain).abs().max() > 1e-2  # the adapters matter


def test_in_memory_merge_and_export_equal_the_files(llama_lora, tmp_path: Path) -> None:
    _hf, meta, adapters, base = llama_lora
    full = write_lora(base, tmp_path / "lora", meta, adapters)
    stages = [
        [flat(load_rank(lora_rank(full, t, p, 2))["model"]) for t in range(2)] for p in range(2)
    ]
    spec = LoraSpec(R, ALPHA, ALL)
    mg2hf(full, tmp_path / "m")
    assert_same_state(megatron_ranks_to_hf(stages, meta, lora=spec), hf_state(tmp_path / "m"))
    state, config = megatron_ranks_to_peft(stages, meta, spec)
    qkv_a = "decoder.layers.0.self_attention.linear_qkv.lora_A.default.weight"
    skewed = [[dict(r) for r in stage] for stage in stages]
    skewed[1][1][qkv_a] = skewed[1][1][qkv_a] + 1
    with pytest.raises(
        AtelierError, match=r"stage 1: .*linear_qkv.lora_A differs between TP ranks"
    ):
        megatron_ranks_to_peft(skewed, meta, spec)
    mg2hf(full, tmp_path / "p", lora=LoraOptions(save_to_hf=True))
    from safetensors.torch import load_file

    assert_same_state(state, load_file(str(tmp_path / "p" / "adapter_model.safetensors")))
    assert config == json.loads((tmp_path / "p" / "adapter_config.json").read_text())


def test_bad_lora_input_is_one_line(llama_lora, tmp_path: Path, capsys) -> None:
    _hf, meta, adapters, base = llama_lora
    lora = write_lora(
        base,
        tmp_path / "lora",
        meta,
        adapters,
        targets=("linear_qkv",),
        filter_only=True,
        record_args=False,
    )

    def run(*extra: str, load: Path = base) -> str:
        capsys.readouterr()
        out = tmp_path / "out"
        code = main(
            ["llm", "convert", "mg2hf", "--load-dir", str(load), "--save-dir", str(out), *extra]
        )
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1, lines
        assert not out.exists()
        return lines[0]

    line = run(
        "--lora-load",
        str(lora),
        "--lora-r",
        "4",
        "--lora-target-modules",
        "linear_qkv",
        "linear_fc2",
    )
    assert "linear_fc2.lora_A.default.weight" in line and "--lora-target-modules" in line
    line = run("--lora-load", str(lora), "--lora-r", "8")
    assert "rank 4, but --lora-r is 8; pass the run's --lora-r (4)" in line
    line = run("--lora-r", "4")
    assert (
        line.startswith("atelier: error: --lora-r given but --load-dir") and "--lora-load" in line
    )
    line = run("--lora-load", str(lora), "--lora-r", "4", "--lora-target-modules", "linear_proj")
    assert "does not name" in line and "linear_qkv" in line
    line = run("--lora-load", str(lora), "--lora-target-modules", "mlp")
    assert "--lora-target-modules 'mlp'" in line and "linear_fc1" in line
    with pytest.raises(AtelierError, match=r"save_dir .* is the lora_load"):
        mg2hf(base, lora, lora=LoraOptions(load=lora))
    line = run("--lora-load", str(tmp_path / "nope"))
    assert "--lora-load" in line and "not a folder" in line
    # adapters whose run recorded no r/alpha, merged without flags: say which flags
    full = write_lora(base, tmp_path / "full", meta, adapters, record_args=False)
    line = run(load=full)
    assert "holds LoRA adapters" in line and "--lora-r" in line and "--save-lora-to-hf" in line


@pytest.mark.parametrize("family", ["llama31", "mistral", "qwen2", "qwen3", "qwen3tied", "yi"])
def test_every_family_in_memory_tp2_pp2(hf_model, family: str) -> None:
    """Merge equals the hand computation and the export gives back the adapters exactly."""
    hf = hf_model(family, 4)
    meta = _meta(hf)
    adapters = hf_adapters(meta, seed=7)
    state = hf_state(hf)
    stages, start = [], 0
    for p in range(2):
        ranks = []
        for t in range(2):
            rank = hf_to_megatron_rank(state, meta, 2, t, pp=2, pp_rank=p)
            model, lora, layers = add_lora(rank, meta, adapters, 2, t, start)
            ranks.append({**model, **lora})
        stages.append(ranks)
        start += layers
    spec = LoraSpec(R, ALPHA)
    _close(megatron_ranks_to_hf(stages, meta, lora=spec), hand_merged(hf, adapters), atol=1e-6)
    peft_state, config = megatron_ranks_to_peft(stages, meta, spec)
    assert len(peft_state) == 2 * len(adapters) and config["r"] == R
    for name, (a, b) in adapters.items():
        stem = "base_model.model." + name.removesuffix(".weight")
        assert torch.equal(peft_state[stem + ".lora_A.weight"], a)
        assert torch.equal(peft_state[stem + ".lora_B.weight"], b)


def test_peft_wrapping_megatron_names_gives_this_layout_and_merge() -> None:
    """peft itself wrapping modules named as megatron-core's: the names MindSpeed saves,
    and peft's own merge_and_unload equals ours (fused linear_qkv with bias, fc1, fc2)."""
    import peft
    from torch import nn

    from atelier.llm.convert.families import get_family

    h, qkv, ffn = 16, 32, 24

    def block(**linears: nn.Module) -> nn.Module:
        m = nn.Module()
        for k, v in linears.items():
            setattr(m, k, v)
        return m

    torch.manual_seed(0)
    layer = block(
        self_attention=block(linear_qkv=nn.Linear(h, qkv), linear_proj=nn.Linear(16, h, False)),
        mlp=block(linear_fc1=nn.Linear(h, 2 * ffn, False), linear_fc2=nn.Linear(ffn, h, False)),
    )
    model = block(decoder=block(layers=nn.ModuleList([layer])))
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(ALL), init_lora_weights=False)
    wrapped = peft.get_peft_model(model, config)
    state = {
        k.removeprefix("base_model.model."): v.detach().clone()
        for k, v in wrapped.state_dict().items()
    }
    qkv_name = "decoder.layers.0.self_attention.linear_qkv"
    assert {f"{qkv_name}.base_layer.weight", f"{qkv_name}.base_layer.bias"} <= set(state)
    assert f"{qkv_name}.lora_A.default.weight" in state and state[
        f"{qkv_name}.lora_B.default.weight"
    ].shape == (qkv, 4)
    state["embedding.word_embeddings.weight"] = torch.zeros(3, h)
    ours = dict(merged_rank(state, LoraSpec(4, 8.0, ALL), get_family("qwen2"), "peft"))
    theirs = wrapped.merge_and_unload().state_dict()
    assert sorted(ours) == sorted([*theirs, "embedding.word_embeddings.weight"])
    for k, v in theirs.items():
        torch.testing.assert_close(ours[k], v, atol=1e-6, rtol=0, msg=k)
    assert not torch.allclose(ours[f"{qkv_name}.weight"], state[f"{qkv_name}.base_layer.weight"])
