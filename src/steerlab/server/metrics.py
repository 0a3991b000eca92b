"""Counters the server exposes at ``/metrics`` (Prometheus text) and ``/health`` (JSON)."""

from __future__ import annotations

import threading
import time
from collections import deque


class Metrics:
    """Thread-safe counters plus a sliding window for tokens per second."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.started = time.time()
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, int]] = deque()
        self.counters: dict[str, int] = {
            "requests_total": 0,
            "requests_finished_total": 0,
            "requests_failed_total": 0,
            "requests_cancelled_total": 0,
            "prompt_tokens_total": 0,
            "generated_tokens_total": 0,
            "decode_steps_total": 0,
            "prefills_total": 0,
        }
        self.gauges: dict[str, int] = {"queue_depth": 0, "running": 0, "batch_size_max": 0}

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + amount

    def set(self, name: str, value: int) -> None:
        with self._lock:
            self.gauges[name] = value
            if name == "running":
                self.gauges["batch_size_max"] = max(self.gauges["batch_size_max"], value)

    def tokens(self, n: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.counters["generated_tokens_total"] += n
            self._recent.append((now, n))
            self._prune(now)

    def _prune(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self.window:
            self._recent.popleft()

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            if not self._recent:
                return 0.0
            span = max(now - self._recent[0][0], 1.0)
            return sum(n for _, n in self._recent) / span

    def snapshot(self) -> dict[str, float]:
        tps = self.tokens_per_second()
        with self._lock:
            out: dict[str, float] = {**self.counters, **self.gauges}
        out["tokens_per_second"] = round(tps, 3)
        out["uptime_seconds"] = round(time.time() - self.started, 3)
        return out

    def prometheus(self) -> str:
        lines = []
        for name, value in self.snapshot().items():
            kind = "counter" if name.endswith("_total") else "gauge"
            lines.append(f"# TYPE steerlab_{name} {kind}")
            lines.append(f"steerlab_{name} {value}")
        return "\n".join(lines) + "\n"
