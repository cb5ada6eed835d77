"""Tiny HF models converted by hf2mg, and a launcher for 2-process gloo runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atelier.llm.assets.build import train_bpe
from atelier.llm.convert import Hf2MgOptions, hf2mg
from tests.llm.convert.conftest import VOCAB, make_hf_model
from tests.ports import listen_port

WORKER = Path(__file__).with_name("worker.py")


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory):
    """converted(family, tp) -> hf2mg output folder (2-layer model), cached per session."""
    root = tmp_path_factory.mktemp("ckpt-models")
    texts = [f"the quick brown fox {i} jumps over the lazy dog {i * 7}" for i in range(200)]
    tok = train_bpe(texts, root / "tok", vocab_size=VOCAB - 20)
    cache: dict[tuple[str, int], Path] = {}

    def get(family: str, tp: int = 1) -> Path:
        if (family, tp) not in cache:
            hf = root / f"hf-{family}"
            if not hf.exists():
                make_hf_model(hf, family, 2, tokenizer=tok)
            out = root / f"mg-{family}-tp{tp}"
            hf2mg(Hf2MgOptions(load_dir=hf, save_dir=out, tp=tp))
            cache[(family, tp)] = out
        return cache[(family, tp)]

    get.hf = lambda family: root / f"hf-{family}"  # type: ignore[attr-defined]
    return get


def run_worker(
    tmp: Path, load: Path, tp: int, world: int, *jobs: str, timeout: int = 120, rc: int = 0
) -> list[dict]:
    """Run worker.py jobs on `world` gloo processes (plain processes, no torchrun agent)."""
    out = tmp / "result"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), str(out), str(load), str(tp), *jobs]
    if world == 1:
        procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)]
    else:
        port = listen_port()  # not bind-to-0: that port can be taken before rank 0 binds
        procs = []
        for r in range(world):
            penv = {
                **env,
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "WORLD_SIZE": str(world),
            }
            procs.append(subprocess.Popen(cmd, env=penv, stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=timeout)[1] for p in procs]
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == rc, err[-3000:]
    if rc:
        return []
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(world)]
