"""What a run reports: Megatron's log line, a progress bar, TensorBoard, and metrics.jsonl.

Rank 0 reports for the run (the loop's metrics are already global). Every iteration:
- `--log-file metrics.jsonl` gets one JSON object (a stable interface, see docs/llm-train.md):
  `iteration`, `consumed_samples`, `lm_loss`, `lr`, `grad_norm`, `loss_scale`,
  `tokens_per_s`, `step_time_s`, `tflops` (per device), `mfu` (null where the peak is not
  known), `mem_gb`, `skipped`; evaluations add an object with `valid_lm_loss`, `valid_ppl`;
- `--tensorboard-dir` gets scalars under Megatron's tags (`lm loss`, `learning-rate`,
  `grad-norm`, `loss-scale`, `batch-size`, `iteration-time`, `throughput`, and the
  `... vs samples` variants), written by torch.utils.tensorboard as Megatron does;
- every `--log-interval` iterations, one Megatron-style line on stdout (averages over the
  interval); on a terminal a progress bar on stderr as well.
FLOPs follow Megatron-LM's `num_floating_point_operations` (dense GPT, SwiGLU, GQA; the
full attention matrix is counted, as Megatron does).
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any, TextIO

import torch

from atelier.core.errors import AtelierError
from atelier.core.progress import interactive, progress_bar
from atelier.llm.train.hooks import EvalMetrics, StepMetrics, TrainHooks, TrainState

# Dense bf16/fp16 tensor-core peaks (TFLOP/s per device) from the vendors' data sheets.
PEAK_TFLOPS = {
    "H100 SXM": 989.5,
    "H100 80GB HBM3": 989.5,
    "H100 PCIE": 756.0,
    "H100": 989.5,
    "H200": 989.5,
    "H800": 989.5,
    "H20": 148.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "L4": 121.0,
    "V100": 125.0,
}


def peak_tflops(device: torch.device, low_precision: bool) -> float | None:
    """The device's peak for the run's precision, or None when not known (CPU, fp32, NPU).

    `ATELIER_PEAK_TFLOPS` overrides the table (e.g. for an Ascend part).
    """
    override = os.environ.get("ATELIER_PEAK_TFLOPS")
    if override:
        try:
            return float(override)
        except ValueError:
            raise AtelierError(f"ATELIER_PEAK_TFLOPS={override!r}: must be a number") from None
    if device.type != "cuda" or not low_precision:
        return None
    name = torch.cuda.get_device_name(device).upper()
    for key, value in PEAK_TFLOPS.items():  # most specific first
        if key in name:
            return value
    return None


def flops_per_iteration(state: TrainState) -> float:
    """Megatron-LM's FLOPs of one iteration (forward and backward) for the whole batch."""
    a, cfg = state.model_args, state.cfg
    h, layers, s = a.hidden_size, a.num_layers, cfg.seq_length
    q_ratio = a.num_heads * a.head_dim / h
    attention = (1 + a.num_groups / a.num_heads + s / h) * q_ratio
    mlp = a.ffn_hidden_size / h * 1.5  # SwiGLU: three matrices
    logits = a.padded_vocab_size / (2 * layers * h)
    return 12.0 * state.global_batch_size * s * layers * h * h * (attention + mlp + logits)


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process: the device allocator's, or the CPU process's RSS."""
    if device.type in ("cuda", "npu"):
        mod = torch.get_device_module(device.type)
        return mod.max_memory_allocated(device) / 1e9
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * (1 if sys.platform == "darwin" else 1024) / 1e9


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AtelierError(
            f"tensorboard_dir {folder}: needs the tensorboard package "
            "(pip install tensorboard, or atelier[llm])"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(folder))


class MetricsHooks(TrainHooks):
    """Reporting on rank 0; other ranks do nothing."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.jsonl: TextIO | None = None
        self.tb: Any = None
        self.bar: Any = None
        self.bar_ctx: Any = None
        self.window: list[StepMetrics] = []
        self.flops = 0.0
        self.peak: float | None = None
        self.world = 1

    def on_start(self, state: TrainState) -> None:
        if not state.env.is_main:
            return
        cfg = state.cfg
        self.world = state.env.world_size
        self.flops = flops_per_iteration(state)
        self.peak = peak_tflops(state.env.device, cfg.bf16 or cfg.fp16)
        if cfg.log_file is not None:
            path = Path(cfg.log_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.jsonl = path.open("a", encoding="utf-8")  # a resumed run continues it
            except OSError as e:
                raise AtelierError(f"log_file {path}: cannot write ({e.strerror})") from None
        if cfg.tensorboard_dir is not None:
            self.tb = _tensorboard(Path(cfg.tensorboard_dir))
        if interactive():
            self.bar_ctx = progress_bar("train", state.total_iters, unit="iterations")
            self.bar = self.bar_ctx.__enter__()
            self.bar.update(0, completed=state.iteration)

    def record(self, state: TrainState, m: StepMetrics) -> dict[str, Any]:
        tflops = self.flops / max(m.step_time_s, 1e-12) / self.world / 1e12
        return {
            "iteration": m.iteration,
            "consumed_samples": m.consumed_samples,
            "lm_loss": m.lm_loss,
            "lr": m.lr,
            "grad_norm": m.grad_norm,
            "loss_scale": m.loss_scale,
            "tokens_per_s": m.tokens_per_s,
            "step_time_s": m.step_time_s,
            "tflops": tflops,
            "mfu": tflops / self.peak if self.peak else None,
            "mem_gb": peak_memory_gb(state.env.device),
            "skipped": m.skipped,
        }

    def on_step(self, state: TrainState, metrics: StepMetrics) -> None:
        if not state.env.is_main:
            return
        rec = self.record(state, metrics)
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(rec) + "\n")
            self.jsonl.flush()
        if self.tb is not None:
            self._tensorboard(state, rec)
        self.window.append(metrics)
        if self.bar is not None:
            self.bar.update(0, completed=metrics.iteration, status=f"loss {metrics.lm_loss:.4f}")
        if metrics.iteration % state.cfg.log_interval == 0:
            self.out.write(self.line(state, rec) + "\n")
            self.out.flush()
            self.window = []

    def _tensorboard(self, state: TrainState, rec: dict[str, Any]) -> None:
        it, samples = rec["iteration"], rec["consumed_samples"]
        scalars = {
            "lm loss": rec["lm_loss"],
            "learning-rate": rec["lr"],
            "grad-norm": rec["grad_norm"],
            "batch-size": state.global_batch_size,
            "iteration-time": rec["step_time_s"],
            "throughput": rec["tflops"],
        }
        if rec["loss_scale"] is not None:
            scalars["loss-scale"] = rec["loss_scale"]
        for tag, value in scalars.items():
            self.tb.add_scalar(tag, value, it)
            if tag in ("lm loss", "learning-rate", "grad-norm", "loss-scale", "batch-size"):
                self.tb.add_scalar(f"{tag} vs samples", value, samples)
        self.tb.flush()

    def line(self, state: TrainState, rec: dict[str, Any]) -> str:
        """Megatron's log line, loss averaged over the interval, throughput over it."""
        w = self.window
        loss = sum(m.lm_loss for m in w) / len(w)
        secs = sum(m.step_time_s for m in w)
        tokens = sum(m.tokens for m in w)
        skipped = sum(m.skipped for m in w)
        tflops = self.flops * len(w) / max(secs, 1e-12) / self.world / 1e12
        parts = [
            f" iteration {rec['iteration']:8d}/{state.total_iters:8d}",
            f"consumed samples: {rec['consumed_samples']:12d}",
            f"elapsed time per iteration (ms): {1000 * secs / len(w):.1f}",
            f"learning rate: {rec['lr']:.6E}",
            f"global batch size: {state.global_batch_size:5d}",
            f"lm loss: {loss:.6E}",
        ]
        if rec["loss_scale"] is not None:
            parts.append(f"loss scale: {rec['loss_scale']:.1f}")
        parts += [
            f"grad norm: {rec['grad_norm']:.3f}",
            f"number of skipped iterations: {skipped:3d}",
            f"tokens/s: {tokens / max(secs, 1e-12):.1f}",
            f"TFLOP/s per device: {tflops:.2f}",
        ]
        if self.peak:
            parts.append(f"MFU: {100 * tflops / self.peak:.1f}%")
        parts.append(f"memory (GB): {rec['mem_gb']:.2f}")
        return " | ".join(parts) + " |"

    def on_eval(self, state: TrainState, metrics: EvalMetrics) -> None:
        if not state.env.is_main:
            return
        self.out.write(
            f" validation loss at iteration {metrics.iteration} | lm loss value: "
            f"{metrics.lm_loss:.6E} | lm loss PPL: {metrics.perplexity:.6E} |\n"
        )
        self.out.flush()
        if self.jsonl is not None:
            rec = {
                "iteration": metrics.iteration,
                "valid_lm_loss": metrics.lm_loss,
                "valid_ppl": metrics.perplexity,
            }
            self.jsonl.write(json.dumps(rec) + "\n")
            self.jsonl.flush()
        if self.tb is not None:
            self.tb.add_scalar("lm loss validation", metrics.lm_loss, metrics.iteration)
            self.tb.add_scalar("lm loss validation ppl", metrics.perplexity, metrics.iteration)
            self.tb.flush()

    def on_end(self, state: TrainState, reason: str) -> None:
        if self.bar_ctx is not None:
            self.bar_ctx.__exit__(None, None, None)
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
