"""The consume loop's garbage-collector settings, and their undoing."""

from __future__ import annotations

import gc

from streamer.consumer import GC_THRESHOLD, few_collections


def test_the_loop_runs_with_startup_frozen_and_a_high_threshold() -> None:
    before = gc.get_threshold()
    with few_collections():
        assert gc.get_threshold() == (GC_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cycles_made_in_the_loop_are_still_collected() -> None:
    class Node:
        def __init__(self) -> None:
            self.partner: Node | None = None

    def cycles(count: int) -> None:
        for _ in range(count):
            a, b = Node(), Node()
            a.partner, b.partner = b, a

    with few_collections():
        collections = gc.get_stats()[0]["collections"]
        cycles(GC_THRESHOLD)  # two objects each: past the threshold
        assert gc.get_stats()[0]["collections"] > collections
        assert gc.get_count()[0] < GC_THRESHOLD


def test_loops_side_by_side_restore_the_settings_when_the_last_ends() -> None:
    before = gc.get_threshold()
    with few_collections():
        with few_collections():
            pass
        assert gc.get_threshold()[0] == GC_THRESHOLD  # the first still runs
    assert gc.get_threshold() == before
