"""The ``process`` executor: ``jobs`` worker processes on this machine, sharing the cores (and the
GPUs: on several, each worker sees one, round robin, so that the runs spread over them).

Workers are spawned (not forked: torch and forked threads do not mix), each runs with
``cores // jobs`` threads (which the driver writes into every run's spec, and so its key), and takes
one task at a time over its own pipe, so the driver always knows which run a worker holds. A worker
that dies — killed by the OOM killer or ``kill -9``, or ended by a plugin's ``os._exit`` — fails
that run alone, with the cause, and a fresh worker takes the next task. A worker whose resident
memory after a run is above its budget (:func:`benchkit.options.worker_memory`) is replaced by a
fresh one before the next task, so that what runs leave behind never adds up to the OOM killer's
attention. Workers leave Ctrl-C to
the driver (which stops them) and end themselves within a second of the driver's death, however
the driver died.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from benchkit.contracts.executor import Executor, Outcome, Task
from benchkit.executors.worker import exit_with_parent, run_task
from benchkit.options import threads_for, worker_memory


def _serve(conn: Connection, parent: int) -> None:
    """A worker's body: run the tasks the driver sends until it sends ``None``."""
    import threading

    from tqdm import tqdm

    from benchkit.interrupts import ignore_interrupts

    ignore_interrupts()
    exit_with_parent(parent)
    # tqdm's default lock is a multiprocessing semaphore: a worker killed holding one would make
    # Python's resource tracker warn about a leak when the grid ends. A worker needs a thread lock.
    tqdm.set_lock(threading.RLock())
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        outcome = run_task(task)
        _release_memory()  # before the reply: the driver reads this worker's memory on it
        conn.send(outcome)


def _release_memory() -> None:
    """Hand what the run freed back to the system (glibc keeps freed heap for reuse otherwise),
    so that the driver's reading of this worker's memory is what it holds."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def resident_bytes(pid: int) -> int | None:
    """A process's resident memory (Linux's /proc), or ``None`` where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` for the block (nothing when ``value`` is ``None``)."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def death(exitcode: int | None) -> str:
    """Why a worker process ended, in words."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory, or kill -9?)" if name == "SIGKILL" else ""
        return f"the worker process running it was killed by {name}{hint}"
    return f"the worker process running it exited with code {exitcode} before returning a result"


def worker_gpu(slot: int, device: str, gpus: int) -> str | None:
    """The GPU (``CUDA_VISIBLE_DEVICES``) of the worker in ``slot``: the runs spread round robin
    over a machine's GPUs when their device is ``auto`` or ``cuda``; ``None`` (no pinning) on one
    GPU or none, or for runs that name their device."""
    if gpus < 2 or device not in ("auto", "cuda"):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [v.strip() for v in visible.split(",")] if visible else [str(i) for i in range(gpus)]
    return ids[slot % min(gpus, len(ids))]  # the user's own mapping kept


class _Worker:
    def __init__(self, ctx: Any, slot: int = 0, gpu: str | None = None) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, os.getpid()), name="benchkit-worker")
        self.slot = slot
        with _environment("CUDA_VISIBLE_DEVICES", gpu):  # a spawned child copies it at start
            self.process.start()
        child.close()
        self.task: Task | None = None

    def stop(self, now: bool) -> None:
        if self.process.is_alive() and not now and self.task is None:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class ProcessExecutor(Executor):
    name = "process"
    description = "a local pool of --jobs worker processes sharing the cores"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._ctx = mp.get_context("spawn")
        self._queue: list[Task] = []
        self._workers: list[_Worker] = []
        self.memory = worker_memory(self.jobs)
        self.recycled = 0  # workers replaced for holding more than ``memory`` after a run

    def threads_per_run(self) -> int:
        return threads_for(self.jobs)

    def _gpus(self) -> int:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def _dispatch(self) -> None:
        """Hand queued tasks to idle workers, starting workers (up to ``jobs``) as needed."""
        for worker in list(self._workers):
            if worker.task is None and not worker.process.is_alive():
                worker.stop(now=True)
                self._workers.remove(worker)
        idle = [w for w in self._workers if w.task is None]
        while self._queue and (idle or len(self._workers) < self.jobs):
            if idle:
                worker = idle.pop()
            else:
                taken = {w.slot for w in self._workers}
                slot = min(set(range(self.jobs)) - taken)
                gpu = worker_gpu(slot, self._queue[0].spec.device, self._gpus())
                worker = _Worker(self._ctx, slot, gpu)
                self._workers.append(worker)
            worker.task = self._queue.pop(0)
            try:
                worker.conn.send(worker.task)
            except OSError:  # it died while idle: give the task to another
                self._queue.insert(0, worker.task)
                worker.task = None
                worker.stop(now=True)
                self._workers.remove(worker)

    def collect(self) -> Iterator[Outcome]:
        while True:
            self._dispatch()
            busy = [w for w in self._workers if w.task is not None]
            if not busy:
                return
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                task, worker.task = worker.task, None
                assert task is not None
                outcome = None
                try:
                    if worker.conn.poll():
                        outcome = worker.conn.recv()
                except (EOFError, OSError):
                    outcome = None
                if outcome is None:  # the worker died holding the task: fail it, replace it
                    worker.process.join(timeout=10)
                    worker.stop(now=True)
                    self._workers.remove(worker)
                    outcome = Outcome(task.key, None, None, 0.0, death(worker.process.exitcode))
                elif (resident_bytes(worker.process.pid or 0) or 0) > self.memory:
                    worker.stop(now=False)  # idle: asked to end, its caches go with it
                    self._workers.remove(worker)
                    self.recycled += 1
                yield outcome

    def notes(self) -> list[str]:
        if not self.recycled:
            return []
        n = self.recycled
        return [
            f"{n} worker{'s' if n != 1 else ''} replaced after a run for holding more than "
            f"{self.memory / 2**30:,.1f} GiB (BENCHKIT_WORKER_MEMORY sets it)"
        ]

    def close(self) -> None:
        for worker in self._workers:
            worker.stop(now=worker.task is not None)
        self._workers.clear()
        self._queue.clear()
