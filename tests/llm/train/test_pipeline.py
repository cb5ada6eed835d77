"""Pipeline parallelism (gloo, CPU): PP2 equals PP1, hf2mg's PP files, save and resume.

Tiny 3-layer models split unevenly as [1, 2] (or [2, 1]): per-step losses, gradient norms
and evaluation losses of a PP2 run equal the one-stage run's (Llama with 1F1B, Qwen2 with
tied embeddings, QKV bias and GPipe); an untrained PP2 save is byte-identical to hf2mg's
`mp_rank_00_00{0,1}` files (and a run loading them trains as one loading the HF folder);
PP2 x TP2 and PP2 x DP2 (4 processes) equal PP1; a run stopped after 2 of 4 iterations and
started again ends as the uninterrupted run, and mg2hf of its save equals the PP1 export.
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.hf2mg import Hf2MgOptions, hf2mg
from atelier.llm.train.batches import SampleBatches, pretraining_samples
from atelier.llm.train.launch import launch
from atelier.llm.train.loop import HookList, TrainHooks, setup, train
from tests.llm.convert.conftest import make_hf_model
from tests.llm.train.parity import config, sample_tokens

SPLIT = [1, 2]
EVAL = {"eval_iters": 1, "eval_interval": 3}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    cache: dict[str, tuple[Path, Path]] = {}

    def get(family: str) -> tuple[Path, Path]:
        if family not in cache:
            root = tmp_path_factory.mktemp(f"pp-{family}")
            hf = make_hf_model(root / "hf", family, num_layers=3)
            mg = root / "mg_pp2"
            hf2mg(Hf2MgOptions(hf, mg, pp=2, num_layer_list=SPLIT, make_vocab_size_divisible_by=64))
            cache[family] = (hf, mg)
        return cache[family]

    return get


def _data(tokens: torch.Tensor) -> SampleBatches:
    valid = pretraining_samples(tokens[:8])
    return SampleBatches({"train": pretraining_samples(tokens), "valid": valid})


def _run(cfg, tokens: torch.Tensor) -> tuple[list[float], ...]:
    result = train(cfg, None, _data(tokens))
    return result.losses, result.grad_norms, [e.lm_loss for e in result.evals]


def _resumed(cfg, tokens: torch.Tensor) -> list[float]:
    """Train with checkpoint hooks (resuming what `cfg.save` holds); the losses."""
    from atelier.llm.train.checkpoint import prepare_load
    from atelier.llm.train.checkpoint.hooks import CheckpointHooks

    losses: list[float] = []

    class Losses(TrainHooks):
        def on_step(self, state, metrics) -> None:
            losses.append(metrics.lm_loss)

    src = prepare_load(cfg)
    train(cfg, HookList([Losses(), CheckpointHooks(src, cfg.save)]), _data(tokens))
    return losses


def _save_untrained(cfg, save: Path) -> None:
    from atelier.llm.train.checkpoint import Ranks, SaveRequest, checkpoint_args, save_checkpoint

    state = setup(cfg)
    args = checkpoint_args(state.meta, tp=1, pp=2, layer_list=SPLIT, divisible_by=64)
    req = SaveRequest(save, 1, 0, args, state.meta.dtype, state.meta, {})
    save_checkpoint(req, state.model, state.optimizer, Ranks.from_mesh(state.env.mesh))


def _pp2_jobs(hf: Path, mg: Path, tmp: Path, tokens: torch.Tensor, schedule: str) -> dict:
    pp = dict(pipeline_model_parallel_size=2, num_layer_list=SPLIT, pipeline_schedule=schedule)
    out = {"hf": _run(config(hf, train_iters=3, **EVAL, **pp), tokens)}
    _save_untrained(config(mg, **pp), tmp / "bytes")
    out["mg"] = _run(config(mg, train_iters=3, finetune=True, **EVAL, **pp), tokens)
    return out


CASES = [("llama", "1f1b"), ("qwen2", "gpipe")]


def _pp2_all(cases: list[tuple[Path, Path, Path, str]], hf: Path, tmp: Path, tokens) -> dict:
    """Every two-process scenario in one launch (one process group, jobs in sequence):
    starting ranks costs more than these tiny runs."""
    out = {
        schedule: _pp2_jobs(h, mg, bytes_dir, tokens, schedule)
        for h, mg, bytes_dir, schedule in cases
    }
    out["resume"] = _resume_jobs(hf, tmp, tokens)
    return out


@pytest.fixture(scope="module")
def pp2(models, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The PP2 results of both families' schedules and of the stopped-and-resumed run."""
    tmp = tmp_path_factory.mktemp("pp2")
    cases = []
    for family, schedule in CASES:
        hf, mg = models(family)
        cases.append((hf, mg, tmp / schedule, schedule))
    hf, _ = models("qwen2")  # tied embeddings: the last stage saves the output copy
    return tmp, launch(_pp2_all, (cases, hf, tmp, sample_tokens(24)), nproc_per_node=2)


@pytest.mark.parametrize(("family", "schedule"), CASES)
def test_pp2_equals_pp1_and_loads_hf2mg_files(models, pp2, family: str, schedule: str) -> None:
    hf, mg = models(family)
    tmp, all_out = pp2
    tokens = sample_tokens(24)
    ref_losses, ref_norms, ref_evals = launch(_run, (config(hf, train_iters=3, **EVAL), tokens))
    out = all_out[schedule]
    for key in ("hf", "mg"):
        losses, norms, evals = out[key]
        assert len(losses) == 3 and len(evals) == 1
        assert abs(evals[0] - ref_evals[0]) < 1e-6, key  # forward-only schedule (eval)
        assert max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)) < 1e-6, key
        assert max(abs(a - b) for a, b in zip(norms, ref_norms, strict=True)) < 1e-5, key
    for stage in ("000", "001"):  # the stage files hf2mg wrote, byte for byte
        rank = f"iter_0000001/mp_rank_00_{stage}/model_optim_rng.pt"
        assert filecmp.cmp(tmp / schedule / "bytes" / rank, mg / rank, shallow=False), stage


def _resume_jobs(hf: Path, tmp: Path, tokens: torch.Tensor) -> dict:
    pp = dict(pipeline_model_parallel_size=2, num_layer_list=[2, 1])
    first = _resumed(config(hf, train_iters=4, save=tmp / "b", exit_interval=2, **pp), tokens)
    again = _resumed(config(hf, train_iters=4, save=tmp / "b", **pp), tokens)
    return {"first": first, "again": again}


def test_pp2_save_resume_and_mg2hf(models, pp2, tmp_path: Path) -> None:
    """Stopped after 2 of 4 iterations and started again, a PP2 run ends as the PP1 run;
    mg2hf of its save equals mg2hf of the PP1 save."""
    from atelier.llm.convert.mg2hf import mg2hf
    from atelier.llm.train.checkpoint.layout import read_tracker

    hf, _ = models("qwen2")  # tied embeddings: the last stage saves the output copy
    tokens = sample_tokens(24)
    one = tmp_path / "pp1"
    full = launch(_resumed, (config(hf, train_iters=4, save=one), tokens))
    pp2_tmp, all_out = pp2
    out = all_out["resume"]
    assert len(full) == 4 and len(out["first"]) == 2 and len(out["again"]) == 2
    got = out["first"] + out["again"]
    assert max(abs(a - b) for a, b in zip(got, full, strict=True)) < 1e-6, (got, full)
    b = pp2_tmp / "b" / "iter_0000004"
    assert read_tracker(pp2_tmp / "b") == 4
    assert sorted(p.name for p in b.iterdir() if p.name.startswith("mp_rank")) == [
        "mp_rank_00_000",
        "mp_rank_00_001",
    ]
    mg2hf(pp2_tmp / "b", tmp_path / "hf_pp2")
    mg2hf(one, tmp_path / "hf_pp1")
    from safetensors.torch import load_file

    shard = "model-00001-of-00001.safetensors"
    x = load_file(str(tmp_path / "hf_pp2" / shard))
    y = load_file(str(tmp_path / "hf_pp1" / shard))
    assert x.keys() == y.keys()
    for k in x:
        assert torch.allclose(x[k], y[k], atol=1e-6, rtol=0), k


def _pp2_x2(hf: Path, tokens: torch.Tensor, tp: int, tmp: Path) -> list[float]:
    pp = dict(pipeline_model_parallel_size=2, num_layer_list=[2, 1], tensor_model_parallel_size=tp)
    if tp > 1:  # with full recomputation of each stage's layers
        return _run(config(hf, train_iters=2, recompute_granularity="full", **pp), tokens)[0]
    # FSDP2 stages: stopped after 2 iterations, resumed through DCP (sharded optimizer)
    first = _resumed(config(hf, train_iters=4, save=tmp, exit_interval=2, **pp), tokens)
    return first + _resumed(config(hf, train_iters=4, save=tmp, **pp), tokens)


X2 = [("qwen3", 2), ("qwen2", 1)]


def _pp2_x2_all(cases: list[tuple[Path, int]], tokens: torch.Tensor, tmp: Path) -> dict:
    """Both four-process layouts in one launch (their meshes built in turn)."""
    return {tp: _pp2_x2(hf, tokens, tp, tmp / f"save{tp}") for hf, tp in cases}


@pytest.fixture(scope="module")
def pp2_x2(models, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cases = [(models(family)[0], tp) for family, tp in X2]
    tmp = tmp_path_factory.mktemp("pp2x2")
    return launch(_pp2_x2_all, (cases, sample_tokens(16), tmp), nproc_per_node=4)


@pytest.mark.parametrize(("family", "tp"), X2)
def test_pp2_with_tp2_or_dp2_four_processes_equal_pp1(models, pp2_x2, family: str, tp: int) -> None:
    """(pp, dp, tp) = (2, 1, 2): DTensor TP inside each stage (Qwen3's qk-norm partial
    gradients), layers recomputed; (2, 2, 1): FSDP2 inside each stage (Qwen2's tied copies
    sharded), saved after 2 iterations and resumed."""
    hf, _ = models(family)
    tokens = sample_tokens(16)
    iters = 2 if tp > 1 else 4
    ref = launch(_run, (config(hf, train_iters=iters), tokens))[0]
    got = pp2_x2[tp]
    assert len(got) == iters
    assert max(abs(x - y) for x, y in zip(got, ref, strict=True)) < 1e-5, (got, ref)


def _bad(cfg) -> None:
    setup(cfg)


BAD = [
    ({"num_layer_list": [2, 2]}, "num_layer_list 2,2 must have 2 positive entries"),
    ({"num_layer_list": [3]}, "num_layer_list 3: needs one entry per pipeline stage"),
    ({"num_layer_list": None}, "pipeline_model_parallel_size 2 does not divide 3 layers"),
    ({"num_layers_per_virtual_pipeline_stage": 1}, "interleaved"),
    ({"pipeline_schedule": "zb"}, "pipeline_schedule 'zb': use one of 1f1b, gpipe"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_pipeline_settings_are_one_line(models, overrides: dict, message: str) -> None:
    """Refused before any process group starts (so one process shows it)."""
    hf, _ = models("llama")
    cfg = config(hf, **{"pipeline_model_parallel_size": 2, "num_layer_list": SPLIT, **overrides})
    with pytest.raises(AtelierError, match=message) as e:
        launch(_bad, (cfg,))
    assert "\n" not in str(e.value)


def test_too_few_micro_batches_for_1f1b(models) -> None:
    hf, _ = models("llama")
    cfg = config(hf, pipeline_model_parallel_size=2, num_layer_list=SPLIT, global_batch_size=2)
    with pytest.raises(AtelierError, match="the 1F1B schedule needs at least 2 micro-batches"):
        launch(_bad, (cfg,), nproc_per_node=2)
