"""Training throughput: Atelier's trainer vs transformers + FSDP2, same model, data and steps.

Both engines train the same Llama shape on the same random tokens with the same micro/global
batch, sequence length, AdamW and clipping, in the same number of processes (each engine in
fresh processes, so peak memory is its own). The baseline is the ordinary PyTorch way:
`transformers.LlamaForCausalLM` (SDPA attention), `fully_shard` on every decoder layer and
the root, `model(input_ids, labels=...)`, gradient accumulation, `clip_grad_norm_`, AdamW.

    python bench/train.py                       # ~100M Llama on CPU (the documented figure)
    python bench/train.py --size tiny --steps 3 # seconds, for a quick check
    python bench/train.py --size 1b --bf16 --seq-length 4096   # GPU: Llama-3.2-1B shape

    python bench/train.py --lora 16             # LoRA: Atelier vs full fine-tuning vs
                                                # transformers + PEFT, one run

With `--lora R` the engines train adapters of rank R (alpha 2R) on every attention and MLP
linear: Atelier's MindSpeed-layout LoRA (fused QKV and gate/up adapters), `atelier-full` the
same model fully, and transformers with PEFT's `get_peft_model` on q/k/v/o/gate/up/down.

Reports tokens/s, peak memory per rank and, on GPU with a known peak, TFLOP/s and MFU.

    python bench/train.py --pp 2 --microbatches 2,4,8 --size pp8   # pipeline bubble

measures, for each number of micro-batches M, each stage's idle share of the schedule's
wall time (1 - compute seconds / schedule seconds) against 1F1B's (P-1)/(M+P-1).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SIZES = {
    # hidden, layers, heads, kv heads, ffn, vocab
    "tiny": (128, 2, 4, 2, 352, 4096),
    "30m": (512, 6, 8, 4, 1408, 8000),
    "100m": (768, 10, 12, 4, 2048, 32000),
    "1b": (2048, 16, 32, 8, 8192, 128256),
    "pp8": (256, 8, 4, 2, 704, 2048),  # layers dominate: stages of equal cost
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "H800": 989.0, "910B": 320.0}


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == "npu":
        return torch.npu.max_memory_allocated(device) / 2**20  # type: ignore[attr-defined]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _tokens(n: int, seq: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (n, seq + 1), generator=g)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


PEFT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run_interleaved(opts: dict) -> dict:
    """Atelier LoRA and full fine-tuning in one process, steps alternating, so a loaded
    machine's changing load hits both alike (tokens/s only; memory needs separate runs)."""
    from atelier.llm.train.batches import SampleBatches, pretraining_samples
    from atelier.llm.train.loop import next_train_batches, setup, train_step

    states = {"lora": setup(_config(opts)), "full": setup(_config({**opts, "lora": 0}))}
    data = SampleBatches({"train": pretraining_samples(_tokens(opts["gbs"] * 4, *_sv(opts)))})
    times: dict[str, list[float]] = {k: [] for k in states}
    for _ in range(opts["steps"] + 1):
        for k, state in states.items():
            batches = next_train_batches(state, data)
            _sync(state.env.device)
            t0 = time.perf_counter()
            train_step(state, batches)
            _sync(state.env.device)
            times[k].append(time.perf_counter() - t0)
    tokens = opts["gbs"] * opts["seq_length"] * opts["steps"]
    tps = {k: tokens / sum(v[1:]) for k, v in times.items()}
    return {
        "engine": "atelier lora vs full, interleaved",
        "tokens_per_s_lora": tps["lora"],
        "tokens_per_s_full": tps["full"],
        "tokens_per_s_ratio_lora_vs_full": tps["lora"] / tps["full"],
    }


def run_atelier_full(opts: dict) -> dict:
    return run_atelier({**opts, "lora": 0, "name": "atelier-full"})


def run_atelier(opts: dict) -> dict:
    from atelier.llm.train.batches import SampleBatches, pretraining_samples
    from atelier.llm.train.loop import next_train_batches, setup, train_step

    state = setup(_config(opts))
    data = SampleBatches({"train": pretraining_samples(_tokens(opts["gbs"] * 4, *_sv(opts)))})
    times = []
    for _ in range(opts["steps"] + 1):
        batches = next_train_batches(state, data)
        _sync(state.env.device)
        t0 = time.perf_counter()
        m = train_step(state, batches)
        _sync(state.env.device)
        times.append(time.perf_counter() - t0)
    name = opts.get("name") or ("atelier-lora" if opts["lora"] else "atelier")
    return _report(name, times, opts, state.env.device, m.lm_loss)


def _config(opts: dict):
    from atelier.llm.train.config import TrainConfig
    from atelier.llm.train.lora import LoraSpec

    h, n_layers, heads, kv, ffn, vocab = SIZES[opts["size"]]
    return TrainConfig(
        num_layers=n_layers,
        hidden_size=h,
        ffn_hidden_size=ffn,
        num_attention_heads=heads,
        num_query_groups=kv,
        max_position_embeddings=opts["seq_length"],
        extra_args={"vocab_size": vocab},
        seq_length=opts["seq_length"],
        micro_batch_size=opts["mbs"],
        global_batch_size=opts["gbs"],
        train_iters=opts["steps"] + 1,
        lr=1e-4,
        lr_decay_style="constant",
        bf16=opts["bf16"],
        tensor_model_parallel_size=opts["tp"],
        recompute_granularity=opts["recompute"],
        compile=opts["compile"],
        device=opts["device"],
        lora=LoraSpec(r=opts["lora"], alpha=2.0 * opts["lora"]) if opts["lora"] else None,
        pipeline_model_parallel_size=opts.get("pp", 1),
    )


def run_bubble(opts: dict) -> list[dict]:
    """Per M: each stage's compute seconds vs the schedule's wall seconds (all ranks)."""
    import torch.distributed as dist

    from atelier.llm.train.batches import SampleBatches, pretraining_samples
    from atelier.llm.train.loop import next_train_batches, setup, train_step

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // opts["pp"]))  # one core each
    rows = []
    for m in opts["microbatches"]:
        o = {**opts, "gbs": m * opts["mbs"]}
        state = setup(_config(o))
        pipe = state.pipeline
        if state.env.device.type != "cpu":
            pipe.stage.sync = getattr(torch, state.env.device.type).synchronize
        data = SampleBatches({"train": pretraining_samples(_tokens(o["gbs"] * 4, *_sv(o)))})
        for step in range(opts["steps"] + 1):
            if step == 1:  # the first step is warm-up
                pipe.stage.busy_s, pipe.schedule_s = 0.0, 0.0
            train_step(state, next_train_batches(state, data))
        mine = {"stage": state.env.pp_rank, "busy": pipe.stage.busy_s, "wall": pipe.schedule_s}
        every: list = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)
        p = state.env.pp
        idle = [1.0 - r["busy"] / r["wall"] for r in every]
        rows.append(
            {
                "pp": p,
                "microbatches": m,
                "bubble_measured_per_stage": [round(x, 3) for x in idle],
                "bubble_measured_mean": round(sum(idle) / len(idle), 3),
                "bubble_1f1b_theory": round((p - 1) / (m + p - 1), 3),
                "schedule_s_per_step": round(every[0]["wall"] / opts["steps"], 4),
                "compute_s_per_step": [round(r["busy"] / opts["steps"], 4) for r in every],
            }
        )
    return rows


def _sv(opts: dict) -> tuple[int, int]:
    return opts["seq_length"], SIZES[opts["size"]][5]


def run_transformers(opts: dict) -> dict:
    import torch.distributed as dist
    import transformers
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from atelier.core.device import distributed_backend, resolve_device_name
    from atelier.llm.train.parallelize import free_port

    kind = resolve_device_name(opts["device"]).split(":")[0]
    device = (
        torch.device(kind, int(os.environ.get("LOCAL_RANK", 0)))
        if kind != "cpu"
        else (torch.device("cpu"))
    )
    if "RANK" in os.environ:
        dist.init_process_group(distributed_backend(kind))
    else:
        dist.init_process_group(
            distributed_backend(kind),
            init_method=f"tcp://127.0.0.1:{free_port()}",
            rank=0,
            world_size=1,
        )
    world = dist.get_world_size()
    h, n_layers, heads, kv, ffn, vocab = SIZES[opts["size"]]
    config = transformers.LlamaConfig(
        hidden_size=h,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=ffn,
        vocab_size=vocab,
        max_position_embeddings=opts["seq_length"],
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config)
    if opts["recompute"]:
        model.gradient_checkpointing_enable()
    layers = model.model.layers
    if opts["lora"]:
        import peft

        r = opts["lora"]
        lora = peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=PEFT_TARGETS)
        model = peft.get_peft_model(model, lora)
    mesh = init_device_mesh(kind, (world,))
    dt = torch.bfloat16 if opts["bf16"] else torch.float32
    policy = MixedPrecisionPolicy(param_dtype=dt, reduce_dtype=torch.float32)
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=1e-4, weight_decay=0.01)
    rows = _tokens(opts["gbs"] * 4, *_sv(opts))
    acc = opts["gbs"] // (opts["mbs"] * world)
    rank = dist.get_rank()
    times, consumed = [], 0
    for _ in range(opts["steps"] + 1):
        _sync(device)
        t0 = time.perf_counter()
        for j in range(acc):
            first = (consumed + j * opts["mbs"] * world + rank * opts["mbs"]) % len(rows)
            x = rows[first : first + opts["mbs"]].to(device)
            loss = model(input_ids=x[:, :-1], labels=x[:, :-1]).loss / acc
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss)  # the logging sync every loop has
        consumed += opts["gbs"]
        _sync(device)
        times.append(time.perf_counter() - t0)
    name = "transformers+peft+fsdp2" if opts["lora"] else "transformers+fsdp2"
    out = _report(name, times, opts, device, float(loss) * acc)
    dist.destroy_process_group()
    return out


def _report(name: str, times: list[float], opts: dict, device: torch.device, loss: float) -> dict:
    import torch.distributed as dist

    steady = times[1:]  # the first step builds caches / compiles
    tokens = opts["gbs"] * opts["seq_length"] * len(steady)
    h, n_layers, heads, kv, ffn, vocab = SIZES[opts["size"]]
    d = h // heads
    params = n_layers * (h * d * (heads + 2 * kv) + heads * d * h + 3 * h * ffn) + 2 * vocab * h
    # LoRA: no weight gradients for the frozen base (forward + input gradients: 4, not 6)
    per_param = 4 if opts.get("lora") and opts.get("name") != "atelier-full" else 6
    flops_per_token = per_param * params + 12 * n_layers * h * opts["seq_length"]
    tps = tokens / sum(steady)
    mem = torch.tensor([_peak_memory_mb(device)], device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(mem, op=dist.ReduceOp.MAX)
    out = {
        "engine": name,
        "tokens_per_s": tps,
        "peak_memory_mb_per_rank": float(mem),
        "last_loss": loss,
        "tflops_per_s": tps * flops_per_token / 1e12,
    }
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
        if peak:
            out["mfu"] = out["tflops_per_s"] / (peak * (dist.get_world_size() or 1))
        out["device"] = gpu
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="100m")
    p.add_argument("--seq-length", type=int, default=512)
    p.add_argument("--mbs", type=int, default=2)
    p.add_argument("--gbs", type=int, default=4)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--recompute", choices=["full"], default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--lora", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    p.add_argument(
        "--engines",
        default=None,
        help="atelier,transformers (with --lora: atelier,atelier-full,transformers; "
        "`interleaved`: LoRA and full alternating in one process)",
    )
    p.add_argument("--pp", type=int, default=1, help="pipeline stages: measure the bubble")
    p.add_argument("--microbatches", default="2,4,8", help="with --pp: values of M")
    a = p.parse_args()
    engines = a.engines or (
        "atelier,atelier-full,transformers" if a.lora else "atelier,transformers"
    )
    from atelier.llm.train.launch import launch

    opts = {
        "size": a.size,
        "seq_length": a.seq_length,
        "mbs": a.mbs,
        "gbs": a.gbs,
        "steps": a.steps,
        "tp": a.tp,
        "bf16": a.bf16,
        "compile": a.compile,
        "recompute": a.recompute,
        "device": a.device,
        "lora": a.lora,
    }
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, a.nproc)))
    if a.pp > 1:
        opts.update(pp=a.pp, microbatches=[int(x) for x in a.microbatches.split(",")])
        for row in launch(run_bubble, (opts,), a.pp, spawn=True):
            print(json.dumps(row), flush=True)
        return
    runners = {
        "atelier": run_atelier,
        "atelier-full": run_atelier_full,
        "transformers": run_transformers,
        "interleaved": run_interleaved,
    }
    results = {}
    for engine in engines.split(","):
        results[engine] = launch(runners[engine], (opts,), a.nproc, spawn=True)
        print(json.dumps(results[engine]), flush=True)
    ratios = {}
    for other in ("transformers", "atelier-full"):
        if "atelier" in results and other in results:
            at, ref = results["atelier"], results[other]
            ratios[f"tokens_per_s_ratio_vs_{other}"] = at["tokens_per_s"] / ref["tokens_per_s"]
            ratios[f"peak_memory_ratio_vs_{other}"] = (
                at["peak_memory_mb_per_rank"] / ref["peak_memory_mb_per_rank"]
            )
    if ratios:
        print(json.dumps({**ratios, "options": opts, "nproc": a.nproc}))


if __name__ == "__main__":
    main()
