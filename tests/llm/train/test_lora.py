"""LoRA in MindSpeed-LLM's layout: the module's arithmetic, frozen base, TP/DP invariance,
checkpoints (names, --lora-ckpt-filter, bit-identical bf16 base) and exact resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from atelier.core.errors import AtelierError
from atelier.llm.convert import Hf2MgOptions, hf2mg
from atelier.llm.convert.megatron_checkpoint import load_rank_file
from atelier.llm.train.batches import SampleBatches, pretraining_samples
from atelier.llm.train.checkpoint import prepare_load
from atelier.llm.train.checkpoint.hooks import CheckpointHooks
from atelier.llm.train.launch import launch
from atelier.llm.train.loop import TrainHooks, setup, train
from atelier.llm.train.lora import LoraSpec
from atelier.llm.train.lora.module import LoraLinear, apply_lora
from atelier.llm.train.lora.state import fresh_adapter, gather, shard
from tests.llm.convert.conftest import make_hf_model
from tests.llm.train.parity import config, sample_tokens

SPEC = LoraSpec(r=4, alpha=8.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-layer llama (untied) in HF fp32 and as hf2mg bf16 output."""
    root = tmp_path_factory.mktemp("lora")
    hf = make_hf_model(root / "hf", "llama", num_layers=2)
    hf16 = make_hf_model(root / "hf16", "llama", num_layers=2, dtype=torch.bfloat16)
    mg16 = root / "mg16"
    hf2mg(Hf2MgOptions(load_dir=hf16, save_dir=mg16, tp=1))
    return {"hf": hf, "mg16": mg16}


def _data() -> SampleBatches:
    return SampleBatches({"train": pretraining_samples(sample_tokens(16))})


class _Keep(TrainHooks):
    """Parameters (whole tensors) and requires_grad at the end of the run."""

    def on_end(self, state, reason: str) -> None:
        self.params = {
            n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for n, p in state.model.named_parameters()
        }
        self.trained = {n for n, p in state.model.named_parameters() if p.requires_grad}


def _run(cfg, with_ckpt: bool = False) -> tuple[list[float], dict, set]:
    keep = _Keep()
    hooks: list[TrainHooks] = [keep]
    if with_ckpt:
        src = prepare_load(cfg)
        hooks.insert(0, CheckpointHooks(src, Path(cfg.save) if cfg.save else None))
    from atelier.llm.train.loop import HookList

    result = train(cfg, HookList(hooks), _data())
    return result.losses, keep.params, keep.trained


def _initial(cfg) -> dict[str, torch.Tensor]:
    """Parameters straight after loading (whole tensors)."""
    state = setup(cfg)
    return {
        n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
        for n, p in state.model.named_parameters()
    }


def test_module_is_w_x_plus_scaled_b_a_x() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 6, bias=True)
    m = LoraLinear(base, r=2, alpha=6.0, dropout=0.0)
    with torch.no_grad():
        m.lora_A["default"].weight.normal_()
        m.lora_B["default"].weight.normal_()
    x = torch.randn(3, 8)
    w, b = base.weight, base.bias
    a, bb = m.lora_A["default"].weight, m.lora_B["default"].weight
    expect = x @ w.T + b + (6.0 / 2) * (x @ a.T) @ bb.T
    torch.testing.assert_close(m(x), expect, rtol=0, atol=1e-6)
    names = dict(m.named_parameters())
    assert set(names) == {
        "base_layer.weight",
        "base_layer.bias",
        "lora_A.default.weight",
        "lora_B.default.weight",
    }
    assert names["lora_A.default.weight"].shape == (2, 8)
    assert names["lora_B.default.weight"].shape == (6, 2)


def test_same_names_and_outputs_as_peft_lora_linear() -> None:
    """PEFT's own LoRA layer around the same linear: identical state-dict names, output
    and scaling (MindSpeed's adapters are PEFT's, around megatron-core's linears)."""
    import peft

    torch.manual_seed(0)
    base = nn.Linear(8, 6, bias=True)
    holder = nn.Module()
    holder.linear_qkv = nn.Linear(8, 6, bias=True)
    holder.linear_qkv.load_state_dict(base.state_dict())
    cfg = peft.LoraConfig(r=2, lora_alpha=6, target_modules=["linear_qkv"])
    ref = peft.get_peft_model(holder, cfg).base_model.model.linear_qkv
    with torch.no_grad():
        ref.lora_B["default"].weight.normal_()  # PEFT starts B at zero, as we do
    ours = LoraLinear(base, r=2, alpha=6.0, dropout=0.0)
    ours.load_state_dict(ref.state_dict())  # strict: the very same names
    x = torch.randn(5, 8)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)
    assert ours.scaling == ref.scaling["default"] == 3.0


def test_fresh_adapters_kaiming_a_zero_b_and_tp_cuts_round_trip() -> None:
    a = fresh_adapter("decoder.layers.0.mlp.linear_fc2.lora_A.default.weight", (4, 96), 1)
    assert a.abs().max() <= 1 / math.sqrt(96) and a.std() > 0.5 / math.sqrt(3 * 96)
    b = fresh_adapter("decoder.layers.0.mlp.linear_fc1.lora_B.default.weight", (192, 4), 1)
    assert not b.any()
    full = torch.arange(192 * 4.0).reshape(192, 4)
    name = "x.mlp.linear_fc1.lora_B.default.weight"
    parts = [shard(name, full, 2, r) for r in range(2)]
    # [gate; up] -> rank r holds [gate_r; up_r], like the base linear_fc1
    assert torch.equal(parts[0][:48], full[:48]) and torch.equal(parts[0][48:], full[96:144])
    assert torch.equal(gather(name, parts), full)
    name = "x.self_attention.linear_proj.lora_A.default.weight"
    full = torch.arange(4 * 64.0).reshape(4, 64)
    assert torch.equal(gather(name, [shard(name, full, 4, r) for r in range(4)]), full)
    assert shard(name, full, 2, 1).shape == (4, 32)


def test_one_pair_per_fused_linear_and_any_subset() -> None:
    from atelier.llm.train.model.args import ModelArgs
    from atelier.llm.train.model.decoder import GPTModel

    args = ModelArgs(1, 64, 96, 8, 4, 8, 300, 320, 128, 1e-5, 1e4, None, True, False, False)
    model = GPTModel(args)
    apply_lora(model, dataclasses.replace(SPEC, target_modules=("linear_qkv", "linear_fc2")))
    names = [n for n, _ in model.named_parameters() if "lora_" in n or "base_layer" in n]
    assert names == [
        "decoder.layers.0.self_attention.linear_qkv.base_layer.weight",
        "decoder.layers.0.self_attention.linear_qkv.base_layer.bias",
        "decoder.layers.0.self_attention.linear_qkv.lora_A.default.weight",
        "decoder.layers.0.self_attention.linear_qkv.lora_B.default.weight",
        "decoder.layers.0.mlp.linear_fc2.base_layer.weight",
        "decoder.layers.0.mlp.linear_fc2.lora_A.default.weight",
        "decoder.layers.0.mlp.linear_fc2.lora_B.default.weight",
    ]
    qkv_out = 8 * (8 + 2 * 4)
    assert dict(model.named_parameters())[names[3]].shape == (qkv_out, 4)


def _logits(cfg_plain, cfg_lora) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = sample_tokens(2)[:, :-1]
    out = []
    for cfg in (cfg_plain, cfg_lora):
        state = setup(cfg)
        with torch.no_grad():
            out.append(state.model(tokens))
    return out[0], out[1]


def test_fresh_adapters_leave_logits_unchanged(models: dict[str, Path]) -> None:
    plain, lora = launch(_logits, (config(models["hf"]), config(models["hf"], lora=SPEC)))
    assert torch.equal(plain, lora)


SMALL = {"train_iters": 2, "global_batch_size": 4}  # 2 micro-batches per step


@pytest.fixture(scope="module")
def tp1(models: dict[str, Path]) -> tuple[list[float], dict, set]:
    return launch(_run, (config(models["hf"], **SMALL, lora=SPEC),))


def test_only_adapters_train_and_the_base_never_changes(
    models: dict[str, Path], tp1: tuple[list[float], dict, set]
) -> None:
    _, params, trained = tp1
    assert trained == {n for n in params if ".lora_A." in n or ".lora_B." in n}
    assert len(trained) == 2 * 4 * 2  # 2 layers x 4 linears x (A, B)
    before = launch(_initial, (config(models["hf"], lora=SPEC),))
    for n in params:
        if n not in trained:
            assert torch.equal(params[n], before[n]), n  # no step, no weight decay
    assert any(params[n].any() for n in trained if ".lora_B." in n)


def _runs(*cfgs) -> list[tuple[list[float], dict, set]]:
    return [_run(cfg) for cfg in cfgs]  # one pair of processes for both layouts


def test_tp2_and_dp2_equal_tp1(models: dict[str, Path], tp1) -> None:
    tp2 = config(models["hf"], **SMALL, tensor_model_parallel_size=2, lora=SPEC)
    dp2 = config(models["hf"], **SMALL, lora=SPEC)
    for tp, (losses, params, trained) in zip((2, 1), launch(_runs, (tp2, dp2), 2), strict=True):
        assert losses == pytest.approx(tp1[0], abs=1e-6)
        assert trained == tp1[2]
        for n in trained:  # whole adapters in the TP-1 layout (fc1's B: [gate_r; up_r] per rank)
            whole = gather(n, list(params[n].chunk(tp))) if "fc1.lora_B" in n else params[n]
            torch.testing.assert_close(whole, tp1[1][n], rtol=0, atol=1e-6)


def _rank_model(save: Path, iteration: int) -> dict[str, torch.Tensor]:
    return load_rank_file(save / f"iter_{iteration:07d}/mp_rank_00/model_optim_rng.pt")["model"]


def test_bf16_base_saved_bit_identical_adapters_fp32(models: dict[str, Path], tmp_path) -> None:
    cfg = config(
        models["mg16"],
        **SMALL,
        bf16=True,
        save=tmp_path / "s",
        make_vocab_size_divisible_by=128,  # hf2mg's padding
        lora=SPEC,
    )
    launch(_run, (cfg, True))
    saved = _rank_model(tmp_path / "s", 2)
    loaded = _rank_model(models["mg16"], 1)
    assert {k.replace(".base_layer.", ".") for k in saved if "lora_" not in k} == set(loaded)
    for k, v in saved.items():
        if "lora_" in k:
            assert v.dtype == torch.float32, k
        else:
            assert torch.equal(v, loaded[k.replace(".base_layer.", ".")]), k
    args = load_rank_file(tmp_path / "s/iter_0000002/mp_rank_00/model_optim_rng.pt")["args"]
    assert (args.lora_r, args.lora_alpha, args.lora_target_modules) == (
        4,
        8.0,
        list(SPEC.target_modules),
    )


def test_ckpt_filter_saves_only_adapters_and_modules_to_save(
    models: dict[str, Path], tmp_path
) -> None:
    spec = dataclasses.replace(SPEC, ckpt_filter=True)
    launch(_run, (config(models["hf"], **SMALL, save=tmp_path / "a", lora=spec), True))
    assert all("lora_" in k for k in _rank_model(tmp_path / "a", 2))
    assert len(_rank_model(tmp_path / "a", 2)) == 16
    with pytest.raises(AtelierError, match="holds LoRA adapters only"):
        launch(setup, (config(tmp_path / "a", lora=SPEC),))
    spec = dataclasses.replace(spec, modules_to_save=("output_layer",))
    cfg = config(models["hf"], **SMALL, save=tmp_path / "b", lora=spec)
    _, _, trained = launch(_run, (cfg, True))
    assert "output_layer.weight" in trained
    keys = set(_rank_model(tmp_path / "b", 2))
    assert keys == {k for k in keys if "lora_" in k} | {"output_layer.weight"}


def test_lora_load_resume_equals_uninterrupted(models: dict[str, Path], tmp_path) -> None:
    spec = dataclasses.replace(SPEC, ckpt_filter=True)
    full = config(models["hf"], train_iters=4, global_batch_size=4, lora=spec)
    whole, _, _ = launch(_run, (full,))
    first = dataclasses.replace(full, save=tmp_path / "a", exit_interval=2)
    first.lora = dataclasses.replace(spec)
    part1, _, _ = launch(_run, (first, True))
    second = dataclasses.replace(full, save=tmp_path / "b")
    second.lora = dataclasses.replace(spec, load=tmp_path / "a")
    part2, _, _ = launch(_run, (second, True))
    assert part1 + part2 == whole  # bit-identical on CPU fp32
    again = dataclasses.replace(full, save=tmp_path / "a")  # own save: resumed the same way
    again.lora = dataclasses.replace(spec)
    part3, _, _ = launch(_run, (again, True))
    assert part3 == part2


def test_full_lora_checkpoint_loads_as_load(models: dict[str, Path], tmp_path) -> None:
    cfg = config(models["hf"], **SMALL, save=tmp_path / "s", lora=SPEC)
    _, trained, _ = launch(_run, (cfg, True))
    loaded = launch(_initial, (config(tmp_path / "s/iter_0000002", lora=SPEC),))
    for n, p in trained.items():
        assert torch.equal(loaded[n], p), n


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (LoraSpec(target_modules=("q_proj",)), "lora_target_modules q_proj: not a linear"),
        (LoraSpec(modules_to_save=("lm_head",)), "lora_modules_to_save lm_head: this model"),
        (LoraSpec(r=0), "lora_r 0: must be at least 1"),
    ],
)
def test_bad_lora_settings_are_one_line(models: dict[str, Path], spec, message) -> None:
    with pytest.raises(AtelierError, match=message) as e:
        launch(setup, (config(models["hf"], lora=spec),))
    assert "\n" not in str(e.value)


def test_lora_load_with_other_targets_is_one_line(models: dict[str, Path], tmp_path) -> None:
    launch(_run, (config(models["hf"], **SMALL, save=tmp_path / "a", lora=SPEC), True))
    spec = dataclasses.replace(SPEC, target_modules=("linear_qkv",), load=tmp_path / "a")
    with pytest.raises(AtelierError, match="an adapter not in this run"):
        launch(_run, (config(models["hf"], **SMALL, lora=spec), True))


def test_lora_with_pipeline_stages_is_one_line(models: dict[str, Path]) -> None:
    cfg = config(models["hf"], pipeline_model_parallel_size=2, lora=SPEC)
    with pytest.raises(AtelierError, match="lora with pipeline_model_parallel_size 2"):
        cfg.check()
