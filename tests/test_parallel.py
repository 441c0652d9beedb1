"""Host-side threads: every task runs once, errors surface, spans tile a range exactly."""

from __future__ import annotations

import threading

import pytest

from astroswin.engine.parallel import run_all, spans


@pytest.mark.parametrize("workers", [1, 3])
def test_every_task_runs_once(workers):
    done, lock = [], threading.Lock()

    def task(i):
        with lock:
            done.append(i)

    run_all([lambda i=i: task(i) for i in range(20)], workers)
    assert sorted(done) == list(range(20))


def test_the_first_error_is_raised_after_every_task_has_ended():
    ended = []

    def fail():
        raise MemoryError("out of memory")

    def slow():
        threading.Event().wait(0.2)
        ended.append(True)

    with pytest.raises(MemoryError, match="out of memory"):
        run_all([fail, slow, slow], 2)
    assert ended == [True, True]


@pytest.mark.parametrize(("length", "pieces", "smallest", "count"), [(100, 3, 1, 3), (100, 8, 40, 2), (30, 4, 40, 1), (7, 10, 1, 7), (0, 3, 1, 1)])
def test_spans_tile_the_range(length, pieces, smallest, count):
    cuts = spans(length, pieces, smallest)
    assert len(cuts) == count
    assert cuts[0][0] == 0 and cuts[-1][1] == length
    assert all(stop == start for (_, stop), (start, _) in zip(cuts, cuts[1:]))
    if count > 1:
        assert min(stop - start for start, stop in cuts) >= smallest
