"""`i8gemm bench --ops --backend gpu`: each op on GPU arrays against a plain WGSL copy kernel of the
same array, timed with GPU timestamps in the same run.

For an array of (rows, cols) float32 (default (4096, 32000), 524 MB), every op's dispatches are
recorded once (ops.wgsl.programs.recording) with its outputs allocated beforehand, then timed by
dispatch.gpu.time_dispatches (a warm-up of about 100 ms, then a batch of at least 20 ms; GPU
timestamps where the adapter has them). Rounds interleave the copy and the ops, and the medians
are reported. GB/s counts the bytes an op must move at the least -- each input read once, each
output written once (logsoftmax: 4 bytes read + 4 written per value; top-k: 4 read;
quantize: 4 read + 1 written) -- over its time; "of copy" is that over the copy kernel's GB/s
(8 bytes per value). The issue's target: >= 0.50 for every op.
"""

from __future__ import annotations

import json
import statistics

import numpy as np

ROWS, COLS = 4096, 32000
TOPK = 8


def _cases(x, rows: int, cols: int, rng):
    """[(name, bytes moved, callable recording its dispatches, kept arrays)]"""
    import ops
    from dispatch.gpu_array import GpuArray

    n = rows * cols
    f32 = np.float32

    def g(shape, dtype=f32):
        return GpuArray(shape, dtype)

    def upload(a):
        return GpuArray.from_numpy(np.ascontiguousarray(a))

    out = g((rows, cols))
    other = upload(rng.standard_normal((rows, cols), dtype=f32))
    bias = upload(rng.standard_normal(cols, dtype=f32))
    w = upload(rng.standard_normal(cols, dtype=f32))
    q8, qu8 = g((rows, cols), np.int8), g((rows, cols), np.uint8)
    top = (g((rows, TOPK)), g((rows, TOPK), np.int32))
    B = 4 * n
    return [
        ("logsoftmax", 2 * B, lambda: ops.logsoftmax(x, out=out)),
        ("softmax", 2 * B, lambda: ops.softmax(x, out=out)),
        (f"log_softmax_topk k={TOPK}", B, lambda: ops.log_softmax_topk(x, TOPK, out=top)),
        ("layer_norm", 2 * B + 8 * cols, lambda: ops.layer_norm(x, w, bias, out=out)),
        ("relu", 2 * B, lambda: ops.relu(x, out=out)),
        ("exp", 2 * B, lambda: ops.exp(x, out=out)),
        ("tanh", 2 * B, lambda: ops.tanh(x, out=out)),
        ("sigmoid", 2 * B, lambda: ops.sigmoid(x, out=out)),
        ("gelu (erf)", 2 * B, lambda: ops.gelu(x, out=out)),
        ("gelu (tanh)", 2 * B, lambda: ops.gelu(x, "tanh", out=out)),
        ("add (same shape)", 3 * B, lambda: ops.add(x, other, out=out)),
        ("mul (row vector)", 2 * B + 4 * cols, lambda: ops.mul(x, bias, out=out)),
        ("bias_add gelu + residual", 3 * B + 4 * cols,
         lambda: ops.bias_add(x, bias, residual=other, activation="gelu", out=out)),
        ("quantize_linear int8", B + n,
         lambda: ops.quantize_linear(x, np.float32(0.05), np.int8(0), out=q8)),
        ("dequantize_linear int8", n + B,
         lambda: ops.dequantize_linear(q8, np.float32(0.05), np.int8(0), out=out)),
        ("dynamic_quantize_linear", B + n, lambda: ops.dynamic_quantize_linear(x, out=qu8)),
    ]


def run(rows: int, cols: int, rounds: int, rng) -> dict:
    from dispatch import gpu
    from dispatch.gpu_array import GpuArray
    from ops.wgsl import programs

    x = GpuArray.from_numpy(rng.standard_normal((rows, cols), dtype=np.float32) * 4)
    copy_dst = GpuArray((rows, cols), np.float32)
    recorded = {"copy": (8 * rows * cols, [programs.copy_dispatch(x, copy_dst)], None)}
    for name, nbytes, call in _cases(x, rows, cols, rng):
        with programs.recording() as dispatches:
            keep = call()   # the outputs (and temporaries they hold) stay alive while timed
        recorded[name] = (nbytes, dispatches, keep)
    times: dict[str, list[float]] = {name: [] for name in recorded}
    source = "?"
    for _ in range(rounds):
        for name, (_, dispatches, _) in recorded.items():
            seconds, source = gpu.time_dispatches(dispatches)
            times[name].append(seconds)
    med = {name: statistics.median(t) for name, t in times.items()}
    copy_gbs = recorded["copy"][0] / med["copy"] / 1e9
    rows_out = []
    for name, (nbytes, dispatches, _) in recorded.items():
        gbs = nbytes / med[name] / 1e9
        rows_out.append({"op": name, "us": med[name] * 1e6, "bytes": nbytes, "GB_s": gbs,
                         "of_copy": gbs / copy_gbs, "dispatches": len(dispatches)})
    return {"shape": [rows, cols], "timing": source, "rounds": rounds, "rows": rows_out}


def format_table(result: dict) -> str:
    head = f"{'op':<26} {'us':>10} {'MB moved':>9} {'GB/s':>8} {'of copy':>8}"
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        flag = "" if r["op"] == "copy" or r["of_copy"] >= 0.5 else "  < 0.50"
        lines.append(f"{r['op']:<26} {r['us']:>10.1f} {r['bytes'] / 1e6:>9.1f} {r['GB_s']:>8.1f} "
                     f"{r['of_copy']:>8.2f}{flag}")
    return "\n".join(lines)


def main(args) -> int:
    from dispatch import gpu

    why = gpu.unavailable_reason()
    if why:
        raise RuntimeError(f"--backend gpu: no GPU ({why})")
    rows = args.rows or ROWS
    cols = args.cols or COLS
    if rows < 1 or cols < 1:
        raise ValueError("--rows, --cols: expected whole numbers >= 1")
    rounds = max(1, min(args.repeats, 5))
    d = gpu.describe(gpu.adapter())
    print(f"i8gemm bench --ops --backend gpu on {d['name']} ({d['backend']}, {d['driver']}): "
          f"({rows}, {cols}) float32, {rounds} interleaved rounds, medians", flush=True)
    result = run(rows, cols, rounds, np.random.default_rng(0))
    print(f"timing: {result['timing']}; GB/s = least bytes moved / time; "
          "of copy = that / the copy kernel's GB/s (target >= 0.50)")
    print(format_table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"adapter": d, **result}, f, indent=2)
        print(f"wrote {args.json}")
    return 0
