"""Shared by the parity tests: the Atelier run (any DP x TP) and the transformers reference.

Both train the same samples with the same AdamW settings, Megatron schedule and clipping;
the reference is the plain single-process loop a user would write around a
`transformers` model, with the loss normalised over the global batch's trained tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from atelier.llm.convert.state_dicts import megatron_ranks_to_hf
from atelier.llm.train.batches import SampleBatches, pretraining_samples
from atelier.llm.train.config import TrainConfig
from atelier.llm.train.loop import TrainHooks, TrainState, train
from atelier.llm.train.optim import no_weight_decay
from atelier.llm.train.parallelize import local_megatron_state
from atelier.llm.train.schedule import scheduler_from_config

SEQ, VOCAB = 32, 300


def sample_tokens(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n, SEQ + 1), generator=g)


def config(load: Path, **kw) -> TrainConfig:
    base = dict(
        load=load,
        seq_length=SEQ,
        micro_batch_size=2,
        global_batch_size=8,
        train_iters=5,
        lr=2e-3,
        min_lr=1e-4,
        lr_decay_style="cosine",
        lr_warmup_iters=1,
        weight_decay=0.1,
        clip_grad=0.05,  # small enough that clipping acts on most steps
        eval_iters=0,
        device="cpu",
        make_vocab_size_divisible_by=64,
    )
    base.update(kw)
    return TrainConfig(**base)


class _Collect(TrainHooks):
    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def on_end(self, state: TrainState, reason: str) -> None:
        self.state = local_megatron_state(state.model)
        self.meta = state.meta


def atelier_run(cfg: TrainConfig, tokens: torch.Tensor) -> tuple[list[float], dict]:
    """Train; returns (losses, HF-layout final weights) on rank 0 (collective inside)."""
    import torch.distributed as dist

    hooks = _Collect()
    data = SampleBatches({"train": pretraining_samples(tokens)})
    result = train(cfg, hooks, data)
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, hooks.state)
    tp = cfg.tensor_model_parallel_size
    weights = megatron_ranks_to_hf(states[:tp], hooks.meta)
    return result.losses, weights


def reference_run(cfg: TrainConfig, tokens: torch.Tensor) -> tuple[list[float], dict]:
    """The plain transformers loop: one process, whole global batch, torch AdamW."""
    import torch.nn.functional as F
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(cfg.load), torch_dtype=torch.float32, attn_implementation="sdpa"
    )
    # HF freezes the pad token's embedding row (nn.Embedding padding_idx); Megatron's
    # embedding has no such row, and neither has Atelier's: train it here too.
    model.get_input_embeddings().padding_idx = None
    model.train()
    decay = [p for n, p in model.named_parameters() if not no_weight_decay(n, p)]
    no_decay = [p for n, p in model.named_parameters() if no_weight_decay(n, p)]
    opt = torch.optim.AdamW(
        [{"params": decay, "wd_mult": 1.0}, {"params": no_decay, "wd_mult": 0.0}],
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
    )
    gbs = cfg.global_batch_size
    sched = scheduler_from_config(cfg, gbs)
    samples = pretraining_samples(tokens)
    losses = []
    for it in range(cfg.train_iters):
        batch = [samples[(it * gbs + i) % len(samples)] for i in range(gbs)]
        x = torch.stack([s["tokens"] for s in batch])
        y = torch.stack([s["labels"] for s in batch])
        mask = torch.stack([s["loss_mask"] for s in batch])
        sched.apply(opt.param_groups)
        logits = model(input_ids=x).logits
        ce = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none"
        )
        loss = (ce * mask.reshape(-1)).sum() / mask.sum()
        loss.backward()
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        opt.step()
        opt.zero_grad()
        sched.step(gbs)
        losses.append(float(loss.detach()))
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return losses, state
