"""What this CPU can run: feature detection and the ordered ISA levels.

Features come from LLVM's host query (llvmlite), which reads CPUID *and* checks with XGETBV that
the operating system saves the AVX / AVX-512 register state; a CPU flag without OS support is
reported as absent. Detection runs once per process and is cached.
"""

from __future__ import annotations

import enum
import functools
import os
import platform

# How many times numba's OpenMP threads spin (a `pause` each, ~30 ns here) at the end of a
# parallel region and while they wait for the next one, before they sleep in the kernel.
# A sleeping thread is expensive to wake on a virtual machine: the wake-up goes through the
# hypervisor, and after the guest has idled for a while it costs each region 100 us or more (a
# 2-thread kernel of 50 us took 130-180 us when 50-200 us of Python ran between calls, with
# 1000 spins; 53-56 us with 30000). A model run or a translation step is a sequence of
# kernels with Python between them, so the threads must still be awake for the next one: with
# 1000 spins the int8 encoder of graph.bench took 48-53 ms after a pause, with 30000 29-32 ms
# (2 threads, medians of 25 runs in alternating processes). The price: while another process
# keeps a core busy, a spinning thread holds the core the thread it waits for needs; a small
# 2-thread GEMM (8 x 512 x 2048) then took 77 us at the median but 5.4 ms at the 90th
# percentile with 30000 (283 / 340 us with 1000). On cores shared with other busy work, use
# threads=1 or set GOMP_SPINCOUNT=1000 yourself. (onnxruntime spins by default too.)
OPENMP_SPIN_COUNT = "30000"


def set_openmp_spin_default() -> None:
    """GOMP_SPINCOUNT = OPENMP_SPIN_COUNT unless the user set it. OpenMP reads it once, when
    numba first starts its threads: modules that run parallel kernels call this on import."""
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)


def prange_only():
    """numba's `parallel=` option for this library's kernels: their prange loops run on the
    thread pool, and nothing else does. With parallel=True numba also makes a parallel loop of
    every array expression (np.zeros, np.ones, a.min(), whole-array arithmetic), and each is a
    fork and join of the pool of its own: the block counter every kernel allocates with np.zeros
    made each parallel call two of them (~2 us apiece here, a fifth of a small call).
    An options object, not a dict: numba pops a dict's keys as it reads them, so a dict shared by
    kernels, or by one kernel's signatures, would turn every option back on after its first use."""
    from numba.core.cpu import ParallelOptions

    return ParallelOptions({"prange": True, "comprehension": False, "reduction": False,
                            "inplace_binop": False, "setitem": False, "numpy": False,
                            "stencil": False, "fusion": False})


class IsaLevel(enum.IntEnum):
    """CPU paths in order of preference: the highest one the machine has is chosen."""

    GENERIC = 0
    AVX2 = 1
    AVXVNNI = 2
    AVX512BW = 3
    AVX512VNNI = 4

    @property
    def path_name(self) -> str:
        return self.name.lower()


# Features each level needs (LLVM feature names).
REQUIRED_FEATURES: dict[IsaLevel, tuple[str, ...]] = {
    IsaLevel.GENERIC: (),
    IsaLevel.AVX2: ("avx2",),
    IsaLevel.AVXVNNI: ("avx2", "avxvnni"),
    IsaLevel.AVX512BW: ("avx512f", "avx512bw", "avx512vl"),
    IsaLevel.AVX512VNNI: ("avx512f", "avx512bw", "avx512vl", "avx512vnni"),
}

REPORTED_FEATURES = (
    "sse4.1", "ssse3", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vnni",
    "avxvnni", "amx-int8", "amx-tile",
)


@functools.lru_cache(maxsize=1)
def host_features() -> dict[str, bool]:
    """LLVM's view of the host: feature name -> usable (CPUID and OS state both)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    import llvmlite.binding as llvm

    return {name: bool(on) for name, on in llvm.get_host_cpu_features().items()}


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """LLVM's name for the micro-architecture (e.g. 'znver4', 'sapphirerapids')."""
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_name()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The marketing name of the CPU, where the OS tells it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def missing_features(level: IsaLevel) -> list[str]:
    feats = host_features()
    return [f for f in REQUIRED_FEATURES[level] if not feats.get(f, False)]


def available_levels() -> list[IsaLevel]:
    return [lvl for lvl in IsaLevel if not missing_features(lvl)]


def parse_level(name: str, argument: str = "I8GEMM_CPU_PATH") -> IsaLevel:
    """The ISA level a CPU path name needs: "avx2" -> AVX2, and "avx2-i16" -> AVX2 too (which
    paths exist is the registry's business)."""
    level_name = name.strip().partition("-")[0]
    try:
        return IsaLevel[level_name.upper()]
    except KeyError:
        names = ", ".join(lvl.path_name for lvl in IsaLevel)
        raise ValueError(f"{argument}={name!r} is not a CPU path; expected one of: {names}") from None


@functools.cache
def setting(name: str) -> str:
    """An I8GEMM_* environment variable, read once per process ('' when unset);
    `dispatch.refresh()` forgets the values read."""
    return os.environ.get(name, "").strip()


def max_threads() -> int:
    """numba's thread pool size: all cores unless NUMBA_NUM_THREADS says otherwise."""
    import numba

    return numba.config.NUMBA_NUM_THREADS


def resolve_threads(threads) -> int:
    """The thread count a CPU kernel call uses (GEMM and ops alike): `threads` if given, else
    I8GEMM_NUM_THREADS, else all of numba's threads; checked, and capped at numba's pool size."""
    if type(threads) is int and threads >= 1:   # most calls: one type test, not the checks below
        return min(threads, max_threads())
    if threads is None:
        env = setting("I8GEMM_NUM_THREADS")
        if not env:
            return max_threads()
        try:
            threads = int(env)
        except ValueError:
            raise ValueError(f"I8GEMM_NUM_THREADS={env!r} is not a whole number") from None
        argument = "I8GEMM_NUM_THREADS"
    else:
        argument = "threads"
    if isinstance(threads, bool) or not hasattr(threads, "__index__") or threads < 1:
        raise ValueError(f"{argument}: expected a whole number >= 1, got {threads!r}")
    return min(int(threads), max_threads())


def use_threads(n: int) -> None:
    """numba.set_num_threads(n) for this thread's next parallel kernels, skipped when already so:
    setting it costs ~2 us, and a small parallel GEMM takes 10-20 us."""
    if _num_threads_now() != n:
        import numba

        numba.set_num_threads(n)


_THREADS_GETTER = []


def _num_threads_now() -> int:
    """numba.get_num_threads(), asked of numba's threading layer directly once its threads run:
    numba's own function first takes its start-up locks, ~0.7 us a call here, against ~0.1 us.
    (A numba without that getter is asked the public way.)"""
    if _THREADS_GETTER:
        return _THREADS_GETTER[0]()
    import numba
    from numba.np.ufunc import parallel

    now = numba.get_num_threads()   # starts the threads, which defines the getter
    getter = getattr(parallel, "_get_num_threads", None)
    if getter is not None:
        _THREADS_GETTER.append(getter)
    return now


def best_level() -> IsaLevel:
    """The level of the path used when none is named in the call: that of I8GEMM_CPU_PATH if set
    (checked), else the highest."""
    forced = setting("I8GEMM_CPU_PATH")
    if forced:
        level = parse_level(forced)
        require(level, "I8GEMM_CPU_PATH")
        return level
    return max(available_levels())


def require(level: IsaLevel, argument: str, path: str | None = None) -> None:
    """Raise RuntimeError if this CPU cannot run `level` (`path`: the path's name, default the
    level's own)."""
    missing = missing_features(level)
    if missing:
        raise RuntimeError(
            f"{argument}: the CPU path {path or level.path_name!r} needs {', '.join(missing)}, "
            f"which this CPU ({cpu_model()}) or its OS does not provide"
        )
