"""`i8gemm run model.onnx`: run an ONNX model on random or given inputs, explain the plan, time it
per op type, and compare its latency with onnxruntime side by side.

    i8gemm run model.onnx --dims batch=16,seq=128          # random inputs, symbolic dims bound
    i8gemm run model.onnx --inputs feeds.npz --save out.npz
    i8gemm run model.onnx --explain --backend gpu          # the plan: fused groups, kernels, transfers
    i8gemm run model.onnx --repeats 9 --compare-ort --ort-float model_fp32.onnx --threads 2

Timings are medians of interleaved repeats, each after a short pause (see gemm/bench.py: pools
that spin starve whoever runs next on shared cores); onnxruntime gets the same thread count with
spinning off.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .session import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of the .onnx file")
    parser.add_argument("--inputs", help=".npz file of inputs by name (default: random inputs)")
    parser.add_argument("--dims", default="",
                        help="values of symbolic dimensions for random inputs, e.g. batch=16,seq=128 "
                             "(unnamed or unlisted ones: 1)")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--explain", action="store_true",
                        help="print the plan (fused groups, kernels, transfers) and exit")
    parser.add_argument("--no-fuse", action="store_true", help="run every ONNX node on its own")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--compare-ort", action="store_true",
                        help="time onnxruntime on the same model, interleaved")
    parser.add_argument("--ort-float", metavar="MODEL",
                        help="also time onnxruntime on this (float32) model with the same inputs")
    parser.add_argument("--save", help="write the outputs to this .npz file")
    parser.add_argument("--seed", type=int, default=0)


def main(args) -> int:
    if args.explain:
        session = Session(args.model, fuse=not args.no_fuse, threads=args.threads)
        print(explain(session, args.backend))
        return 0
    session = Session(args.model, backend=args.backend, fuse=not args.no_fuse,
                      threads=args.threads)
    feeds = load_feeds(session, args.inputs, parse_dims(args.dims), args.seed)
    for name, value in feeds.items():
        print(f"input  {name}: {value.dtype} {value.shape}")
    outputs = session.run(None, feeds)
    for arg, value in zip(session.get_outputs(), outputs, strict=True):
        print(f"output {arg.name}: {value.dtype} {value.shape}")
    if args.save:
        np.savez(args.save, **{a.name: v for a, v in zip(session.get_outputs(), outputs,
                                                          strict=True)})
    contenders = {"i8gemm": lambda: session.run(None, feeds)}
    if args.compare_ort or args.ort_float:
        if args.compare_ort:
            contenders["onnxruntime"] = ort_runner(args.model, feeds, args.threads)
        if args.ort_float:
            contenders["onnxruntime float"] = ort_runner(args.ort_float, feeds, args.threads)
    medians = time_interleaved(contenders, args.repeats)
    print()
    print(timing_table(session, feeds, args.repeats))
    print()
    for name, t in medians.items():
        ratio = "" if name == "i8gemm" else f"   i8gemm / {name} = {medians['i8gemm'] / t:.2f}"
        print(f"{name:>18}: {t * 1e3:9.2f} ms (median of {args.repeats}){ratio}")
    return 0


def parse_dims(text: str) -> dict[str, int]:
    dims = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = item.partition("=")
        try:
            dims[name.strip()] = int(value)
        except ValueError:
            raise ValueError(f"--dims: expected name=integer, got {item!r}") from None
        if dims[name.strip()] < 1:
            raise ValueError(f"--dims: {name} must be >= 1")
    return dims


def load_feeds(session: Session, path: str | None, dims: dict[str, int], seed: int) -> dict:
    if path:
        with np.load(path, allow_pickle=False) as data:
            return {a.name: data[a.name] for a in session.get_inputs() if a.name in data.files}
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else dims.get(d, 1) for d in (arg.shape or [])]
        if arg.dtype.kind == "f":
            feeds[arg.name] = rng.standard_normal(shape).astype(arg.dtype)
        elif arg.dtype.kind == "b":
            feeds[arg.name] = rng.random(shape) < 0.5
        else:
            # Integer inputs are usually ids or indices: keep them small and non-negative.
            feeds[arg.name] = rng.integers(0, 100, shape).astype(arg.dtype)
    return feeds


def ort_runner(model_path: str, feeds: dict, threads: int | None):
    """onnxruntime on the model as a user gets it: its default settings but the thread count.
    Its pool spins while it waits for work, as ours does (dispatch/cpu.py's OPENMP_SPIN_COUNT):
    with spinning turned off, its encoder run after a pause took 44-48 ms instead of 22-29 on
    this project's 2-core machine, a handicap that no user of either library has. (Its threads
    spin on for some 50 ms after a run; time_interleaved's pauses are longer.)"""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    mine = {k: v for k, v in feeds.items() if k in names}
    return lambda: sess.run(None, mine)


def time_interleaved(contenders: dict, repeats: int, pause: float = 0.1,
                     warm_up: float = 0.0) -> dict[str, float]:
    """Median seconds per run of each contender, timed in turn, each run after a pause; with
    warm_up, each timed run directly follows untimed runs of the same contender for at least
    that many seconds. (A GPU mostly idle while the others ran lowers its clocks step by step:
    on an H200 the encoder's GPU run went from 22 to 70 ms over a dozen rounds of CPU runs and
    pauses, and one untimed run was not enough to raise them again.)"""
    for run in contenders.values():
        run()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            time.sleep(pause)
            warm_until = time.perf_counter() + warm_up
            while time.perf_counter() < warm_until:
                run()
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}


def timing_table(session: Session, feeds: dict, repeats: int) -> str:
    per_run = []
    for _ in range(max(1, repeats)):
        timings: dict[str, float] = {}
        session.run(None, feeds, timings=timings)
        per_run.append(timings)
    counts: dict[str, int] = {}
    for step in session.steps:
        counts[step.op_type] = counts.get(step.op_type, 0) + 1
    medians = {op: float(np.median([t.get(op, 0.0) for t in per_run])) for op in counts}
    total = sum(medians.values()) or 1.0
    lines = [f"{'op type':<24} {'steps':>5} {'ms':>9} {'share':>6}"]
    for op, t in sorted(medians.items(), key=lambda kv: -kv[1]):
        lines.append(f"{op:<24} {counts[op]:>5} {t * 1e3:>9.3f} {100 * t / total:>5.1f}%")
    lines.append(f"{'total':<24} {len(session.steps):>5} {total * 1e3:>9.3f}")
    if session.backend == "gpu":
        lines.append("(backend=gpu: the host time to queue each step; the GPU runs behind it, and "
                     "the run's wall time includes the wait for the output)")
    return "\n".join(lines)


def explain(session: Session, backend: str = "cpu") -> str:
    """The plan, one line per step: what runs, on what, with which fused nodes; for the GPU
    backend where each step runs (gpu, host, or a transfer) -- the placement a
    Session(backend="gpu") uses, computed here without a GPU -- and every host transfer."""
    if backend == "gpu":
        plan = session.gpu_plan() if session.backend == "cpu" else None
        steps = plan.steps if plan is not None else session.steps
    else:
        steps = session.steps
    lines = [f"plan for backend={backend}: {len(steps)} steps, opset {session.opset}"]
    for i, step in enumerate(steps):
        where = f"{step.where:<8} " if backend == "gpu" else ""
        lines.append(f"{i:4d} {where}{step.op_type:<22} {step.name:<40} {step.kernel}")
        if len(step.nodes) > 1:
            lines.append(f"       fused: {' -> '.join(step.nodes)}")
    if backend == "gpu":
        transfers = [s for s in steps if s.where == "transfer"]
        outputs = {o.name for o in session.get_outputs()}
        produced_on_gpu = {o for s in steps if s.where == "gpu" for o in s.outputs}
        no_kernel = sorted({s.op_type for s in steps if s.where == "host" and any(
            i.endswith("@host") for i in s.inputs)})
        lines.append("ops that run on the host for want of a GPU kernel (each forces transfers): "
                     f"{', '.join(no_kernel) or 'none'}")
        lines.append(f"transfers per run ({len(transfers)} + {len(outputs & produced_on_gpu)} "
                     "output downloads):")
        lines += [f"  {s.name} ({s.kernel})" for s in transfers]
        lines += [f"  download {name} (model output)" for name in sorted(outputs & produced_on_gpu)]
    fused = [s for s in steps if len(s.nodes) > 1]
    lines.append(f"fused groups: {len(fused)} ({sum(len(s.nodes) for s in fused)} ONNX nodes)")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="i8gemm run")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
