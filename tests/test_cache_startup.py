"""numba's on-disk cache (cache=True) works across processes: a second process that imports gemm
and runs one gemm_i8 loads the compiled kernels instead of compiling them again."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from conftest import REPO, child_env

SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import gemm
from gemm.cpu import driver
t1 = time.perf_counter()
rng = np.random.default_rng(0)
a = rng.integers(-128, 128, (5, 70), dtype=np.int8)
b = rng.integers(-127, 128, (70, 33), dtype=np.int8)
c = gemm.gemm_i8(a, b, threads=1)
t2 = time.perf_counter()
assert (c == a.astype(np.int32) @ b.astype(np.int32)).all()
stats = {name: getattr(driver, name).stats for name in ("run_serial", "pack_rows", "pack_b_panels")}
print(json.dumps({
    "import_s": t1 - t0, "first_call_s": t2 - t1,
    "misses": {k: sum(v.cache_misses.values()) for k, v in stats.items()},
    "hits": {k: sum(v.cache_hits.values()) for k, v in stats.items()},
}))
"""


def _run() -> tuple[float, dict]:
    env = child_env()
    for name in ("I8GEMM_CPU_PATH", "I8GEMM_NUM_THREADS"):
        env.pop(name, None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_uses_the_cache(record_property):
    first_wall, first = _run()     # compiles (and saves) if the cache is cold
    second_wall, second = _run()
    report = (f"first process {first_wall:.2f} s (first call {first['first_call_s']:.2f} s, "
              f"misses {first['misses']}); second process {second_wall:.2f} s (import "
              f"{second['import_s']:.2f} s, first call {second['first_call_s']:.2f} s, "
              f"hits {second['hits']}, misses {second['misses']})")
    record_property("cache_startup", report)
    print(report)
    assert second_wall < 10.0, report
    # Nothing the second process ran was compiled again: every kernel came from the disk cache.
    assert all(v == 0 for v in second["misses"].values()), report
    assert second["hits"]["run_serial"] >= 1, report
