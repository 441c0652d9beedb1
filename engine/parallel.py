"""Host-side work on a few threads: the emission bins and the flux anchor.

Once the network runs on a GPU the CPU's share dominates: on one thread of the project's 2-core
VM the smooth emission and the anchor cost 4.0 s per 9 MP RGB frame, where an H200 runs the
network over the same frame in about 1.1 s (``bench/gpu.json``). scipy.ndimage's filters and
numpy's partition release the GIL, so threads scale them without copying the image to other
processes: 4.0 s -> 2.5 s on two threads. Each caller splits its work so that ``workers``
pieces running at once hold about the temporaries one piece held before (tracemalloc: the
same peak on 1, 2 and 4 threads), and so that the result does not depend on ``workers``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor


def run_all(tasks: Iterable[Callable[[], None]], workers: int) -> None:
    """Run every task, at most ``workers`` at a time; the first error is raised once all
    have ended (a task is never left running in the background)."""
    tasks = list(tasks)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(min(workers, len(tasks)), thread_name_prefix="astroswin") as pool:
        futures = [pool.submit(task) for task in tasks]
    for future in futures:
        future.result()


def spans(length: int, pieces: int, smallest: int = 1) -> list[tuple[int, int]]:
    """``range(length)`` cut into at most ``pieces`` near-equal ``(start, stop)`` spans, none
    shorter than ``smallest`` (unless ``length`` is)."""
    count = max(1, min(pieces, length // max(1, smallest)))
    edges = [round(i * length / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))
