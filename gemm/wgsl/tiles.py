"""The GPU GEMM's tuning space, as data: kernel configurations, their limits, and the default.

Two kernels (gemm_tiled.wgsl, gemm_small_m.wgsl), the tiled one optionally split along K
(reduce_splits.wgsl adds the parts). A configuration fixes every constant the WGSL text is built
from; `space(shape, limits)` lists the valid ones for a call (the autotuner searches
it), `default_config(shape, limits)` is the heuristic used without a tuned entry.
Restrictions: workgroup memory within the adapter's limit, invocations within its limit and at
least one warp, register tiles that fit the workgroup tile, split K's parts of C within one
storage binding.
"""

from __future__ import annotations

import dataclasses
import itertools

# Packed K is padded to a multiple of this many u32 groups (64 int8 values) at prepare time, so
# every BK below divides it and the kernels need no K bound check.
K4_ALIGN = 16
SMALL_M_MAX = 8


@dataclasses.dataclass(frozen=True)
class Tiled:
    bm: int = 128   # workgroup tile rows
    bn: int = 128   # workgroup tile columns
    bk: int = 8     # k-groups of four per workgroup-memory slice
    tm: int = 8     # rows per invocation (a multiple of 4)
    tn: int = 8     # columns per invocation (a multiple of 4)
    # Workgroups splitting K per tile (split-K): each multiplies a 1/ks share of K into its own
    # int32 part of C, and a second kernel adds the parts and applies the epilogue. A shape with
    # few tiles (few rows, or N small against the GPU) otherwise leaves most of the GPU idle
    # while each workgroup walks all of K alone.
    ks: int = 1
    # Read the caller's int8 A rows in the GEMM itself (see "Direct A" below) instead of packing
    # them first in a dispatch of their own.
    direct: bool = False

    kernel = "tiled"

    @property
    def invocations(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def workgroup_bytes(self) -> int:
        return self.bk * (self.bm + self.bn) * 4

    def why_invalid(self, limits: dict) -> str | None:
        if self.bm % self.tm or self.bn % self.tn or self.tm % 4 or self.tn % 4:
            return "register tile does not divide the workgroup tile"
        if K4_ALIGN % self.bk:
            return f"bk must divide {K4_ALIGN}"
        if self.ks not in K_SPLITS:
            return f"ks must be one of {K_SPLITS}"
        if not 32 <= self.invocations <= limits.get("max-compute-invocations-per-workgroup", 256):
            return f"{self.invocations} invocations"
        if self.bn // self.tn > limits.get("max-compute-workgroup-size-x", 256) or \
                self.bm // self.tm > limits.get("max-compute-workgroup-size-y", 256):
            return "workgroup shape over the adapter's limit"
        if self.workgroup_bytes > limits.get("max-compute-workgroup-storage-size", 16384):
            return f"{self.workgroup_bytes} bytes of workgroup memory"
        return None


@dataclasses.dataclass(frozen=True)
class SmallM:
    wg_x: int = 64    # column groups (of 4) per workgroup
    ks: int = 4       # invocations splitting K per column group
    direct: bool = False  # as Tiled.direct

    kernel = "small_m"

    def workgroup_bytes(self, rows: int) -> int:
        return max(1, self.ks - 1) * self.wg_x * rows * 16

    def why_invalid(self, limits: dict, rows: int = SMALL_M_MAX) -> str | None:
        if not 32 <= self.wg_x * self.ks <= limits.get("max-compute-invocations-per-workgroup", 256):
            return f"{self.wg_x * self.ks} invocations"
        if self.workgroup_bytes(rows) > limits.get("max-compute-workgroup-storage-size", 16384):
            return f"{self.workgroup_bytes(rows)} bytes of workgroup memory"
        return None


K_SPLITS = (1, 2, 4, 8, 16)
TUNING_SPACE = {
    "tiled": {"bm": (16, 32, 64, 128, 256), "bn": (32, 64, 128, 256), "bk": (4, 8, 16),
              "tm": (4, 8, 16), "tn": (4, 8, 16), "ks": K_SPLITS, "direct": (False, True)},
    "small_m": {"wg_x": (8, 16, 32, 64, 128), "ks": (1, 2, 4, 8, 16, 32), "direct": (False, True)},
}

# Direct A. A call's A is normally packed by a dispatch of its own (prepare_a.wgsl: K-major
# groups, row sums, A's offset) before the GEMM runs. Where the call needs none of that but the
# layout (int8 A, K a multiple of 4, no zero points), a direct configuration's GEMM reads A's rows
# as they are: one dispatch fewer, paid for with loads four rows apart instead of one vec4. Which
# wins depends on the tile and the GPU, so it is a tuning parameter; a direct configuration given
# a call that needs packing runs its packed twin. (H200: direct A with the same tile was 1.0-1.6x
# as fast from 1 x 512 x 512 to 1024^3, even at 4096^3; 0.87x with 8-group slices at
# 256 x 2048 x 2048.)


def small_m_rows(m: int) -> int:
    """The small-M kernel's row count for M rows: M rounded up to 1, 2, 4 or 8."""
    return 1 if m == 1 else 2 if m == 2 else 4 if m <= 4 else 8


def space(shape, limits: dict) -> list:
    """Every valid configuration for an (M, K, N) call."""
    m = shape[0]
    configs = []
    if m <= SMALL_M_MAX:
        rows = small_m_rows(m)
        for values in itertools.product(*TUNING_SPACE["small_m"].values()):
            cfg = SmallM(**dict(zip(TUNING_SPACE["small_m"], values, strict=True)))
            if cfg.why_invalid(limits, rows) is None:
                configs.append(cfg)
    for values in itertools.product(*TUNING_SPACE["tiled"].values()):
        cfg = Tiled(**dict(zip(TUNING_SPACE["tiled"], values, strict=True)))
        if useful(cfg, shape) and cfg.why_invalid(limits) is None and parts_fit(cfg, shape, limits):
            configs.append(cfg)
    return configs


def padded_k4(k: int) -> int:
    """K in groups of four, padded as prepare pads it (a multiple of K4_ALIGN)."""
    return -(-k // (4 * K4_ALIGN)) * K4_ALIGN


def k_chunk(k4: int, ks: int) -> int:
    """k-groups each of `ks` splits takes: a multiple of K4_ALIGN, so every BK divides it."""
    return -(-k4 // (ks * K4_ALIGN)) * K4_ALIGN


def k_splits(k4: int, ks: int) -> int:
    """The parts K is cut into for `ks` (fewer than ks where K is short: no part is empty)."""
    return -(-k4 // k_chunk(k4, ks))


# Split K only below this many tiles: a grid this large already fills any GPU.
SPLIT_BELOW_TILES = 1024


def useful(cfg, shape) -> bool:
    """Whether a valid config is worth timing for a shape (a pruning rule only: the others
    run correctly too)."""
    m, k, n = shape
    if cfg.kernel == "small_m":
        return True
    # A tile of more than twice M's rows (rounded to 16) only multiplies padding.
    if cfg.bm > max(16, 2 * m):
        return False
    if cfg.ks == 1:
        return True
    tiles_ = -(-m // cfg.bm) * -(-n // cfg.bn)
    # A split that K cannot feed repeats a smaller one.
    return tiles_ < SPLIT_BELOW_TILES and k_splits(padded_k4(k), cfg.ks) == cfg.ks


# Workgroups it takes to fill a large GPU (132 SMs x 2 resident workgroups on an H100/H200): a
# smaller tile that reaches this beats a larger one that leaves SMs idle.
FILL_WORKGROUPS = 256
# Measured on an H200 through Vulkan (python -m gemm.wgsl.sweep, clocks warmed): the largest of
# these tiles that still gives FILL_WORKGROUPS workgroups was the best of the curated list or
# within 8% of it on every standard shape, and 64 x 128 reached 101 TOPS at 4096^3 (128 x 128:
# 94). Below, the tile with the most workgroups.
TILES = (Tiled(64, 128, 8, 8, 8), Tiled(32, 128, 8, 4, 8), Tiled(16, 128, 8, 4, 8),
         Tiled(16, 64, 8, 4, 4))
# The small-M kernel was faster at M = 1; a 16-row tile at M = 8 (1.9 vs 1.7 TOPS at 8x512x2048).
SMALL_M_DEFAULT_MAX = 4


def default_config(shape, limits: dict):
    m, k, n = shape
    if m <= SMALL_M_DEFAULT_MAX:
        return _default_small_m(m, k, n, limits)
    valid = [c for c in TILES if c.why_invalid(limits) is None and c.bm <= max(16, 2 * m)]
    if not valid:
        return Tiled(16, 64, 4, 4, 4)

    def workgroups(c):
        return -(-m // c.bm) * -(-n // c.bn)

    for cfg in valid:  # largest first: the most reuse per loaded byte
        if workgroups(cfg) >= FILL_WORKGROUPS:
            return cfg
    return _split_k(max(valid, key=workgroups), k, workgroups)


# Split K where even the smallest tile leaves a large GPU idle, if K is long enough that the
# kernel and not the call's fixed cost takes the time. H200, resident, interleaved (tuning.bench):
# 128 x 1024 x 1024 on 128 tiles of 16 x 64: 21.8 us unsplit, 18.9 in 2 parts, 18.5 in 4 (again
# once the tuner's calls took a user's host path: 18.8 in 2 parts, unsplit over 20.7); at K = 512
# every split was slower (64 x 512 x 2048: 14.5 -> 16.9 us).
SPLIT_MIN_K = 1024


def _split_k(cfg: Tiled, k: int, workgroups) -> Tiled:
    k4, ks = padded_k4(k), 1
    if k >= SPLIT_MIN_K:
        while workgroups(cfg) * ks < FILL_WORKGROUPS and ks < 4 and k_splits(k4, 2 * ks) == 2 * ks:
            ks *= 2
    return dataclasses.replace(cfg, ks=ks)


def _default_small_m(m: int, k: int, n: int, limits: dict) -> SmallM:
    """Enough workgroups to fill the GPU (fewer columns each when N is small), then as much of K
    split across a workgroup's invocations as keeps each at >= 4 k-groups."""
    rows, groups, k4 = small_m_rows(m), -(-n // 4), -(-k // 4)
    wg_x = 16
    for candidate in (64, 32):
        if -(-groups // candidate) >= FILL_WORKGROUPS:
            wg_x = candidate
            break
    for ks in (32, 16, 8, 4, 2, 1):
        cfg = SmallM(wg_x, ks)
        if (wg_x * ks <= 256 and (k4 >= 4 * ks or wg_x * ks <= 32)
                and cfg.why_invalid(limits, rows) is None):
            return cfg
    return SmallM(32, 1)


# ---------------------------------------------------------------------------------------------
# The same space as a dispatch.TuningSpace, which the autotuner and the tuning store use. A
# config is one parameter, the configuration's name ("tiled:64x128x8:8x8", "small_m:64x4"), so
# the two kernels' different parameters share one flat, JSON-friendly space.

KERNEL_VERSION = "wgsl-1"


def config_name(cfg) -> str:
    direct = ":direct" if cfg.direct else ""
    if cfg.kernel == "small_m":
        return f"small_m:{cfg.wg_x}x{cfg.ks}{direct}"
    split = f":k{cfg.ks}" if cfg.ks > 1 else ""
    return f"tiled:{cfg.bm}x{cfg.bn}x{cfg.bk}:{cfg.tm}x{cfg.tn}{split}{direct}"


def parse_config(name: str):
    """The Tiled or SmallM a config name stands for (ValueError when it is not one)."""
    kernel, _, rest = str(name).partition(":")
    direct = rest.endswith(":direct")
    if direct:
        rest = rest[:-len(":direct")]
    try:
        if kernel == "small_m":
            wg_x, ks = (int(v) for v in rest.split("x"))
            return SmallM(wg_x, ks, direct)
        if kernel == "tiled":
            block, _, rest = rest.partition(":")
            reg, _, split = rest.partition(":")
            bm, bn, bk = (int(v) for v in block.split("x"))
            tm, tn = (int(v) for v in reg.split("x"))
            if split and (not split.startswith("k") or int(split[1:]) <= 1):
                raise ValueError(split)
            return Tiled(bm, bn, bk, tm, tn, int(split[1:]) if split else 1, direct)
    except ValueError:
        pass
    raise ValueError(f"config: {name!r} is not a WGSL GEMM configuration")


def all_config_names(limits) -> tuple:
    """Every configuration valid on this adapter, for some shape."""
    names = [config_name(SmallM(*v)) for v in itertools.product(*TUNING_SPACE["small_m"].values())
             if SmallM(*v).why_invalid(limits) is None]
    names += [config_name(Tiled(*v)) for v in itertools.product(*TUNING_SPACE["tiled"].values())
              if Tiled(*v).why_invalid(limits) is None]
    return tuple(names)


def _valid_for_shape(config, shape, limits) -> bool:
    cfg = parse_config(config["config"])
    if cfg.kernel == "small_m":
        return shape[0] <= SMALL_M_MAX and cfg.why_invalid(limits, small_m_rows(shape[0])) is None
    return cfg.why_invalid(limits) is None and parts_fit(cfg, shape, limits)


def parts_bytes(cfg: Tiled, shape) -> int:
    """Bytes of split K's int32 parts of C for a shape (0 when K is not split)."""
    m, k, n = shape
    splits = k_splits(padded_k4(k), cfg.ks)
    return 0 if splits == 1 else splits * m * -(-n // 4) * 16


def parts_fit(cfg: Tiled, shape, limits: dict) -> bool:
    """Whether split K's parts fit in one storage binding of the adapter."""
    return parts_bytes(cfg, shape) <= limits.get("max-storage-buffer-binding-size", 1 << 27)


def neighbours(cfg) -> list:
    """The configurations one step from `cfg` for the tuner's climb: one field of its kernel
    moved to the next candidate value (TUNING_SPACE) either side, or direct A switched."""
    from dispatch.space import steps

    return [type(cfg)(**fields)
            for fields in steps(dataclasses.asdict(cfg), TUNING_SPACE[cfg.kernel])]


def _neighbour_names(config) -> list:
    return [{"config": config_name(c)} for c in neighbours(parse_config(config["config"]))]


def _useful_for_shape(config, shape, limits) -> bool:
    return useful(parse_config(config["config"]), shape)


def tuning_space(adapter_limits, fingerprint, precompile):
    """The dispatch.TuningSpace of the WGSL GEMM; `adapter_limits()` and `fingerprint()` open
    the device only when the tuner or a call asks; `precompile(cfg, m)` starts compiling a
    configuration's kernel in the background."""
    import dispatch

    return dispatch.TuningSpace(
        params={"config": all_config_names},
        default=lambda shape, limits: {"config": config_name(default_config(shape, limits))},
        restrictions=(_valid_for_shape,),
        prune=(_useful_for_shape,),
        version=KERNEL_VERSION,
        limits=lambda threads=None: dict(adapter_limits()),
        realize=lambda config: {"config": parse_config(config["config"])},
        fingerprint=fingerprint,
        neighbours_of=_neighbour_names,
        precompile=lambda config, shape: precompile(parse_config(config["config"]), shape[0]),
        # A is packed (and float A quantized) on the GPU before the kernels run: one entry
        # serves every A dtype.
        operand_dtype=lambda dtype: "int8",
    )
