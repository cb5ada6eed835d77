"""Loss masking, global-batch normalisation and the engine's one-line errors (one process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.core.errors import AtelierError
from atelier.llm.train.batches import SampleBatches, pretraining_samples
from atelier.llm.train.launch import launch
from atelier.llm.train.loop import setup, train_step
from tests.llm.convert.conftest import make_hf_model
from tests.llm.train.parity import config, sample_tokens


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hf_model(tmp_path_factory.mktemp("engine") / "hf", "qwen2", num_layers=1)


def _grads(hf: Path, samples: list[dict]) -> dict[str, torch.Tensor]:
    import torch.distributed as dist

    state = setup(
        config(hf, global_batch_size=2, micro_batch_size=1, train_iters=1, lr_warmup_iters=0)
    )
    model = state.model
    from atelier.llm.train.step import _forward_loss

    for s in samples:
        b = {k: v[None] for k, v in s.items()}
        _forward_loss(model, b).backward()
    out = {
        n: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
        for n, p in model.named_parameters()
    }
    dist.destroy_process_group()
    return out


def test_masked_label_changes_no_gradient(hf: Path) -> None:
    samples = pretraining_samples(sample_tokens(2))
    for s in samples:
        s["loss_mask"][:10] = 0.0  # e.g. the prompt of an SFT sample
    changed = [dict(s) for s in samples]
    changed[0]["labels"] = changed[0]["labels"].clone()
    changed[0]["labels"][:10] = (changed[0]["labels"][:10] + 7) % 300
    a, b = launch(_grads, (hf, samples)), launch(_grads, (hf, changed))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    trained = [dict(s) for s in samples]
    trained[0]["labels"] = trained[0]["labels"].clone()
    trained[0]["labels"][12] = (trained[0]["labels"][12] + 7) % 300
    c = launch(_grads, (hf, trained))
    assert not torch.equal(
        a["output_layer.weight"]
        if "output_layer.weight" in a
        else a["embedding.word_embeddings.weight"],
        c.get("output_layer.weight", c["embedding.word_embeddings.weight"]),
    )


def _steps(hf: Path, mbs: int, masks: list[torch.Tensor]) -> float:
    import torch.distributed as dist

    state = setup(
        config(hf, global_batch_size=4, micro_batch_size=mbs, train_iters=1, lr_warmup_iters=0)
    )
    samples = pretraining_samples(sample_tokens(4))
    for s, m in zip(samples, masks, strict=True):
        s["loss_mask"] = m
    data = SampleBatches({"train": samples})
    m = train_step(state, data.micro_batches("train", 0, mbs, 4, 0, 1))
    dist.destroy_process_group()
    return m.lm_loss


def test_loss_is_per_trained_token_of_the_global_batch(hf: Path) -> None:
    """Micro-batching does not reweigh samples with few trained tokens (SFT exactness)."""
    masks = [torch.ones(32), torch.zeros(32), torch.zeros(32), torch.ones(32)]
    masks[1][:3] = 1.0
    masks[2][5:30] = 1.0
    whole, split = launch(_steps, (hf, 4, masks)), launch(_steps, (hf, 1, masks))
    assert abs(whole - split) < 1e-6


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"global_batch_size": 7}, "global_batch_size 7 is not divisible by micro_batch_size 2"),
        ({"seq_length": 4096}, "seq_length 4096 is longer than the model's max position"),
        ({"tensor_model_parallel_size": 3}, "valid sizes: 1, 2, 4"),
        ({"num_layers": 5}, "num_layers 5 disagrees with the checkpoint's num_layers 1"),
    ],
)
def test_bad_input_is_one_line(hf: Path, overrides: dict, message: str) -> None:
    with pytest.raises(AtelierError, match=message) as e:
        launch(_bad_setup, (config(hf, **overrides),))
    assert "\n" not in str(e.value)


def _bad_setup(cfg) -> None:
    setup(cfg)


def test_empty_load_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtelierError, match="the folder is empty"):
        launch(_bad_setup, (config(tmp_path / "empty"),))


def _losses(cfg) -> tuple[list[float], list[float | None]]:
    from atelier.llm.train.loop import TrainHooks, train

    scales: list[float | None] = []

    class Scales(TrainHooks):
        def on_step(self, state, metrics) -> None:
            scales.append(metrics.loss_scale)

    data = SampleBatches({"train": pretraining_samples(sample_tokens(16))})
    return train(cfg, Scales(), data).losses, scales


@pytest.mark.parametrize(
    "recompute",
    [
        {"recompute_granularity": "full"},
        {"recompute_granularity": "full", "recompute_method": "block", "recompute_num_layers": 1},
        {"recompute_granularity": "selective"},
    ],
)
def test_recompute_changes_no_loss(hf: Path, recompute: dict) -> None:
    plain, _ = launch(_losses, (config(hf, train_iters=3),))
    again, _ = launch(_losses, (config(hf, train_iters=3, **recompute),))
    assert plain == again


def test_fp16_overflow_skips_the_step_and_halves_the_scale(hf: Path) -> None:
    cfg = config(hf, train_iters=3, fp16=True, initial_loss_scale=2.0**60, hysteresis=1)
    losses, scales = launch(_losses, (cfg,))
    assert scales[0] == 2.0**60 and scales[1] == 2.0**59  # overflowed, skipped, halved
    assert all(loss == loss for loss in losses)  # finite (no nan reached the weights)
