"""graph.parallel: every chunk runs exactly once, on however many threads, and errors surface."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graph import parallel


@settings(max_examples=60, deadline=None)
@given(total=st.integers(0, 5000), threads=st.integers(1, 8), minimum=st.integers(1, 700))
def test_bounds_cover_the_range_in_order(total, threads, minimum):
    chunks = parallel.bounds(total, threads, minimum)
    covered = [i for lo, hi in chunks for i in range(lo, hi)]
    assert covered == list(range(total))
    assert all(hi > lo for lo, hi in chunks)
    assert len(chunks) <= max(1, threads * parallel.CHUNKS_PER_THREAD)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_every_chunk_runs_once(threads):
    seen, lock = [], threading.Lock()

    def record(lo, hi):
        with lock:
            seen.append((lo, hi))

    chunks = parallel.bounds(1000, threads, 7)
    parallel.run_chunks(record, chunks, threads)
    assert sorted(seen) == chunks


def test_an_error_in_a_chunk_propagates():
    def fail_on_five(lo, hi):
        if lo <= 5 < hi:
            raise ValueError("chunk with 5")

    with pytest.raises(ValueError, match="chunk with 5"):
        parallel.run_chunks(fail_on_five, parallel.bounds(100, 2, 1), 2)
