"""The ``ray`` executor: runs as Ray tasks, on an existing cluster or a local one.

Without ``--address`` a local cluster is started bound to 127.0.0.1 (nothing listens on the
machine's network address) with the machine's cores, and each run gets ``cores // jobs`` of them
as threads. With ``--address`` the tasks go to that cluster; each asks for ``threads`` CPUs
(``--threads``, default 1). Workers need benchkit and the same plugins installed, and the data at
the same path (or the synthetic world, which each worker generates or reads from its cache); they
return records, and only the driver writes the store. ``--quiet`` silences Ray's own logging.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from benchkit.contracts.executor import Executor, Outcome, Task
from benchkit.errors import ConfigError
from benchkit.executors.worker import run_task
from benchkit.options import cores, threads_for


def _loopback_only() -> None:
    """Make a Ray node started from this process bind to 127.0.0.1 only.

    Ray resolves "localhost" to the machine's network address (and listens on every interface)
    unless its cluster mode is off, which the variable below switches; Ray's processes inherit it.
    Ray reads it at import, so an already imported Ray gets the same value set in place.
    """
    import sys

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 (a module of Ray's)


CONNECT_TIMEOUT = 10.0  # seconds; BENCHKIT_RAY_TIMEOUT changes it


def reachable(address: str) -> None:
    """Fail in one line, within ``BENCHKIT_RAY_TIMEOUT`` seconds (10 by default), when nothing
    answers at ``address`` — Ray itself would retry forever. ``auto`` is left to Ray."""
    import socket

    if address == "auto":
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"--address {address!r}: give the Ray cluster's HOST:PORT")
    try:
        timeout = float(os.environ.get("BENCHKIT_RAY_TIMEOUT", CONNECT_TIMEOUT))
    except ValueError:
        timeout = CONNECT_TIMEOUT
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({why}, within {timeout:g} s): check "
            f"--address, start a cluster there (ray start --head), or leave --address out to run "
            f"a local one"
        ) from None


class RayExecutor(Executor):
    name = "ray"
    description = "Ray tasks on a cluster (--address) or a local one bound to 127.0.0.1"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray executor needs Ray: pip install 'benchkit[ray]'") from None
        self._ray = ray
        self._started = False
        self._pending: dict[Any, str] = {}
        self._remote: Any = None

    def threads_per_run(self) -> int:
        if self.address:
            return 1
        return threads_for(self.jobs)

    def _start(self, threads: int) -> None:
        ray = self._ray
        if not ray.is_initialized():
            quiet = {"logging_level": logging.ERROR, "log_to_driver": False} if self.quiet else {}
            if self.address:
                reachable(self.address)
                ray.init(address=self.address, **quiet)
            else:
                _loopback_only()
                ray.init(num_cpus=cores(), include_dashboard=False, **quiet)
                self._started = True
                ip = ray.util.get_node_ip_address()
                if ip not in ("127.0.0.1", "::1"):
                    ray.shutdown()
                    raise ConfigError(
                        f"the local Ray cluster bound to {ip}, not the loopback address; start "
                        f"a cluster yourself (ray start --head) and pass --address"
                    )
        self._remote = ray.remote(num_cpus=threads)(run_task)

    def submit(self, task: Task) -> None:
        if self._remote is None:
            self._start(task.spec.threads or 1)
        self._pending[self._remote.remote(task)] = task.key

    def collect(self) -> Iterator[Outcome]:
        ray = self._ray
        while self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=1)
            for ref in ready:
                key = self._pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died (after Ray's retries)
                    text = str(exc).strip().splitlines()
                    why = text[0] if text else type(exc).__name__
                    outcome = Outcome(
                        key, None, None, 0.0, f"the Ray worker running it failed: {why}"
                    )
                yield outcome

    def close(self) -> None:
        for ref in self._pending:
            self._ray.cancel(ref, force=True)
        self._pending.clear()
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False
