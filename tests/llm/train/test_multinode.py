"""Two "nodes" on one machine (loopback): torchrun and Atelier's own launcher, CPU gloo.

Each node is a separate launcher process with `--nnodes 2` and its own node rank; TP 2 runs
across them. Their losses must equal a single-node two-process run exactly. Also: a wrong
NIC name and a rendezvous that never completes end with one line, exit 2.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from atelier.core.errors import AtelierError
from atelier.llm.train.env import ENV_TO_FIELD
from atelier.llm.train.multinode import node_spec

from ...ports import listen_port

DIST_VARS = ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE", "RANK")


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HF Llama with the bundled tokenizer, its hf2mg output and preprocessed data."""
    from importlib import resources

    from atelier.llm.convert import Hf2MgOptions, hf2mg
    from atelier.llm.data.preprocess import PreprocessConfig, preprocess
    from atelier.llm.data.tokenizer import TokenizerSpec
    from atelier.llm.demo import tiny_llama

    root = tmp_path_factory.mktemp("multinode")
    assets = resources.files("atelier.llm.assets")
    tok_dir = str(assets / "tokenizer")
    tiny_llama(root / "hf", tok_dir, num_layers=2, hidden=32)
    preprocess(
        PreprocessConfig(
            input=str(assets / "text_sample.txt"),
            output_prefix=str(root / "text"),
            tokenizer=TokenizerSpec(name_or_path=tok_dir),
            append_eod=True,
        )
    )
    hf2mg(Hf2MgOptions(load_dir=root / "hf", save_dir=root / "mg"))
    return root


def _train_args(job: Path, log_file: Path) -> list[str]:
    return [
        *("--device", "cpu", "--eval-iters", "0", "--split", "100,0,0", "--log-interval", "1"),
        *("--data-path", str(job / "text_text_document")),
        *("--tokenizer-name-or-path", str(job / "hf"), "--load", str(job / "mg")),
        *("--micro-batch-size", "2", "--global-batch-size", "4", "--seq-length", "32"),
        *("--train-iters", "4", "--lr", "1e-3", "--tensor-model-parallel-size", "2"),
        *("--log-file", str(log_file)),
    ]


def _env(**extra: str) -> dict[str, str]:
    drop = {*ENV_TO_FIELD, *DIST_VARS, "GLOO_SOCKET_IFNAME", "TORCHELASTIC_RUN_ID"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _losses(log_file: Path) -> list[float]:
    return [json.loads(line)["lm_loss"] for line in log_file.read_text().splitlines()]


def _both(
    cmds: list[list[str]],
    envs: list[dict[str, str]],
    timeout: float = 240,
    peer_grace: float | None = 60,
):
    """Run the launchers together; (returncode, stdout, stderr) of each.

    Both pipes of every process are read at once (a full pipe would stall a process the
    test is not reading yet). When one exits non-zero the others get `peer_grace` seconds
    before they are stopped (a survivor would wait out its rendezvous timeout), and a
    timeout fails naming who was still running with its stderr so far."""
    procs = [
        subprocess.Popen(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c, e in zip(cmds, envs, strict=True)
    ]
    outs: list[list[str]] = [[] for _ in procs]
    errs: list[list[str]] = [[] for _ in procs]
    readers = [
        threading.Thread(target=lambda f=f, into=into: into.extend(f), daemon=True)
        for p, o, e in zip(procs, outs, errs, strict=True)
        for f, into in ((p.stdout, o), (p.stderr, e))
    ]
    for t in readers:
        t.start()
    began, failed_at = time.monotonic(), None
    try:
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
                failed_at = now
            if now - began > timeout or (
                failed_at is not None and peer_grace is not None and now - failed_at > peer_grace
            ):
                running = [n for n, p in enumerate(procs) if p.poll() is None]
                if now - began > timeout:
                    tails = "\n".join(f"[{n}] {''.join(errs[n])[-1500:]}" for n in running)
                    pytest.fail(f"launchers {running} still running after {timeout} s:\n{tails}")
                break  # a peer failed: stop the others, report the failure below
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for t in readers:
            t.join(timeout=10)
    joined = zip(procs, outs, errs, strict=True)
    return [(p.returncode, "".join(o), "".join(e)) for p, o, e in joined]


ATELIER = [sys.executable, "-m", "atelier", "llm", "train"]


@pytest.fixture(scope="module")
def single_node(job: Path, tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    log_file = tmp_path_factory.mktemp("single") / "m.jsonl"
    r = subprocess.run(
        [*ATELIER, *_train_args(job, log_file), "--nproc-per-node", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    losses = _losses(log_file)
    assert len(losses) == 3  # hf2mg output is iteration 1
    return losses


C10D_GATE = pytest.mark.skipif(
    os.environ.get("ATELIER_TORCHRUN_TESTS") != "1",
    reason="c10d two-agent run failed once in ~12 `pytest -n 2` sessions at load average ~15 "
    "after the port fix (output not kept); run with ATELIER_TORCHRUN_TESTS=1 until seen again",
)


@pytest.mark.parametrize("rdzv", ["static", pytest.param("c10d", marks=C10D_GATE)])
def test_two_torchrun_nodes_equal_one_node(
    job: Path, single_node, tmp_path: Path, rdzv: str
) -> None:
    """torchrun's static rendezvous (--master-addr/--master-port, node ranks given) and its
    elastic one (--rdzv-backend c10d --rdzv-endpoint, ranks assigned by the agents).

    Under c10d the rendezvous store is hosted here, as a cluster's long-lived endpoint: when
    one agent hosts it on a shared machine, that agent may exit right after its worker while
    the other agent still polls the store (torchrun then fails with "Broken pipe" after a
    successful run) -- a race between two agents on one host, not a property of the job."""
    port = str(listen_port())
    store = None
    if rdzv == "c10d":
        import torch.distributed as dist

        store = dist.TCPStore("127.0.0.1", int(port), is_master=True, wait_for_workers=False)
    cmds, logs = [], []
    for node in (0, 1):
        logs.append(tmp_path / f"node{node}.jsonl")
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
        torchrun += ["--nproc-per-node", "1"]
        if rdzv == "static":
            torchrun += ["--node-rank", str(node)]
            torchrun += ["--master-addr", "127.0.0.1", "--master-port", port]
        else:
            torchrun += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
            torchrun += ["--rdzv-id", "atelier-test", "--rdzv-conf", "is_host=false"]
        cmds.append([*torchrun, "-m", "atelier", "llm", "train", *_train_args(job, logs[-1])])
    results = _both(cmds, [_env(), _env()])
    del store  # closed once both agents are gone
    ranks = set()
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
        start = [x for x in err.splitlines() if x.startswith("atelier: rank ")]
        assert len(start) == 1 and "device cpu, gloo via lo 127.0.0.1" in start[0], err[-2000:]
        rank = start[0].split()[2].split("/")[0]
        assert f"on node {rank} " in start[0]  # one rank per node
        ranks.add(rank)
    assert ranks == {"0", "1"}
    # rank 0 writes the log (which node holds it is the agents' choice under c10d)
    [log] = [x for x in logs if x.is_file()]
    assert _losses(log) == single_node


def test_atelier_launcher_env_and_flags_equal_one_node(
    job: Path, single_node, tmp_path: Path
) -> None:
    """Node 0 from the guide's variables, node 1 from torchrun's flag spellings."""
    port = str(listen_port())
    logs = [tmp_path / "node0.jsonl", tmp_path / "node1.jsonl"]
    env0 = _env(NNODES="2", NODE_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    flags1 = ["--nnodes", "2", "--node-rank", "1", "--master-addr", "127.0.0.1"]
    cmds = [
        [*ATELIER, *_train_args(job, logs[0])],
        [*ATELIER, *_train_args(job, logs[1]), *flags1, "--master-port", port],
    ]
    results = _both(cmds, [env0, _env()])
    for node, (rc, out, err) in enumerate(results):
        assert rc == 0, err[-3000:]
        assert f"atelier: rank {node}/2 (local 0/1) on node {node} " in err
        assert "trained 3 iterations to iteration 4" in out
    assert _losses(logs[0]) == single_node


def test_wrong_nic_name_is_one_line_exit_2(job: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [*ATELIER, *_train_args(job, tmp_path / "m.jsonl")],
        env=_env(GLOO_SOCKET_IFNAME="nosuchnic9"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith(
        "atelier: error: GLOO_SOCKET_IFNAME=nosuchnic9: no such interface; this machine has lo "
        "127.0.0.1"
    )
    assert "export GLOO_SOCKET_IFNAME=" in lines[0]
    assert not (tmp_path / "m.jsonl").exists()


def test_rendezvous_with_a_node_missing_ends_in_one_line(job: Path, tmp_path: Path) -> None:
    """Only node 0 of two started (it names the missing rank), and only node 1 of two on
    another port (it cannot reach the master): both stop after the 3 s timeout, exit 2."""
    first = listen_port()
    ports = [str(first), str(listen_port(other_than=first))]
    cmds = [
        [*ATELIER, *_train_args(job, tmp_path / f"{n}.jsonl"), "--dist-timeout", "0.05"]
        for n in (0, 1)
    ]
    envs = [
        _env(NNODES="2", NODE_RANK=str(n), MASTER_ADDR="127.0.0.1", MASTER_PORT=ports[n])
        for n in (0, 1)
    ]
    began = time.monotonic()
    (rc0, _, err0), (rc1, _, err1) = _both(cmds, envs, timeout=180, peer_grace=None)
    assert time.monotonic() - began < 150
    for rc, err in ((rc0, err0), (rc1, err1)):
        errors = [x for x in err.splitlines() if x.startswith("atelier: error:")]
        assert rc == 2 and len(errors) == 1, err[-3000:]
        assert "Traceback" not in err and "frame #" not in err, err[-3000:]
    assert "did not complete within 3 s: 1 of 2 ranks joined; missing ranks 1 (node 1)" in err0
    assert f"could not reach MASTER_ADDR 127.0.0.1:{ports[1]} within 3 s" in err1


def test_a_master_port_held_by_a_silent_program_ends_in_one_line(job: Path, tmp_path: Path) -> None:
    """Node 1 whose master port belongs to a program that accepts and never answers (a
    TCPStore client would wait for its greeting forever): one line within the bound."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nothing is ever sent back
        port = str(silent.getsockname()[1])
        env = _env(NNODES="2", NODE_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [*ATELIER, *_train_args(job, tmp_path / "m.jsonl"), "--dist-timeout", "0.05"]
        [(rc, _, err)] = _both([cmd], [env], timeout=180)
    errors = [x for x in err.splitlines() if x.startswith("atelier: error:")]
    assert rc == 2 and len(errors) == 1, err[-3000:]
    assert (
        f"rank 1 (node 1) reached MASTER_ADDR 127.0.0.1:{port} but nothing there answered as "
        "a rendezvous store within 3 s: another program listens on port"
    ) in errors[0]


def test_node_spec_from_flags_and_environment() -> None:
    env = {"NNODES": "4", "NODE_RANK": "3", "MASTER_ADDR": "10.0.0.2", "NPUS_PER_NODE": "8"}
    spec = node_spec(environ=env)
    assert (spec.nnodes, spec.node_rank, spec.nproc_per_node, spec.master_port) == (4, 3, 8, 29500)
    assert spec.rank_env(5)["RANK"] == "29" and spec.world_size == 32
    assert node_spec(nnodes=2, node_rank=0, environ=env).nnodes == 2  # flags win
    with pytest.raises(AtelierError, match=r"--node-rank 2 .* is not below --nnodes 2"):
        node_spec(nnodes=2, node_rank=2, environ={})
    with pytest.raises(AtelierError, match="give --master-addr"):
        node_spec(nnodes=2, environ={})
    with pytest.raises(AtelierError, match="NNODES='two'"):
        node_spec(environ={"NNODES": "two"})


def test_node_0_refuses_a_master_addr_of_another_machine() -> None:
    from atelier.core import netif
    from atelier.llm.train.multinode import check_master_is_here

    report = netif.check_socket_ifnames({})
    check_master_is_here("127.0.0.1", report)
    check_master_is_here("localhost", report)
    with pytest.raises(AtelierError, match=r"--master-addr 203\.0\.113\.7 \(MASTER_ADDR\) is not"):
        check_master_is_here("203.0.113.7", report)
