"""Where independent evaluation tasks run: in this process (default) or on a Ray cluster.

A task is ``fn(lm, item) -> result`` with a module-level ``fn`` and a picklable ``item``; sweep cells and
arena methods are such tasks. The in-process executor calls them one after another on the loaded model.
The Ray executor starts actors that each load the model once (through a picklable factory) and feeds
them tasks, reporting results as they finish, so a resumable caller can save each one at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from steerlab.errors import SteerlabError

if TYPE_CHECKING:
    from steerlab.lm import LM

Task = Callable[["LM", Any], Any]
OnResult = Callable[[int, Any], None]
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HOME", "TRANSFORMERS_OFFLINE")


class InProcessExecutor:
    """Runs tasks sequentially on one model in this process."""

    name = "in-process"

    def __init__(self, lm: LM) -> None:
        self.lm = lm

    def map(self, fn: Task, items: Sequence[Any], on_result: OnResult | None = None) -> list[Any]:
        results = []
        for i, item in enumerate(items):
            result = fn(self.lm, item)
            if on_result is not None:
                on_result(i, result)
            results.append(result)
        return results

    def close(self) -> None:
        """Nothing to release."""


class _Worker:
    """Ray actor body: loads the model once, then runs tasks on it."""

    def __init__(self, factory: Callable[[], LM]) -> None:
        self.lm = factory()

    def run(self, fn: Task, item: Any) -> Any:
        return fn(self.lm, item)


class RayExecutor:
    """Fans tasks out to Ray actors (one model per actor). ``address=None`` starts a local Ray.

    ``factory`` builds the model inside each actor (e.g. ``functools.partial(steerlab.load, source)``),
    so models never travel over the wire; results are returned in input order.
    """

    name = "ray"

    def __init__(
        self,
        factory: Callable[[], LM],
        *,
        address: str | None = None,
        workers: int = 1,
        cpus_per_worker: float = 1.0,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise SteerlabError("--executor ray needs Ray: pip install 'steerlab[ray]'") from exc
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            options = {"address": address, "ignore_reinit_error": True, "log_to_driver": False}
            if env:
                options["runtime_env"] = {"env_vars": env}
            options.update(init_options or {})
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SteerlabError(
                    f"could not start or reach Ray at {address or 'a new local cluster'}: {exc}"
                ) from exc
            self._started = True
        actor = ray.remote(num_cpus=cpus_per_worker)(_Worker)
        self._actors = [actor.remote(factory) for _ in range(max(1, workers))]

    def map(self, fn: Task, items: Sequence[Any], on_result: OnResult | None = None) -> list[Any]:
        ray = self._ray
        pending: dict[Any, int] = {}
        free = list(self._actors)
        queue = list(enumerate(items))
        results: list[Any] = [None] * len(items)
        busy: dict[Any, Any] = {}
        while queue or pending:
            while queue and free:
                i, item = queue.pop(0)
                worker = free.pop()
                ref = worker.run.remote(fn, item)
                pending[ref] = i
                busy[ref] = worker
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                free.append(busy.pop(ref))
                try:
                    results[i] = ray.get(ref)
                except Exception as exc:  # a task error re-raised with the task index
                    raise SteerlabError(f"task {i} failed on a Ray worker: {exc}") from exc
                if on_result is not None:
                    on_result(i, results[i])
        return results

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(
    kind: str,
    lm: LM | None,
    factory: Callable[[], LM] | None = None,
    address: str | None = None,
    workers: int = 1,
) -> InProcessExecutor | RayExecutor:
    """``kind`` is ``in-process`` (needs ``lm``) or ``ray`` (needs ``factory``; ``address`` for a cluster)."""
    if kind in ("in-process", "local", "inprocess"):
        if lm is None:
            raise SteerlabError("the in-process executor needs a loaded model")
        return InProcessExecutor(lm)
    if kind == "ray":
        if factory is None:
            raise SteerlabError("the Ray executor needs a model factory to load the model inside workers")
        return RayExecutor(factory, address=address, workers=workers)
    raise SteerlabError(f"unknown executor '{kind}'; expected 'in-process' or 'ray'")
