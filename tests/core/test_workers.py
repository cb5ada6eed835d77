"""core.workers: a worker whose parent is SIGKILLed exits within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses POSIX signals and /proc")

PARENT = textwrap.dedent(
    """
    import sys, time
    from atelier.core.workers import process_pool

    def pid():
        import os
        return os.getpid()

    if __name__ == "__main__":
        pool = process_pool(2)
        pids = {pool.submit(pid).result() for _ in range(8)}
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(60)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _run_and_kill(tmp_path, env_extra: dict[str, str]) -> list[int]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, **env_extra}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    line = proc.stdout.readline()
    workers = [int(x) for x in line.split()]
    assert workers, "the pool started no worker"
    assert all(_alive(w) for w in workers)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return workers


@pytest.mark.parametrize("mechanism", ["pdeathsig", "watch-thread"])
def test_workers_die_with_killed_parent(tmp_path, mechanism):
    env = {"ATELIER_NO_PDEATHSIG": "1"} if mechanism == "watch-thread" else {}
    workers = _run_and_kill(tmp_path, env)
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)], f"orphaned workers ({mechanism})"


def test_interrupt_during_submit_is_delivered_after_it():
    """Ctrl-C inside `submit` (between spawning a worker and starting the thread that
    joins it) left a half-started worker printing a traceback; it now waits."""
    from atelier.core.workers import signals_deferred

    reached_end = False
    with pytest.raises(KeyboardInterrupt), signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler would have run by now
        reached_end = True
    assert reached_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_child_call_returns_raises_and_reports_a_death():
    """ChildCall runs in another process, hands back the result or the exception raised
    there, and a child that dies without answering is an error, not a hang."""
    from atelier.core.workers import ChildCall

    assert ChildCall(os.getpid).result() != os.getpid()
    with pytest.raises(ZeroDivisionError):
        ChildCall(divmod, 1, 0).result()
    with pytest.raises(RuntimeError, match="exit code 3"):
        ChildCall(os._exit, 3).result()
    slow = ChildCall(time.sleep, 60)
    t0 = time.monotonic()
    slow.kill()
    assert time.monotonic() - t0 < 10


CHILD_CALL_PARENT = textwrap.dedent(
    """
    import time
    from atelier.core.workers import ChildCall

    def sleeper():
        import os, time
        print(os.getpid(), flush=True)
        time.sleep(60)

    if __name__ == "__main__":
        call = ChildCall(sleeper)
        time.sleep(60)
    """
)


def test_child_call_dies_with_killed_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(CHILD_CALL_PARENT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    assert _alive(child)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)
