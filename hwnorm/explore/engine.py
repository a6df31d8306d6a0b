"""Run tasks on Ray (local cluster by default, or --address / RAY_ADDRESS) or sequentially in-process when ray
is not importable; the driver gets every outcome through on_result as it arrives (it alone writes results).

The sweep engine sits below what it runs: a Task carries its own function (a module-level one, so Ray pickles it by
reference), and `hwnorm synth` (hwnorm.reports.synth), `hwnorm accuracy` (hwnorm.torch.accuracy) and `hwnorm explore`
(hwnorm.explore.measure) hand it their tasks; it imports none of them."""
from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass


class EngineError(RuntimeError):
    """The engine cannot start (e.g. an unreachable cluster address); the message says what to do."""


class TaskError(RuntimeError):
    """A task's failure whose message says it all (e.g. a synthesis step and its log tail): recorded without the
    exception's type name."""


@dataclass(frozen=True)
class Task:
    """One unit of work: `run(payload)` returns the measurement's result dict; `key` is its cache key."""

    measurement: str
    key: str
    payload: dict
    cpus: float = 1
    run: Callable[[dict], dict] | None = None

    @property
    def label(self) -> str:
        return f"{self.measurement} {self.payload.get('label', '')}".strip()


def node_id() -> str:
    """The Ray node this runs on (or 'local:<host>' outside Ray)."""
    try:
        import ray
        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return f"local:{socket.gethostname()}"


def execute(task: Task) -> dict:
    """Run a task; never raises: a failure comes back as {"ok": False, "error": ...} so the sweep goes on."""
    t0 = time.perf_counter()
    base = {"key": task.key, "measurement": task.measurement, "node": node_id(), "pid": os.getpid()}
    try:
        result = task.run(task.payload)
    except Exception as e:  # noqa: BLE001 - recorded with the point, the sweep goes on
        tail = "".join(traceback.format_exception(e)[-3:]).strip()
        msg = str(e) if isinstance(e, TaskError) else f"{type(e).__name__}: {e}"
        return {**base, "ok": False, "error": msg, "traceback": tail,
                "seconds": round(time.perf_counter() - t0, 3)}
    return {**base, "ok": True, "result": result, "seconds": round(time.perf_counter() - t0, 3)}


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class SequentialEngine:
    """Every task in this process, one after another (the fallback without ray)."""

    name = "sequential"

    def describe(self) -> str:
        return "sequential (in-process)"

    def run(self, tasks: list[Task], on_result, on_progress=None):
        for i, t in enumerate(tasks):
            if on_progress:
                on_progress(running=1, label=t.label)
            on_result(t, execute(t))

    def close(self):
        pass


def check_reachable(address: str, timeout: float = 3.0):
    """Fail within `timeout` seconds, with a clear message, if host:port of a cluster address does not answer."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"--address {address!r} is not host:port (e.g. 10.0.0.5:6379), ray://host:10001 or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise EngineError(f"Ray cluster at {address} is unreachable ({e.strerror or e}; waited at most {timeout:g} s): "
                          f"start it with `ray start --head --port {port}` or give the right --address / RAY_ADDRESS") from None


def _remote_execute():
    import ray
    return ray.remote(max_retries=1)(execute)


class RayEngine:
    """Tasks as Ray tasks with resource hints (num_cpus per task); local by default, a cluster with `address`."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, connect_timeout: float = 3.0,
                 spread: bool = False):
        import ray
        self.strategy = "SPREAD" if spread else "DEFAULT"
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        if self.address:
            check_reachable(self.address, connect_timeout)
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", ignore_reinit_error=True)
            except Exception as e:  # noqa: BLE001 - ray raises several types for a bad cluster
                raise EngineError(f"cannot join the Ray cluster at {self.address}: {type(e).__name__}: {e}") from None
        else:
            os.environ.pop("RAY_ADDRESS", None)
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", ignore_reinit_error=True)
        self.ray = ray

    def describe(self) -> str:
        cpus = int(self.ray.cluster_resources().get("CPU", 0))
        nodes = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        where = f"cluster at {self.address}" if self.address else "local"
        return f"ray {self.ray.__version__} ({where}: {nodes} node(s), {cpus} CPUs)"

    def run(self, tasks: list[Task], on_result, on_progress=None):
        remote = _remote_execute()
        refs = {remote.options(num_cpus=t.cpus, name=t.label[:60], scheduling_strategy=self.strategy).remote(t): t for t in tasks}
        cpus = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        pending = list(refs)
        while pending:
            if on_progress:
                on_progress(running=min(len(pending), cpus))
            done, pending = self.ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in done:
                t = refs[ref]
                try:
                    outcome = self.ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a worker that died: the point fails, the sweep goes on
                    outcome = {"key": t.key, "measurement": t.measurement, "ok": False, "node": None,
                               "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                on_result(t, outcome)

    def close(self):
        self.ray.shutdown()


def make_engine(kind: str = "auto", address: str | None = None, num_cpus: int | None = None, connect_timeout: float = 3.0,
                spread: bool = False):
    """'ray', 'sequential' or 'auto' (ray if importable, else sequential); returns (engine, note on the choice)."""
    if kind not in ("auto", "ray", "sequential"):
        raise EngineError(f"--engine {kind!r} is not supported: allowed auto, ray, sequential")
    if kind == "sequential":
        return SequentialEngine(), "sequential engine (asked for)"
    if not ray_available():
        if kind == "ray" or address or os.environ.get("RAY_ADDRESS"):
            raise EngineError("ray is not installed: pip install 'hwnorm[explore]' (or `make install`)")
        return SequentialEngine(), "sequential engine (ray is not installed: pip install 'hwnorm[explore]')"
    t0 = time.monotonic()
    eng = RayEngine(address, num_cpus, connect_timeout, spread)
    return eng, f"ray engine, started in {time.monotonic() - t0:.1f} s"
