"""Counters for `/metrics` (Prometheus text format, written by hand) and the per-request log line."""

from __future__ import annotations

import collections
import threading
from typing import Any

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency_sum += seconds
            self.latency_count += 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
                    break
            else:
                self.buckets[-1] += 1

    def render(self, gauges: dict[str, tuple[str, Any]]) -> str:
        """The text exposition: requests by route and status, latency histogram, and `gauges` (name: (help, value))."""
        lines = ["# HELP diffrun_requests_total HTTP requests by route and status.",
                 "# TYPE diffrun_requests_total counter"]
        with self._lock:
            for (route, status), count in sorted(self.requests.items()):
                lines.append(f'diffrun_requests_total{{route="{_label(route)}",status="{status}"}} {count}')
            lines += ["# HELP diffrun_request_seconds Request latency.", "# TYPE diffrun_request_seconds histogram"]
            total = 0
            for bound, count in zip((*BUCKETS, "+Inf"), self.buckets, strict=True):
                total += count
                lines.append(f'diffrun_request_seconds_bucket{{le="{bound}"}} {total}')
            lines.append(f"diffrun_request_seconds_sum {self.latency_sum:.6f}")
            lines.append(f"diffrun_request_seconds_count {self.latency_count}")
        for name, (help_text, value) in gauges.items():
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
