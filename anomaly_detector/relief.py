"""Memory relief (SIGUSR1): collect garbage, hand freed heap back to the OS, log RSS before and after.

The supervisor runs it itself and bumps relief_generation in the control block; every child
notices the change between batches and runs it too.
"""
import ctypes
import ctypes.util
import gc
import logging

import psutil

log = logging.getLogger(__name__)
_libc = None


def _malloc_trim():
    """glibc's malloc_trim(0): returns free heap pages to the OS; absent on other C libraries."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    trim = getattr(_libc, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


class ReliefWatch:
    """A child's view of SIGUSR1: relief_generation in the control block, checked between batches."""

    def __init__(self, control, who):
        self.control, self.who = control, who
        self.seen = control.flags().relief_generation

    def check(self, generation=None):
        """Run memory relief once for each new generation; pass `generation` when the flags were just read."""
        if generation is None:
            generation = self.control.flags().relief_generation
        if generation != self.seen:
            self.seen = generation
            relieve_memory(self.who)


def relieve_memory(who, trim_caches=None):
    """gc, optional cache trimming (a callable), malloc_trim; logs and returns (rss_before, rss_after) bytes."""
    process = psutil.Process()
    before = process.memory_info().rss
    if trim_caches is not None:
        trim_caches()
    collected = gc.collect()
    _malloc_trim()
    after = process.memory_info().rss
    log.info("memory relief in %s: RSS %.1f MiB -> %.1f MiB (%d objects collected)",
             who, before / 2**20, after / 2**20, collected)
    return before, after
