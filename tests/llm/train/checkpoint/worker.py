"""Run under torchrun (or plain python for one process): checkpoint scenarios on the toy model.

Usage: worker.py OUT_JSON TP DP SCENARIO,LOAD,SAVE[,EXTRA] ...
Scenarios: save1 (load, save untrained at iteration 1), resume (train, save, train on;
then a fresh model resumes from the save and trains the same steps), reshard (compare a
TP-resharded load with a direct one).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from atelier.llm.convert.sharding import padded_vocab_size
from atelier.llm.train.checkpoint import (
    Ranks,
    SaveRequest,
    checkpoint_args,
    load_weights,
    resolve_load,
    resume_state,
    save_checkpoint,
)
from atelier.llm.train.checkpoint.shards import tp_local
from tests.llm.train.checkpoint.toy import ToyGPT, parallelize


def build(load: Path | None, save: Path | None, tp: int, dp: int, mesh):
    src = resolve_load(load, save=save)
    padded = padded_vocab_size(src.meta.vocab_size, 128, tp)
    torch.manual_seed(123)
    model = parallelize(ToyGPT(src.meta, padded), mesh, tp, dp)
    ranks = Ranks.from_mesh(mesh)
    load_weights(src, model, ranks)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    return src, model, opt, ranks


def step(model, opt, vocab: int) -> float:
    ids = torch.randint(0, vocab, (2, 8))  # drawn from the RNG a resume must restore
    loss = model(ids).float().pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    return float(loss.detach())


def run(scenario: str, load: Path, save: Path, tp: int, dp: int, mesh, extra: list[str]) -> dict:
    src, model, opt, ranks = build(load, None, tp, dp, mesh)
    vocab = src.meta.vocab_size
    if scenario == "save1":
        args = checkpoint_args(src.meta, tp=tp)
        req = SaveRequest(save, 1, 0, args, src.meta.dtype, src.meta, {})
        save_checkpoint(req, model, opt, ranks)
        return {}
    if scenario == "resume":
        torch.manual_seed(7)
        losses = [step(model, opt, vocab) for _ in range(2)]
        args = checkpoint_args(src.meta, tp=tp, iteration=2, consumed_train_samples=4)
        loop = {"iteration": 2, "scheduler": {"last": 2}}
        req = SaveRequest(save, 2, 4, args, torch.float32, src.meta, loop, keep=1)
        save_checkpoint(req, model, opt, ranks)
        losses += [step(model, opt, vocab) for _ in range(3)]
        torch.manual_seed(999)  # the resumed run must not depend on the RNG it starts with
        src2, model2, opt2, ranks2 = build(None, save, tp, dp, mesh)
        resumed = resume_state(src2, model2, opt2, ranks2)
        again = [step(model2, opt2, vocab) for _ in range(3)]
        return {
            "losses": losses,
            "again": again,
            "iteration": resumed.iteration,
            "consumed": resumed.consumed_train_samples,
            "loop": resumed.loop_state,
            "same_params": same_params(model, model2),
        }
    if scenario == "reshard":
        _, model2, _, _ = build(Path(extra[0]), None, tp, dp, mesh)
        return {"same_params": same_params(model, model2)}
    raise SystemExit(f"unknown scenario {scenario}")


def same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(tp_local(x), tp_local(y))
        for x, y in zip(a.parameters(), b.parameters(), strict=True)
    )


def main() -> None:
    out, tp, dp, *jobs = sys.argv[1:]
    tp, dp = int(tp), int(dp)
    mesh = None
    if "RANK" in os.environ:
        torch.distributed.init_process_group("gloo")
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (dp, tp), mesh_dim_names=("dp", "tp"))
    results = {}
    for job in jobs:
        scenario, load, save, *extra = job.split(",")
        results[scenario] = run(scenario, Path(load), Path(save), tp, dp, mesh, extra)
    rank = torch.distributed.get_rank() if mesh is not None else 0
    Path(f"{out}.{rank}").write_text(json.dumps(results))
    if mesh is not None:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
