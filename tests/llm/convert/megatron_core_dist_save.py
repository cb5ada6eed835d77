"""Run in a subprocess: save a `torch_dist` checkpoint with megatron-core's own writer.

Usage: python megatron_core_dist_save.py RANK_FILE OUT_DIR
Builds megatron-core's GPTModel from an Atelier mcore rank file (T=1, P=1), loads it, and
saves what Megatron-LM's `save_checkpoint` saves with `--ckpt-format torch_dist`:
`{'model': model.sharded_state_dict(), 'args', 'checkpoint_version', 'iteration'}` through
`megatron.core.dist_checkpointing.save` into OUT_DIR/iter_0000001, plus the tracker file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch


def main(rank_file: str, out: str) -> None:
    # megatron-core's writer calls torch.cuda.synchronize()/current_device() even for CPU
    # tensors (a no-op here): let it run on a CPU-only build; what it writes is unchanged
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.current_device = lambda: "cpu"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29700 + os.getpid() % 1000))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    from megatron.core import dist_checkpointing, parallel_state

    sys.path.insert(0, str(Path(__file__).parent))
    from megatron_core_load import build_model

    parallel_state.initialize_model_parallel(1, 1)
    with torch.serialization.safe_globals([argparse.Namespace]):
        ck = torch.load(rank_file, weights_only=True)
    model = build_model(ck["args"])
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    assert not unexpected and all(k.endswith("_extra_state") for k in missing), missing
    it_dir = Path(out) / "iter_0000001"
    it_dir.mkdir(parents=True)
    state = {
        "model": model.sharded_state_dict(),
        "args": ck["args"],
        "checkpoint_version": 3.0,
        "iteration": 1,
    }
    dist_checkpointing.save(state, str(it_dir))
    (Path(out) / "latest_checkpointed_iteration.txt").write_text("1")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
