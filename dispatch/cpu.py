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
