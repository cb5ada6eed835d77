"""Pipeline parallelism with torch.distributed.pipelining: one stage per rank, 1F1B (or GPipe).

Each rank of the ("pp", "dp", "tp") mesh builds only its stage (`stages.StageModel`, TP and
FSDP2 applied as to the whole model), wrapped in a `PipelineStage` whose send/receive
buffers are declared up front (static shapes: micro-batch x seq-length x hidden), so the
schedule never runs a probing forward pass. The global batch's GBS / (MBS x DP)
micro-batches are the schedule's micro-batches.

Numerics are the one-stage loop's: the loss of a micro-batch, computed on the last stage,
is sum(cross-entropy x loss_mask) / N with N the trained tokens of the whole global batch,
and the schedule does not rescale gradients (`scale_grads=False`), so gradients are the
same sums as without a pipeline. The loss is then sent to every stage (one all-reduce over
"pp") so rank 0 logs it. With tied embeddings the last stage's `output_layer.weight` (a
copy of the embedding, as Megatron keeps it) gets the embedding's gradient added and
vice versa (Megatron's embedding group), so the two copies stay equal; the gradient norm
counts it once.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist

from atelier.core.errors import AtelierError
from atelier.llm.train.config import TrainConfig
from atelier.llm.train.loss import masked_token_loss_sum
from atelier.llm.train.model.args import ModelArgs
from atelier.llm.train.parallelize import ParallelEnv, build_model, param_dtype
from atelier.llm.train.stages import StageSpec, stage_layers, stage_spec

Batch = dict[str, torch.Tensor]
SIDE_INPUTS = ("position_ids", "segment_ids")  # every stage needs them (rope, attention mask)


def check_pipeline(cfg: TrainConfig, num_layers: int, micro_batches: int | None = None) -> None:
    """Checks that need the model's layer count (before any process group starts) and,
    once the data-parallel size is known, the number of micro-batches."""
    pp = cfg.pipeline_model_parallel_size
    try:
        stage_layers(num_layers, pp, cfg.num_layer_list)
    except AtelierError as e:
        raise AtelierError(
            str(e)
            .replace("pp ", "pipeline_model_parallel_size ", 1)
            .replace("pass num_layer_list", "give num_layer_list")
        ) from None
    if micro_batches is not None and cfg.pipeline_schedule == "1f1b" and micro_batches < pp:
        raise AtelierError(
            f"global_batch_size {cfg.global_batch_size}: the 1F1B schedule needs at least "
            f"{pp} micro-batches (one per stage) but gets {micro_batches} = GBS / (MBS x DP); "
            "raise global_batch_size or lower micro_batch_size"
        )


class TimedStage:
    """Mixin for a PipelineStage that adds up the seconds spent computing (forward and
    backward of its micro-batches), for the bubble measurement (bench/train.py). Two
    clock reads per micro-batch; `sync` (set by the benchmark on an accelerator) makes
    the clock wait for the kernels."""

    busy_s: float = 0.0
    sync: Any = None  # the device's synchronize(), so asynchronous kernels are counted

    def _timed(self, fn, *args, **kwargs):
        if self.sync is not None:
            self.sync()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        if self.sync is not None:
            self.sync()
        self.busy_s += time.perf_counter() - t0
        return out

    def forward_maybe_with_nosync(self, *args, **kwargs):
        return self._timed(super().forward_maybe_with_nosync, *args, **kwargs)

    def backward_maybe_with_nosync(self, *args, **kwargs):
        return self._timed(super().backward_maybe_with_nosync, *args, **kwargs)


def _stage_class():
    from torch.distributed.pipelining import PipelineStage

    return type("TimedPipelineStage", (TimedStage, PipelineStage), {})


class TiedEmbedding:
    """Keeps the first stage's embedding and the last stage's output-layer copy equal:
    their gradients are summed over a group of the two ranks of each (dp, tp) cell."""

    def __init__(self, model: torch.nn.Module, spec: StageSpec, env: ParallelEnv) -> None:
        self.param: torch.Tensor | None = None
        self.group = None
        mesh = env.mesh
        if spec.size == 2:
            group = mesh["pp"].get_group()
        else:  # every rank creates every group, in the same order
            ranks = mesh.mesh  # [pp, dp, tp] global ranks
            group = None
            for d in range(ranks.shape[1]):
                for t in range(ranks.shape[2]):
                    pair = [int(ranks[0, d, t]), int(ranks[-1, d, t])]
                    g = dist.new_group(pair)
                    if env.rank in pair:
                        group = g
        if spec.first:
            self.param, self.group = model.embedding.word_embeddings.weight, group
        elif spec.last:
            self.param, self.group = model.output_layer.weight, group
            self.param.pipeline_shared = True  # counted once by the gradient norm

    def sync(self) -> None:
        p = self.param
        if p is None or p.grad is None:
            return
        g = p.grad
        if hasattr(g, "placements") and g.placements != p.placements:
            # DTensor's embedding backward may leave a replicated gradient for the
            # vocab-sharded weight; take this rank's rows (a local slice, no communication)
            g = p.grad = g.redistribute(p.device_mesh, p.placements)
        g = g.to_local() if hasattr(g, "to_local") else g
        dist.all_reduce(g, group=self.group)


def _pad(b: Batch, seq: int) -> Batch:
    """A micro-batch padded on the right to `seq` tokens (pipeline buffers have one shape);
    padding is never trained and, attention being causal, changes no other token."""
    n = b["tokens"].shape[1]
    if n == seq:
        return b
    if n > seq:
        raise AtelierError(f"a micro-batch of {n} tokens is longer than seq_length {seq}")
    out = {}
    for k, v in b.items():
        if k == "position_ids":
            extra = torch.arange(n, seq, dtype=v.dtype).expand(v.shape[0], -1)
            out[k] = torch.cat([v, extra.to(v.device)], dim=1)
        elif k == "segment_ids":
            fill = int(v.max()) + 1 if v.numel() else 1
            out[k] = torch.nn.functional.pad(v, (0, seq - n), value=fill)
        else:
            out[k] = torch.nn.functional.pad(v, (0, seq - n), value=0)
    return out


class Pipeline:
    """This rank's stage and the schedule that runs it over a global batch's micro-batches."""

    def __init__(
        self,
        model: torch.nn.Module,
        spec: StageSpec,
        args: ModelArgs,
        cfg: TrainConfig,
        env: ParallelEnv,
        micro_batches: int,
    ) -> None:
        from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe

        self.spec, self.env, self.seq = spec, env, cfg.seq_length
        self.micro_batches = micro_batches
        self.pp_group = env.mesh["pp"].get_group()
        mbs, dtype, meta = cfg.micro_batch_size, param_dtype(cfg), torch.device("meta")
        hidden = (mbs, cfg.seq_length, args.hidden_size)
        if spec.first:
            inputs = torch.empty(mbs, cfg.seq_length, dtype=torch.long, device=meta)
        else:
            inputs = torch.empty(hidden, dtype=dtype, device=meta).requires_grad_()
        if spec.last:
            outputs = torch.empty(mbs, cfg.seq_length, args.vocab_size, dtype=dtype, device=meta)
        else:
            outputs = torch.empty(hidden, dtype=dtype, device=meta).requires_grad_()
        self.stage = _stage_class()(
            model,
            spec.index,
            spec.size,
            env.device,
            input_args=inputs,
            output_args=outputs,
            group=self.pp_group,
        )
        schedule = Schedule1F1B if cfg.pipeline_schedule == "1f1b" else ScheduleGPipe
        self.schedule = schedule(self.stage, micro_batches, loss_fn=self._loss, scale_grads=False)
        self.tied = TiedEmbedding(model, spec, env) if args.tied else None
        self._count: torch.Tensor | float = 1.0
        self._scale = 1.0
        self._loss_sum = torch.zeros((), device=env.device)
        self.schedule_s = 0.0  # wall seconds inside the schedule, summed over steps

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = masked_token_loss_sum(logits, target[..., 0], target[..., 1]) / self._count
        self._loss_sum = self._loss_sum + loss.detach()
        return loss * self._scale if self._scale != 1.0 else loss

    def _inputs(self, batches: list[Batch]) -> tuple[tuple, dict, torch.Tensor | None]:
        if len(batches) != self.micro_batches:
            raise AtelierError(
                f"bug: {len(batches)} micro-batches for a schedule of {self.micro_batches}"
            )
        batches = [_pad(b, self.seq) for b in batches]
        args = (torch.cat([b["tokens"] for b in batches]),) if self.spec.first else ()
        kwargs = {k: torch.cat([b[k] for b in batches]) for k in SIDE_INPUTS if k in batches[0]}
        target = None
        if self.spec.last:
            labels = torch.cat([b["labels"] for b in batches])
            mask = torch.cat([b["loss_mask"] for b in batches]).to(labels.dtype)
            target = torch.stack([labels, mask], dim=-1)
        return args, kwargs, target

    def _total(self) -> torch.Tensor:
        """The loss summed on the last stage, on every stage."""
        total = self._loss_sum.detach().clone()
        dist.all_reduce(total, group=self.pp_group)
        self._loss_sum = torch.zeros((), device=self.env.device)
        return total

    def forward_backward(
        self, batches: list[Batch], count: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """Run the schedule over the micro-batches (gradients accumulate as without a
        pipeline); returns the loss of the global batch on every rank of the stage group."""
        args, kwargs, target = self._inputs(batches)
        self._count, self._scale = count, scale
        t0 = time.perf_counter()
        self.schedule.step(*args, target=target, return_outputs=False, **kwargs)
        self.schedule_s += time.perf_counter() - t0
        if self.tied is not None:
            self.tied.sync()
        return self._total()

    @torch.no_grad()
    def loss_sum(self, batches: list[Batch]) -> torch.Tensor:
        """Forward only: sum of the micro-batches' masked cross-entropy (evaluation)."""
        args, kwargs, target = self._inputs(batches)
        self._count, self._scale = 1.0, 1.0
        self.schedule.eval(*args, target=target, **kwargs)
        return self._total()


def build_pipeline(
    args: ModelArgs,
    source: Any,
    cfg: TrainConfig,
    env: ParallelEnv,
    micro_batches: int,
) -> tuple[torch.nn.Module, Pipeline]:
    """This rank's stage model (weights from `source`, any TP/PP layout) and its pipeline."""
    check_pipeline(cfg, args.num_layers, micro_batches)
    spec = stage_spec(args, env.pp, env.pp_rank, cfg.num_layer_list)
    model = build_model(args, source, cfg, env, stage=spec)
    return model, Pipeline(model, spec, args, cfg, env, micro_batches)
