"""`i8gemm tune`: tune gemm_i8 for a list of shapes on this machine and record the results.

For each shape: search the implementation's tuning space within the budget, then re-time the
heuristic default and the chosen config side by side (interleaved repeats, a measurement
independent of the search), print a row, and merge the entry into the store at once (an
interrupted run keeps the shapes it finished). A chosen config that the re-timing finds slower
than the default is not recorded: the default is kept, and the row says so. `--show` prints
the store, `--clear` empties it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time

import dispatch
from dispatch import store as reader

from . import store
from .bench import GemmBench, compare
from .search import search

OP = "gemm_i8"
TUNED_DTYPE = "int8"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shapes", help="'M,K,N;M,K,N...' (default: the standard shape set)")
    parser.add_argument("--model", metavar="M.ONNX",
                        help="tune every weight GEMM of this ONNX model (with --batch)")
    parser.add_argument("--batch", default="1,8,64",
                        help="batch sizes for --model, comma separated (default 1,8,64)")
    parser.add_argument("--backend", default="cpu",
                        help="'cpu', 'cpu:<path>' or 'gpu' (default: cpu, the path chosen here)")
    parser.add_argument("--budget", type=float, default=10.0, metavar="SECONDS",
                        help="search time per shape (default 10; the side-by-side re-timing and "
                             "first-use compilation come on top)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU thread budget to tune for (default: I8GEMM_NUM_THREADS or all "
                             "cores); entries apply to calls with this many threads")
    parser.add_argument("--repeats", type=int, default=11,
                        help="interleaved repeats of the final default-vs-tuned timing")
    parser.add_argument("--show", action="store_true", help="print the tuning store and exit")
    parser.add_argument("--clear", action="store_true", help="empty the tuning store and exit")


def main(args) -> int:
    import gemm  # noqa: F401  (the kernels register themselves on import)

    if args.clear:
        count = store.clear()
        print(f"cleared {reader.store_path()} ({count} entries removed)")
        return 0
    if args.show:
        print(show())
        return 0
    if args.budget <= 0 or not math.isfinite(args.budget):
        raise ValueError(f"--budget: expected a positive number of seconds, got {args.budget}")
    if args.repeats < 1:
        raise ValueError(f"--repeats: expected a whole number >= 1, got {args.repeats}")
    impl = _implementation(args.backend)
    shapes = _shapes(args)
    space = impl.tuning_space
    limits = space.limits(threads=args.threads)
    print(f"i8gemm tune: {impl.qualified_name} on {space.fingerprint()}, limits "
          f"{reader.limits_text(limits) or 'none'}, {len(shapes)} shape(s), budget "
          f"{args.budget:g} s per shape", flush=True)
    print(f"store: {reader.store_path()}", flush=True)
    bar = _ProgressBar(len(shapes))
    rows = []
    started = time.perf_counter()
    for i, shape in enumerate(shapes):
        bench = GemmBench(impl, shape, limits)
        result = search(space, shape, limits, bench.bench, verify=bench.verify,
                        prefetch=bench.prefetch,
                        budget_s=args.budget, warmup=0,
                        progress=lambda done, total, i=i, s=shape: bar.show(i, s, done, total))
        for trial in result.failures:
            bar.clear()
            print(f"  {shape}: candidate {dispatch.config_text(trial.config)} {trial.status}: "
                  f"{trial.error}", file=sys.stderr)
        if not math.isfinite(result.best_time_s):
            print(f"  {shape}: no configuration ran; nothing recorded", file=sys.stderr)
            continue
        bar.show(i, shape, None, None, note="re-timing default vs tuned")
        # Time the two side by side; the default once if it won, not at all if it failed.
        named = {"default": result.default, "tuned": result.best}
        if result.best == result.default:
            del named["tuned"]
        elif not math.isfinite(result.default_time_s):
            del named["default"]
        timed = compare(bench, named, args.repeats)
        if len(timed) == 2 and timed["tuned"] > timed["default"]:
            # The search's showdown and this re-timing disagree (small GPU calls, a noisy
            # host): a winner that is not confirmed must not replace the default.
            bar.clear()
            print(f"  {shape}: {dispatch.config_text(result.best)} won the search but timed "
                  f"{timed['tuned'] / timed['default'] - 1:.0%} slower than the default side by "
                  "side; the default is kept", file=sys.stderr)
            result = dataclasses.replace(result, best=result.default,
                                         best_time_s=result.default_time_s)
            timed["tuned"] = timed["default"]
        times = {"default": timed.get("default", math.inf),
                 "tuned": timed.get("tuned", timed.get("default"))}
        store.record([store.make_entry(OP, impl, TUNED_DTYPE, limits, result,
                                       time_s=times["tuned"], default_time_s=times["default"])])
        rows.append((shape, times["default"], times["tuned"], result))
        bar.clear()
    print(format_table(rows))
    print(f"{len(shapes)} shape(s) in {time.perf_counter() - started:.0f} s; recorded in "
          f"{reader.store_path()}")
    return 0


def _implementation(backend: str) -> dispatch.Implementation:
    if not isinstance(backend, str):
        raise ValueError(f"--backend: expected 'cpu', 'cpu:<path>' or 'gpu', got {backend!r}")
    if backend.partition(":")[0] == "gpu" and not any(
            i.backend == "gpu" for i in dispatch.implementations(OP)):
        raise RuntimeError(f"--backend {backend}: no GPU implementation of {OP} is registered "
                           "in this build, so there is nothing to tune on the GPU")
    impl = dispatch.resolve(OP, backend)
    if impl.tuning_space is None:
        raise RuntimeError(f"--backend {backend}: {impl.qualified_name} declares no tuning space")
    return impl


def _shapes(args) -> list[tuple[int, int, int]]:
    from gemm.bench import STANDARD_SHAPES, parse_shapes

    if args.model and args.shapes:
        raise ValueError("--model and --shapes: give one or the other")
    if args.model:
        from .model_shapes import model_shapes

        try:
            batches = [int(b) for b in args.batch.split(",") if b.strip()]
        except ValueError:
            raise ValueError(f"--batch: expected whole numbers like 1,8,64, got "
                             f"{args.batch!r}") from None
        if not batches or min(batches) < 1:
            raise ValueError(f"--batch: expected whole numbers >= 1, got {args.batch!r}")
        return model_shapes(args.model, batches)
    return parse_shapes(args.shapes) if args.shapes else list(STANDARD_SHAPES)


def geomean(values) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def format_table(rows) -> str:
    head = (f"{'M':>5} {'K':>5} {'N':>6} | {'default us':>10} {'tuned us':>10} {'gain':>6} | "
            "chosen configuration")
    lines = ["default and tuned timed side by side (median of interleaved repeats)", head,
             "-" * len(head)]
    for (m, k, n), t_default, t_tuned, result in rows:
        chosen = dispatch.config_text(result.best)
        if result.best == result.default:
            chosen += "  (the default)"
        lines.append(f"{m:>5} {k:>5} {n:>6} | {t_default * 1e6:>10.1f} {t_tuned * 1e6:>10.1f} "
                     f"{t_default / t_tuned:>6.2f} | {chosen}")
    lines.append("-" * len(head))
    lines.append(f"{'geometric mean gain':>30} {'':>11} "
                 f"{geomean([d / t for _, d, t, _ in rows]):>6.2f}")
    return "\n".join(lines)


def show() -> str:
    path = reader.store_path()
    entries = reader.read(path)
    mine = _this_machine()
    here = [e for e in entries.values() if (e["fingerprint"], e["version"]) in mine]
    lines = [f"tuning store: {path}" + ("" if path.exists() else " (not yet written)"),
             f"{len(entries)} entries, {len(here)} for this machine and library version"]
    if not entries:
        return "\n".join(lines)
    head = (f"{'implementation':<16} {'limits':<10} {'M<=':>5} {'K':>5} {'N':>6} | "
            f"{'default us':>10} {'tuned us':>10} {'gain':>6} | configuration")
    lines += ["", head, "-" * len(head)]
    for e in sorted(entries.values(), key=lambda e: (
            (e["fingerprint"], e["version"]) not in mine, e["implementation"], e["limits"],
            e["k"], e["n"], e["m_bucket"])):
        gain = e.get("default_time_s", math.nan) / e.get("time_s", math.nan)
        other = "" if (e["fingerprint"], e["version"]) in mine else \
            f"  [other machine or version: {e['fingerprint']} {e['version']}]"
        lines.append(
            f"{e['implementation']:<16} {e['limits']:<10} {e['m_bucket']:>5} {e['k']:>5} "
            f"{e['n']:>6} | {e.get('default_time_s', math.nan) * 1e6:>10.1f} "
            f"{e.get('time_s', math.nan) * 1e6:>10.1f} {gain:>6.2f} | "
            f"{dispatch.config_text(e['config'])}{other}")
    return "\n".join(lines)


def _this_machine() -> set[tuple[str, str]]:
    """(fingerprint, kernel version) of every implementation that can run here."""
    pairs = set()
    for impl in dispatch.implementations(OP):
        space = impl.tuning_space
        if space is not None and space.fingerprint is not None and impl.available()[0]:
            try:
                pairs.add((space.fingerprint(), space.version))
            except Exception:  # a device that cannot be opened is not "this machine"
                continue
    return pairs


class _ProgressBar:
    """One line of plain text on stderr, redrawn in place on a terminal."""

    def __init__(self, shapes: int, width: int = 24):
        self.shapes, self.width = shapes, width
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def show(self, index: int, shape, done, total, note: str = "") -> None:
        now = time.perf_counter()
        if self.tty and done is not None and done != total and now - self._last < 0.1:
            return
        self._last = now
        frac = (index + (done / total if done and total else 0)) / self.shapes
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        detail = note or (f"candidate {done}/{total}" if done is not None else "")
        text = f"[{bar}] shape {index + 1}/{self.shapes} {shape}: {detail}"
        if self.tty:
            print("\r" + text.ljust(100)[:100], end="", file=sys.stderr, flush=True)
        elif done is None or done == 1:
            print(text, file=sys.stderr, flush=True)

    def clear(self) -> None:
        if self.tty:
            print("\r" + " " * 100 + "\r", end="", file=sys.stderr, flush=True)
