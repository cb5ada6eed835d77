"""Shared by the parity tests: the Atelier run (any DP x TP) and the transformers reference.

Both train the same samples with the same AdamW settings, Megatron schedule and clipping;
the reference is the plain single-process loop a user would write around a
`transformers` model, with the loss normalised over the global batch's trained tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from atelier.llm.convert.sharding import unfuse_gate_up, unfuse_qkv
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


def _cat0(states: list[dict[str, torch.Tensor]], name: str) -> torch.Tensor:
    return torch.cat([s[name] for s in states])


def hf_layout(
    rank_states: list[dict[str, torch.Tensor]], heads: int, groups: int, head_dim: int, vocab: int
) -> dict[str, torch.Tensor]:
    """Gather TP rank states (megatron names) into HF-layout tensors, for comparison."""
    r0 = rank_states[0]
    out = {
        "model.embed_tokens.weight": torch.cat(
            [s["embedding.word_embeddings.weight"] for s in rank_states]
        )[:vocab],
        "model.norm.weight": r0["decoder.final_layernorm.weight"],
    }
    if "output_layer.weight" in r0:
        out["lm_head.weight"] = torch.cat([s["output_layer.weight"] for s in rank_states])[:vocab]
    layers = {int(k.split(".")[2]) for k in r0 if k.startswith("decoder.layers.")}
    for i in sorted(layers):
        p, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        q, k, v = unfuse_qkv(
            _cat0(rank_states, p + "self_attention.linear_qkv.weight"), heads, groups, head_dim
        )
        out |= {
            h + "self_attn.q_proj.weight": q,
            h + "self_attn.k_proj.weight": k,
            h + "self_attn.v_proj.weight": v,
        }
        if p + "self_attention.linear_qkv.bias" in r0:
            qb, kb, vb = unfuse_qkv(
                _cat0(rank_states, p + "self_attention.linear_qkv.bias"), heads, groups, head_dim
            )
            out |= {
                h + "self_attn.q_proj.bias": qb,
                h + "self_attn.k_proj.bias": kb,
                h + "self_attn.v_proj.bias": vb,
            }
        if p + "self_attention.q_layernorm.weight" in r0:
            out[h + "self_attn.q_norm.weight"] = r0[p + "self_attention.q_layernorm.weight"]
            out[h + "self_attn.k_norm.weight"] = r0[p + "self_attention.k_layernorm.weight"]
        out[h + "self_attn.o_proj.weight"] = torch.cat(
            [s[p + "self_attention.linear_proj.weight"] for s in rank_states], dim=1
        )
        gate, up = unfuse_gate_up([s[p + "mlp.linear_fc1.weight"] for s in rank_states])
        out |= {h + "mlp.gate_proj.weight": gate, h + "mlp.up_proj.weight": up}
        out[h + "mlp.down_proj.weight"] = torch.cat(
            [s[p + "mlp.linear_fc2.weight"] for s in rank_states], dim=1
        )
        out[h + "input_layernorm.weight"] = r0[p + "input_layernorm.weight"]
        out[h + "post_attention_layernorm.weight"] = r0[p + "pre_mlp_layernorm.weight"]
    return out


def atelier_run(cfg: TrainConfig, tokens: torch.Tensor) -> tuple[list[float], dict]:
    """Train; returns (losses, HF-layout final weights) on rank 0 (collective inside)."""
    import torch.distributed as dist

    hooks = _Collect()
    data = SampleBatches({"train": pretraining_samples(tokens)})
    result = train(cfg, hooks, data)
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, hooks.state)
    tp = cfg.tensor_model_parallel_size
    m = hooks.meta
    weights = hf_layout(states[:tp], m.num_heads, m.num_groups, m.head_dim, m.vocab_size)
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
