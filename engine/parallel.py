"""Host-side work on a few threads: the emission bins and the flux anchor.

Once the network runs on a GPU the CPU's share dominates: on one thread of the project's 2-core
VM the smooth emission and the anchor cost 4.0 s per 9 MP RGB frame, where an H200 runs the
network over the same frame in about 1.1 s (``bench/gpu.json``). scipy.ndimage's filters and
numpy's partition release the GIL, so threads scale them without copying the image to other
processes: 4.0 s -> 2.5 s on two threads. Each caller splits its work so that the pieces
running at once hold about the temporaries one thread held before (tracemalloc, 9 MP RGB:
126 MB on one thread, 129 MB on two), and so that the result does not depend on the thread
count beyond float32 rounding (scipy's running sums start where a piece starts: 1 ulp in 2 of
9 million pixels next to stars of 1e9 total flux).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the platform tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def run_all(tasks: Iterable[Callable[[], None]], workers: int) -> None:
    """Run every task, at most ``workers`` (and no more than the CPUs) at a time, each in the
    caller's context (``np.errstate`` included).

    The first error stops the tasks not yet started and is raised once the running ones have
    ended; so is a Ctrl-C that arrives while waiting. No task is ever left running after
    this returns or raises: they write into the caller's arrays.
    """
    tasks = list(tasks)
    workers = min(workers, len(tasks), available_cpus())
    if workers <= 1:
        for task in tasks:
            task()
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="astroswin")
    futures = [pool.submit(contextvars.copy_context().run, task) for task in tasks]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        for future in futures:
            future.cancel()  # those not started; the running ones finish
        _drain(pool)
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()


def _drain(pool: ThreadPoolExecutor) -> None:
    """Wait for the pool's running tasks, through further Ctrl-Cs (a piece takes a fraction
    of a second); one that came while waiting is raised afterwards."""
    interrupted = False
    while True:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
            break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt


def spans(length: int, pieces: int, smallest: int = 1) -> list[tuple[int, int]]:
    """``range(length)`` cut into at most ``pieces`` near-equal ``(start, stop)`` spans, none
    shorter than ``smallest`` (unless ``length`` is)."""
    count = max(1, min(pieces, length // max(1, smallest)))
    edges = [round(i * length / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))
