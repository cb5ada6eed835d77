"""`atelier llm train` pipeline flags: --pipeline-model-parallel-size (env PP),
--num-layer-list, --pipeline-schedule, and the refused virtual-pipeline flag."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from atelier.cli.llm_train import train_request
from atelier.cli.main import build_parser
from atelier.core.errors import AtelierError
from atelier.llm.train.config import TrainConfig
from tests.cli.test_llm_train_cli import FAST, _atelier, _env_job, job  # noqa: F401 (job: a fixture)

BASE = "--data-path d --train-iters 2 --load m"


def _request(line: str):
    return train_request(build_parser().parse_args(["llm", "train", *shlex.split(line)]))


def test_pipeline_flags_reach_the_config(monkeypatch) -> None:
    monkeypatch.delenv("PP", raising=False)
    c = _request(
        f"{BASE} --pipeline-model-parallel-size 2 --num-layer-list 1,2 --pipeline-schedule gpipe"
    ).config
    assert c["pipeline_model_parallel_size"] == 2 and c["num_layer_list"] == [1, 2]
    assert c["pipeline_schedule"] == "gpipe"
    TrainConfig(**c).check()  # a valid pipeline config


def test_env_pp(monkeypatch) -> None:
    monkeypatch.setenv("PP", "4")
    assert _request(BASE).config["pipeline_model_parallel_size"] == 4
    monkeypatch.setenv("PP", "2")  # the flag wins
    c = _request(f"{BASE} --pipeline-model-parallel-size 1").config
    assert c["pipeline_model_parallel_size"] == 1


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("--num-layers-per-virtual-pipeline-stage 2", "interleaved"),
        ("--num-layer-list 1,x", "--num-layer-list '1,x': expected integers"),
    ],
)
def test_refused_pipeline_settings(monkeypatch, extra: str, needle: str) -> None:
    monkeypatch.delenv("PP", raising=False)
    with pytest.raises(AtelierError, match=needle):
        TrainConfig(**_request(f"{BASE} --pipeline-model-parallel-size 2 {extra}").config).check()


def test_env_form_pp2_trains_saves_stages_and_converts(job, tmp_path: Path) -> None:  # noqa: F811
    """The guide's form with PP=2 on two local processes: every stage's rank file is
    saved and CONVERT_MG2HF's folder (read from the PP save) loads in transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    save = tmp_path / "save"
    env = {**_env_job(job, save, 3), "PP": "2", "CONVERT_MG2HF": "True"}
    r = _atelier(*FAST, "--nproc-per-node", "2", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    it = save / "iter_0000003"
    assert sorted(p.name for p in it.glob("mp_rank_*")) == ["mp_rank_00_000", "mp_rank_00_001"]
    model = AutoModelForCausalLM.from_pretrained(save / "mg2hf_iteration3")
    with torch.no_grad():
        out = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)
