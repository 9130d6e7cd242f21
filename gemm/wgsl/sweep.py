"""Time GPU GEMM configurations on one shape and print the best (a hand tool beside the tuner).

    python -m gemm.wgsl.sweep --shape 4096,4096,4096            # a curated list of configs
    python -m gemm.wgsl.sweep --shape 4096,4096,4096 --all      # every config in tiles.space
    python -m gemm.wgsl.sweep --shape 64,512,32000 --float      # with the float epilogue

Each configuration is checked against numpy on sampled rows before it is timed (a wrong one is
reported and skipped), then its multiply dispatch is timed with GPU timestamps (synchronised wall
time where the adapter has none), `--repeats` dispatches in one pass. TOPS = 2*M*K*N / time.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from dispatch import gpu
from dispatch.gpu_array import GpuArray

from .. import prepare_b_quantized
from . import driver, tiles

CURATED = [
    tiles.Tiled(128, 128, 8, 8, 8), tiles.Tiled(128, 128, 16, 8, 8), tiles.Tiled(128, 128, 4, 8, 8),
    tiles.Tiled(128, 256, 8, 8, 16), tiles.Tiled(256, 128, 8, 16, 8), tiles.Tiled(128, 256, 8, 8, 8),
    tiles.Tiled(256, 128, 8, 8, 8), tiles.Tiled(128, 128, 8, 16, 8), tiles.Tiled(128, 128, 8, 8, 16),
    tiles.Tiled(64, 128, 8, 8, 8), tiles.Tiled(128, 64, 8, 8, 8), tiles.Tiled(64, 64, 8, 4, 4),
    tiles.Tiled(64, 64, 8, 8, 8), tiles.Tiled(64, 128, 16, 8, 8), tiles.Tiled(32, 128, 8, 4, 8),
    tiles.Tiled(16, 128, 8, 4, 8), tiles.Tiled(16, 64, 8, 4, 4), tiles.Tiled(256, 256, 8, 16, 16),
    tiles.Tiled(128, 128, 16, 8, 16), tiles.Tiled(64, 256, 8, 8, 16),
    tiles.Tiled(16, 64, 8, 4, 4, ks=2), tiles.Tiled(16, 64, 8, 4, 4, ks=4),
    tiles.Tiled(32, 128, 8, 4, 8, ks=2), tiles.Tiled(64, 128, 8, 8, 8, ks=2),
    tiles.SmallM(64, 4), tiles.SmallM(32, 8), tiles.SmallM(64, 2), tiles.SmallM(128, 2),
    tiles.SmallM(32, 4), tiles.SmallM(16, 16), tiles.SmallM(64, 8),
]


def _check(c: np.ndarray, a: np.ndarray, bq: np.ndarray, rows: np.ndarray) -> bool:
    return np.array_equal(c[rows], a[rows].astype(np.int32) @ bq.astype(np.int32))


def sweep(shape, configs, repeats: int = 20, float_out: bool = False, out=sys.stdout):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.integers(-127, 128, (m, k), dtype=np.int8)
    bq = rng.integers(-127, 128, (k, n), dtype=np.int8)
    gb = prepare_b_quantized(bq, quant_mult=8.0).to_gpu()
    ga = GpuArray.from_numpy(a)
    rows = np.unique(np.concatenate([rng.integers(0, m, 6), [0, m - 1]]))
    limits = driver.limits()
    valid = []
    for cfg in configs:
        if cfg.kernel == "small_m" and m > tiles.SMALL_M_MAX:
            continue
        why = (cfg.why_invalid(limits, tiles.small_m_rows(m)) if cfg.kernel == "small_m"
               else cfg.why_invalid(limits))
        if why is None:
            valid.append(cfg)
    print(f"{len(valid)} configurations on {shape}, {repeats} repeats each "
          f"({gpu.describe(gpu.adapter())['name']})", file=out, flush=True)
    kwargs = {"a_quant_mult": 4.0} if float_out else {}
    results = []
    for cfg in valid:
        t0 = time.perf_counter()
        try:
            plan = driver.build(ga, gb, _params={"config": cfg}, **kwargs)
            gpu.run(plan.dispatches)
            c = plan.c.numpy()
            if not float_out and not _check(c, a, bq, rows):
                print(f"  {cfg}: WRONG RESULT, skipped", file=out, flush=True)
                continue
            seconds, how = gpu.time_dispatches(plan.dispatches[1:], repeats)
        except Exception as exc:  # a configuration the driver rejects is reported, not fatal
            print(f"  {cfg}: failed: {exc}", file=out, flush=True)
            continue
        tops = 2.0 * m * k * n / seconds / 1e12
        results.append((seconds, cfg))
        print(f"  {cfg}: {seconds * 1e6:9.1f} us  {tops:7.2f} TOPS ({how}; "
              f"{time.perf_counter() - t0:.1f} s incl. compile)", file=out, flush=True)
    results.sort(key=lambda r: r[0])
    default = tiles.default_config(shape, limits)
    print("best:", file=out)
    for seconds, cfg in results[:5]:
        mark = "  <- default" if cfg == default else ""
        print(f"  {cfg}  {2.0 * m * k * n / seconds / 1e12:.2f} TOPS{mark}", file=out)
    print(f"default: {default}", file=out, flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gemm.wgsl.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="4096,4096,4096", help="M,K,N")
    parser.add_argument("--all", action="store_true", help="every configuration of tiles.space")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--float", action="store_true", help="float output epilogue")
    args = parser.parse_args(argv)
    shape = tuple(int(x) for x in args.shape.split(","))
    if gpu.unavailable_reason():
        print(f"no GPU: {gpu.unavailable_reason()}", file=sys.stderr)
        return 2
    configs = tiles.space(shape, driver.limits()) if args.all else CURATED
    sweep(shape, configs, args.repeats, args.float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
