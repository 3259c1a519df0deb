"""Threads for `low`-priority work (batch lines, low workflow nodes) inside a replica.

A backend runs such calls in threads of the lowest CPU priority (SCHED_IDLE), so that on a busy
machine they take only the CPU that the platform's other work leaves: the same replica's other
calls, the other models' replicas, the ingress. A thread's nice value cannot be raised back, so
these are threads of their own, never the event loop's default pool.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


def lowest_os_priority() -> None:
    """Give the calling thread the lowest CPU priority: Linux's SCHED_IDLE policy, under which it
    runs only on CPU time no other thread wants, and nice 19 (where SCHED_IDLE is unknown, the
    lowest priority of the usual policy)."""
    try:
        _set_os_priority(threading.get_native_id(), getattr(os, "SCHED_IDLE", 0), 19)
    except OSError:  # not allowed here: it runs at the process's priority
        log.warning("cannot lower the background threads' priority", exc_info=True)


_warned = False  # that a priority could not be raised (logged once)


def share_os_priority(thread: int) -> tuple[int, int] | None:
    """Give `thread` the calling thread's CPU priority; its own (policy, nice), which it takes
    back with `restore_os_priority`. For a background thread that holds something a foreground
    one waits for (the llama.cpp engine, up to its next token): on a busy machine it would get no
    CPU, and the foreground call would wait on it (a priority inversion: measured, a realtime
    turn under another tenant's flood waited 1.1 s for its first token, 0.3 s with this). Raising
    a priority needs CAP_SYS_NICE (or RLIMIT_NICE); where it is not allowed, None."""
    try:
        before = (os.sched_getscheduler(thread), os.getpriority(os.PRIO_PROCESS, thread))
        _set_os_priority(thread, os.SCHED_OTHER, os.getpriority(os.PRIO_PROCESS, 0))
    except (OSError, AttributeError):  # AttributeError: no sched_setscheduler on this OS
        global _warned
        if not _warned:
            _warned = True
            log.warning("cannot raise a background thread's priority while a call waits for it", exc_info=True)
        return None
    return before


def restore_os_priority(before: tuple[int, int]) -> None:
    """Take back the calling thread's own priority, as `share_os_priority` returned it."""
    _set_os_priority(threading.get_native_id(), *before)


def _set_os_priority(thread: int, policy: int, nice: int) -> None:
    if hasattr(os, "sched_setscheduler"):  # Linux; elsewhere a thread has only its nice value
        os.sched_setscheduler(thread, policy, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, thread, nice)


def background_threads(name: str, workers: int) -> ThreadPoolExecutor:
    """A pool of `workers` threads at the lowest CPU priority."""
    return ThreadPoolExecutor(workers, name, initializer=lowest_os_priority)
