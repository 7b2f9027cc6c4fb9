"""The prefetch pool: completion order (or manifest order), errors handed over, bounded depth, overlap."""

from __future__ import annotations

import threading

import pytest

from diffrun.engine.prefetch import Prefetcher


def test_order_kept_and_errors_delivered_in_place() -> None:
    def load(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n * n

    got = list(Prefetcher(range(8), load, depth=3, ordered=True))
    assert [item for item, _ in got] == list(range(8))
    assert [r for _, r in got if not isinstance(r, Exception)] == [0, 1, 4, 16, 25, 36, 49]
    assert isinstance(got[3][1], ValueError) and str(got[3][1]) == "three"
    with pytest.raises(ValueError):
        Prefetcher([1], load, depth=0)


def test_depth_bounds_loaded_but_untaken_items() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def load(n: int) -> int:
        with lock:
            started.append(n)
        return n

    prefetcher = Prefetcher(range(20), load, depth=4)
    iterator = iter(prefetcher)
    first = next(iterator)
    assert first == (0, 0)
    # However long the consumer dawdles, no more than depth items beyond the taken ones start.
    for _ in range(50):
        with lock:
            assert len(started) <= 1 + 4
        threading.Event().wait(0.002)
    rest = list(iterator)
    assert len(rest) == 19 and prefetcher.peak <= 4
    assert sorted(started) == list(range(20))


def test_next_items_load_while_the_consumer_works() -> None:
    """Item 1 must finish loading while the consumer still holds item 0 (no timing assumptions)."""
    loaded_1 = threading.Event()

    def load(n: int) -> int:
        if n == 1:
            loaded_1.set()
        return n

    for item, _ in Prefetcher(range(3), load, depth=2):
        if item == 0:
            assert loaded_1.wait(10), "item 1 was not prefetched while item 0 was being used"


def test_stop_ends_iteration_and_close_starts_nothing_new() -> None:
    release = threading.Event()
    calls: list[int] = []

    def load(n: int) -> int:
        calls.append(n)
        if n >= 1:
            release.wait(10)
        return n

    stop = threading.Event()
    prefetcher = Prefetcher(range(10), load, depth=2, should_stop=stop.is_set)
    seen = []
    for item, _ in prefetcher:
        seen.append(item)
        stop.set()  # item 1 is still loading: the iterator gives up instead of waiting for it
    prefetcher.close()
    release.set()
    assert seen == [0]
    assert max(calls) <= 2  # nothing started beyond the depth window after close


def test_a_slow_item_does_not_hold_back_the_ones_behind_it() -> None:
    """Item 0 loads until the consumer has taken items 1..3; the window stays within depth meanwhile."""
    release = threading.Event()
    started: list[int] = []

    def load(n: int) -> int:
        started.append(n)
        if n == 0:
            assert release.wait(10), "item 0 was never released: the others waited behind it"
        return n

    prefetcher = Prefetcher(range(10), load, depth=4)
    order = []
    for item, result in prefetcher:
        assert result == item
        order.append(item)
        if len(order) == 3:
            for _ in range(20):  # however long the consumer dawdles: 3 taken + 4 in flight = 7 started
                assert len(started) <= 7
                threading.Event().wait(0.002)
            release.set()
    assert order[:3] == [1, 2, 3] and sorted(order) == list(range(10))
    assert prefetcher.peak <= 4


def test_ready_items_come_earliest_first() -> None:
    """Of the items ready at once, the earliest in the list is handed out first."""
    gate = threading.Event()

    def load(n: int) -> int:
        gate.wait(10)  # 0, 1, 2 finish together, in any order
        return n

    prefetcher = Prefetcher(range(3), load, depth=3)
    gate.set()
    for _ in range(5000):  # until all three are loaded and waiting
        if len(prefetcher._ready) == 3:
            break
        threading.Event().wait(0.002)
    assert [item for item, _ in prefetcher] == [0, 1, 2]
