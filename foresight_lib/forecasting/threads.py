"""How many CPUs a task may use, and the cap on a process's numeric threads.

A backtest's worker processes each run one thread; a train task of the DAG takes its share
of the machine's CPUs, since other train tasks run beside it.
"""
from __future__ import annotations

import contextlib
import os
import sys


def limit_threads(threads: int = 1) -> None:
    """At most ``threads`` BLAS/OpenMP/torch threads in this process.

    One per worker by default: the workers already fill the cores. A train task of the
    DAG passes its share of the CPUs, since other train tasks run beside it.
    """
    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    with contextlib.suppress(ImportError):  # threadpoolctl ships with scikit-learn; without it the variables do
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    torch = sys.modules.get("torch")  # only when loaded: a local model's task never pays for importing it
    if torch is not None:
        torch.set_num_threads(threads)


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's cpuset), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def cpu_share(tasks_at_once: int) -> int:
    """The CPUs one of ``tasks_at_once`` tasks running side by side may use, at least 1."""
    return max(1, cpu_count() // max(1, int(tasks_at_once)))
