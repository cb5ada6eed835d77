"""The spawning launcher: ranks forked from a forkserver see this launch's environment and
umask (not the server's, from when it started), report errors as one line, and rendezvous
through the store the launcher hosts."""

from __future__ import annotations

import os

import pytest

from atelier.core.errors import AtelierError
from atelier.llm.train.launch import launch
from atelier.llm.train.multinode import STORE_HOSTED


def _probe(name: str) -> dict:
    mask = os.umask(0)
    os.umask(mask)
    return {
        "value": os.environ.get(name),
        "umask": mask,
        "rank": os.environ["RANK"],
        "hosted": os.environ.get(STORE_HOSTED),
        "pid": os.getpid(),
    }


def _fail_on_rank_1() -> None:
    if os.environ["RANK"] == "1":
        raise AtelierError("rank 1 says no")


def _all_reduce() -> float:
    import torch
    import torch.distributed as dist

    from atelier.llm.train.multinode import join_process_group

    join_process_group("gloo", 1.0, "cpu")
    t = torch.tensor([float(os.environ["RANK"]) + 1])
    dist.all_reduce(t)
    return float(t.item())


def test_second_launch_sees_this_launch_environment_and_umask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATELIER_TEST_PROBE", "first")
    first = launch(_probe, ("ATELIER_TEST_PROBE",), nproc_per_node=2)
    assert first["value"] == "first" and first["rank"] == "0" and first["hosted"] == "1"
    monkeypatch.setenv("ATELIER_TEST_PROBE", "second")  # the forkserver is up by now
    old = os.umask(0o027)
    try:
        second = launch(_probe, ("ATELIER_TEST_PROBE",), nproc_per_node=2)
    finally:
        os.umask(old)
    assert second["value"] == "second" and second["umask"] == 0o027
    assert second["pid"] != first["pid"] != os.getpid()
    assert STORE_HOSTED not in os.environ  # only the ranks' environment holds it


def test_an_error_on_one_rank_is_the_launch_error() -> None:
    with pytest.raises(AtelierError, match=r"^rank 1 says no$"):
        launch(_fail_on_rank_1, (), nproc_per_node=2)


def test_ranks_meet_through_the_launcher_store() -> None:
    assert launch(_all_reduce, (), nproc_per_node=2) == 3.0
