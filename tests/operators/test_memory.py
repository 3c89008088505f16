"""operators.memory: freed heap really goes back to the OS (glibc, as on the workers here)."""

from __future__ import annotations

import numpy as np

from operators.memory import release_freed_heap


def _anon_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def test_release_freed_heap_returns_fragmented_free_memory():
    # 100 KiB blocks come from malloc's heap (below its mmap threshold); keeping every 50th
    # alive pins the heap's top, so free() alone cannot shrink it: the pattern a long-lived
    # actor's per-batch buffers leave behind.
    blocks = [np.ones(100 * 1024 // 8) for _ in range(2000)]
    kept = blocks[::50]
    del blocks
    before = _anon_mib()
    assert release_freed_heap()
    after = _anon_mib()
    assert before - after > 100, (before, after)
    assert all(float(k[0]) == 1.0 for k in kept)  # what is still referenced is untouched
