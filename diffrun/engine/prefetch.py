"""A bounded prefetch pool: load the next jobs' inputs while the caller runs the current one.

`Prefetcher(items, load, depth)` yields `(item, result)`, where `result` is what `load(item)` returned
or the exception it raised. By default items come in the order they finish loading (of the items
ready at once, the earliest in `items` first), so one slow input never holds back the ones behind it;
`ordered=True` keeps the order of `items`. Either way at most `depth` items are being loaded or are
loaded and waiting to be taken, so memory stays bounded by `depth` jobs' inputs (plus what the
caller holds), and a stuck load holds one of the `depth` slots until it ends. Worker threads are
daemons: a fetch stuck on the network never blocks exit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Prefetcher(Generic[T, R]):
    def __init__(self, items: Sequence[T], load: Callable[[T], R], depth: int,
                 should_stop: Callable[[], bool] | None = None, *, ordered: bool = False) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self._items = list(items)
        self._load = load
        self.depth = depth
        self.ordered = ordered
        self._should_stop = should_stop or (lambda: False)
        self._cond = threading.Condition()
        self._next = 0  # next item to start loading
        self._taken = 0  # items handed out so far
        self._ready: dict[int, R | BaseException] = {}
        self._closed = False
        self.peak = 0
        """Most items loading or loaded-and-waiting at once (never more than depth)."""
        self.wait_seconds = 0.0
        """Time the consumer spent waiting for an item that was not ready yet."""
        self._threads = [threading.Thread(target=self._work, name=f"diffrun-prefetch-{i}", daemon=True)
                         for i in range(min(depth, len(self._items)))]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                # In flight (loading, or loaded and not taken) = started - taken; in order, the window is
                # the same count, since the items taken are exactly the first `_taken`.
                while not self._closed and self._next < len(self._items) and self._next >= self._taken + self.depth:
                    self._cond.wait()
                if self._closed or self._next >= len(self._items):
                    return
                index = self._next
                self._next += 1
                self.peak = max(self.peak, self._next - self._taken)
            try:
                result: R | BaseException = self._load(self._items[index])
            except BaseException as exc:  # handed to the consumer, who decides what it means
                result = exc
            with self._cond:
                self._ready[index] = result
                self._cond.notify_all()

    def _pick(self) -> int | None:
        """The index to hand out next, if one is ready (called with the condition held)."""
        if self.ordered:
            return self._taken if self._taken in self._ready else None
        return min(self._ready) if self._ready else None

    def __iter__(self) -> Iterator[tuple[T, R | BaseException]]:
        while self._taken < len(self._items):
            started = time.perf_counter()
            with self._cond:
                while (index := self._pick()) is None:
                    if self._closed or self._should_stop():
                        return
                    self._cond.wait(0.1)
                result = self._ready.pop(index)
                self._taken += 1
                self._cond.notify_all()
            self.wait_seconds += time.perf_counter() - started
            yield self._items[index], result

    def ready(self) -> bool:
        """Whether an item can be taken without waiting."""
        with self._cond:
            return self._pick() is not None

    def close(self) -> None:
        """Start nothing new; loads already running finish in the background and are dropped."""
        with self._cond:
            self._closed = True
            self._ready.clear()
            self._cond.notify_all()

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
