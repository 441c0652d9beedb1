"""Host-side threads: every task runs once, in the caller's context; errors and Ctrl-C stop
the rest and leave nothing running; spans tile a range exactly."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from astroswin.engine import parallel
from astroswin.engine.parallel import run_all, spans


@pytest.fixture
def two_cpus(monkeypatch):
    """Two threads even on a one-CPU runner (run_all caps them at the CPUs)."""
    monkeypatch.setattr(parallel, "available_cpus", lambda: 2)


@pytest.mark.parametrize("workers", [1, 3])
def test_every_task_runs_once(workers, two_cpus):
    done, lock = [], threading.Lock()

    def task(i):
        with lock:
            done.append(i)

    run_all([lambda i=i: task(i) for i in range(20)], workers)
    assert sorted(done) == list(range(20))


class _Tracker:
    """Tasks that count how many are running and how many ended."""

    def __init__(self):
        self.lock, self.running, self.ended = threading.Lock(), 0, 0

    def task(self, seconds=0.05, then=None):
        def run():
            with self.lock:
                self.running += 1
            try:
                time.sleep(seconds)
                if then is not None:
                    then()
            finally:
                with self.lock:
                    self.running -= 1
                    self.ended += 1

        return run


def test_an_error_stops_the_tasks_not_started_and_waits_for_the_running_one(two_cpus):
    def fail():
        raise MemoryError("out of memory")

    tracker = _Tracker()
    with pytest.raises(MemoryError, match="out of memory"):
        run_all([tracker.task(0.2), fail, *[tracker.task() for _ in range(50)]], 2)
    assert tracker.running == 0  # the slow first task had ended
    assert tracker.ended < 10  # the others were cancelled, not run


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler, as a terminal gives it: a shell starts a background job
    (``pytest &``, ``nohup``) with SIGINT ignored, and Python then installs none."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_waiting_leaves_no_task_running(two_cpus, ctrl_c_raises):
    """SIGINT reaches the main thread while it waits for the pool: the running tasks finish
    (they write into the caller's arrays), the rest never start, and the interrupt is raised."""
    tracker = _Tracker()
    interrupt = tracker.task(0.05, then=lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        run_all([interrupt, *[tracker.task(0.1) for _ in range(40)]], 2)
    assert tracker.running == 0
    time.sleep(0.3)
    assert tracker.running == 0 and tracker.ended < 10  # and none started afterwards


def test_tasks_run_in_the_callers_numpy_error_state(two_cpus):
    """numpy's error state is per context: a thread starts with the default (warn) unless the
    task runs in the caller's."""
    with np.errstate(divide="raise"), pytest.raises(FloatingPointError):
        run_all([lambda: np.float64(1.0) / np.float64(0.0), lambda: None], 2)


@pytest.mark.parametrize(("length", "pieces", "smallest", "count"), [(100, 3, 1, 3), (100, 8, 40, 2), (30, 4, 40, 1), (7, 10, 1, 7), (0, 3, 1, 1)])
def test_spans_tile_the_range(length, pieces, smallest, count):
    cuts = spans(length, pieces, smallest)
    assert len(cuts) == count
    assert cuts[0][0] == 0 and cuts[-1][1] == length
    assert all(stop == start for (_, stop), (start, _) in zip(cuts, cuts[1:]))
    if count > 1:
        assert min(stop - start for start, stop in cuts) >= smallest
