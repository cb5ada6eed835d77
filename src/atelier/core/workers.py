"""Worker processes that die with their parent.

A `ProcessPoolExecutor` worker blocks on its task queue forever when the parent
is killed with SIGKILL (no `finally`, no atexit): it sits idle holding its model
or tokenizer, or worse keeps renaming outputs under a rerun's feet. Two
mechanisms, both armed in the worker itself, stop that:

* Linux: `prctl(PR_SET_PDEATHSIG, SIGKILL)` -- the kernel kills the worker the
  moment its parent dies. The kernel ties this to the *thread* that created the
  worker, so it is only armed when the pool was created on the main thread
  (which lives as long as the process).
* Everywhere: a daemon thread that polls the parent pid and exits the worker
  (`os._exit`) once it has changed (re-parented to init or a subreaper) or is
  gone. This also covers the instant between the spawn and the `prctl` call.

No torch import here: `atelier.core` stays light.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1
POLL_S = 0.5

_armed = False


def _set_pdeathsig(sig: int = signal.SIGKILL) -> bool:
    """Ask the Linux kernel to send `sig` when the parent thread dies."""
    if not sys.platform.startswith("linux") or os.environ.get("ATELIER_NO_PDEATHSIG"):
        return False  # the variable lets tests prove the portable watch alone
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parent_alive(parent_pid: int) -> bool:
    if os.getppid() != parent_pid:
        return False  # re-parented: the parent is gone
    if os.name == "nt":  # pragma: no cover - getppid is not re-parented on Windows
        return _windows_pid_alive(parent_pid)
    return True


def _windows_pid_alive(pid: int) -> bool:  # pragma: no cover - exercised on Windows only
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    synchronize, wait_timeout = 0x00100000, 0x00000102
    handle = kernel32.OpenProcess(synchronize, False, pid)
    if not handle:
        return False
    try:
        return kernel32.WaitForSingleObject(handle, 0) == wait_timeout
    finally:
        kernel32.CloseHandle(handle)


def _watch(parent_pid: int, poll_s: float) -> None:
    while _parent_alive(parent_pid):
        time.sleep(poll_s)
    os._exit(1)


def die_with_parent(parent_pid: int, pdeathsig: bool = True, poll_s: float = POLL_S) -> None:
    """Call first thing in a child process: it exits as soon as `parent_pid` dies.

    Idempotent. `pdeathsig=False` skips the Linux kernel signal (use it when the
    child was started from a thread that may exit before the process does).
    """
    global _armed
    if _armed:
        return
    _armed = True
    if pdeathsig:
        _set_pdeathsig()
    if not _parent_alive(parent_pid):  # the parent died before we were armed
        os._exit(1)
    threading.Thread(
        target=_watch, args=(parent_pid, poll_s), name="atelier-parent-watch", daemon=True
    ).start()


def _child_init(
    parent_pid: int,
    pdeathsig: bool,
    init: Callable[..., Any] | None,
    args: tuple[Any, ...],
) -> None:
    die_with_parent(parent_pid, pdeathsig)
    if init is not None:
        init(*args)


def orphan_safe_initializer(
    initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = ()
) -> tuple[Callable[..., None], tuple[Any, ...]]:
    """`(initializer, initargs)` for any pool: arms `die_with_parent`, then runs yours.

    `initializer` must be picklable (a module-level function) for spawn pools.
    """
    pdeathsig = threading.current_thread() is threading.main_thread()
    return _child_init, (os.getpid(), pdeathsig, initializer, tuple(initargs))


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM until the block is done, then deliver them.

    A `KeyboardInterrupt` in the middle of spawning a worker cuts its handshake
    pipe, and the half-born child prints `EOFError: Ran out of input` with a
    traceback. Only the main thread can set handlers; elsewhere this does nothing.
    Keep the block short: a signal waits for it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    sigs = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    old = {s: signal.signal(s, lambda n, _f: got.append(n)) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():  # None: a handler set outside Python
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if got:
            signal.raise_signal(got[0])


class _OrphanSafePool(ProcessPoolExecutor):
    """Submits with Ctrl-C / SIGTERM deferred (see `signals_deferred`).

    `submit` spawns workers and then starts the thread that later joins them; an
    interrupt between the two left a worker nobody joined, still starting up
    while the parent exited (its semaphores gone: a traceback on stderr).
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with signals_deferred():
            return super().submit(fn, *args, **kwargs)


@contextlib.contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Spawn with SIGINT ignored: children keep SIG_IGN across exec, so a terminal's Ctrl-C
    (sent to the whole process group) is the main process's alone, even in a worker's first
    milliseconds (an interpreter interrupted while it starts prints "Fatal Python error").
    Also no KeyboardInterrupt can cut a spawn's handshake here; a Ctrl-C in these few
    milliseconds is dropped. Only the main thread can set handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old if old is not None else signal.SIG_DFL)


def process_pool(
    workers: int,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
    start_method: str = "spawn",
) -> ProcessPoolExecutor:
    """A `ProcessPoolExecutor` whose workers die with this process.

    Spawn by default: forking a process that holds threads (tokenizers, torch)
    is unsafe. Submit from the thread that created the pool.
    """
    init, args = orphan_safe_initializer(initializer, initargs)
    ctx = multiprocessing.get_context(start_method)
    return _OrphanSafePool(workers, mp_context=ctx, initializer=init, initargs=args)


class ChildCall:
    """`fn(*args)` started now in a fresh (spawned) process that dies with this one.

    Why: a CPU-bound load that holds the GIL (importing transformers and torch, ~3 CPU-s)
    runs beside the main process's own start-up (Ray's) only in another process; in a
    thread the two take turns. The child ignores Ctrl-C (the main process handles it and
    calls `kill`). `result()` returns what `fn` returned or raises what it raised; `fn`, its
    arguments and its result must pickle.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._recv, send = ctx.Pipe(duplex=False)
        init, init_args = orphan_safe_initializer()
        self._proc = ctx.Process(
            target=_call_in_child, args=(send, init, init_args, fn, args), daemon=True
        )
        with children_ignore_sigint(), signals_deferred():
            self._proc.start()
        send.close()  # the child holds the only write end: its death is EOF here

    def result(self) -> Any:
        try:
            kind, value = self._recv.recv()
        except EOFError:
            self._proc.join()
            raise RuntimeError(
                f"the child process died (exit code {self._proc.exitcode}) before returning"
            ) from None
        finally:
            self._recv.close()
        self._proc.join()
        if kind == "error":
            raise value
        return value

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()


def _call_in_child(
    send: Any, init: Callable[..., None], init_args: tuple[Any, ...], fn: Any, args: Any
) -> None:
    init(*init_args)
    try:
        out: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as e:  # the parent re-raises it
        out = ("error", e)
    try:
        send.send(out)
    except Exception as e:  # an unpicklable result or exception
        send.send(("error", RuntimeError(f"{type(out[1]).__name__} did not pickle: {e}")))
    send.close()
    # done: skip the interpreter's teardown (after importing torch, ~0.6 CPU-s that the
    # parent's other work on the same cores would wait for); there is nothing left to save
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)
