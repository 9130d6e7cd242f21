"""The CPU driver shared by every instruction set: packing, blocking, threads and the epilogue.

Contract of a CPU path (`CpuPath`, one per ISA module):
  - A is packed per call into rows of k4*4 values, encoded as the path's micro-kernel wants it:
    "u8" (vpdpbusd: int8 a is stored as a + 128), "s8" (sign trick, portable path: as is; uint8
    a as a - 128) or "s16" (vpmaddwd: int8 and uint8 a widened to int16, unshifted).
    The shift `d` this adds is removed in the epilogue as -d * colsum(B).
  - B is packed once (prepare time) into panels of NR columns, in the path's `b_layout`:
    "i8" ([k4][NR][4 int8], every path but one) or "i16" ([k4][2][NR][2 int16], avx2_i16.py);
    see simd.py and gemm/prepared.py.
  - The epilogue applies, per output element, in int32 (wrapping):
        acc - (d + a_zero_point) * colsum_j - zb_j * (rowsum(A)_i - K * a_zero_point)
    which is exactly (A - za)(B - zb) for int8/uint8 A. The kernels take B's column sums and
    the two per-call scalars as `cols = (colsum, col_mult, kza)` with col_mult = -(d + za) and
    kza = K * za: a per-call zero point of A (dynamic quantization) costs no vector of its own.
    Then for float output
        float32(that) * (1 / a_quant_mult) * (1 / b_quant_mult_j) + bias_j, optionally relu.
    It writes C once, straight from the micro-kernel's tile: no M x N temporary. For a whole
    panel it runs inside the micro-kernel, on the accumulators in registers (simd.tile_dot_store).

Work is split into blocks of (m_block rows x p_block panels); blocks run on numba's threads
(prange) or, for small problems where waking threads costs more than it saves, serially.
"""

from __future__ import annotations

import dataclasses
import functools
import math

# How long numba's OpenMP threads spin before they sleep: dispatch/cpu.py's OPENMP_SPIN_COUNT
# says why. Set before OpenMP loads (it reads the setting once); a user's own setting wins.
from dispatch.cpu import prange_only, set_openmp_spin_default  # noqa: E402

set_openmp_spin_default()

import numba  # noqa: E402  (after the OpenMP setting)
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402
from numba.extending import overload  # noqa: E402

import dispatch  # noqa: E402
from dispatch.atomics import fetch_add  # noqa: E402

from .simd import (  # noqa: E402
    ISA_OPS,
    Tile,
    has_fused_store,
    store_fence,
    tile_dot,
    tile_dot_store,
    tile_mr,
    tile_nr,
    tile_panel_bytes,
)

# Blocks per thread in the heuristic split (see heuristic_config).
BLOCKS_PER_THREAD = 4
# Below this many multiply-adds a call runs on one thread: waking the pool costs ~10-20 us.
SERIAL_WORK = 1 << 21


# Packed-B layouts -> bytes one column's group of four k takes in a panel.
B_LAYOUTS = {"i8": 4, "i16": 8}


@dataclasses.dataclass(frozen=True)
class CpuPath:
    name: str
    level: dispatch.IsaLevel
    a_encoding: str          # "u8", "s8" or "s16": how the micro-kernel wants A's values
    b_allows_min: bool       # whether -128 in B is multiplied exactly
    tiles: tuple[Tile, ...]  # candidate register tiles; the first is the default
    b_layout: str = "i8"     # how packed B panels hold a value: "i8" or "i16" (B_LAYOUTS)
    # Whether `dispatch` picks this path for its ISA level when none is named; a level may have
    # other paths (AVX2: the sign trick beside the preferred avx2-i16), run only when named.
    preferred: bool = True
    # The heuristic's tile from MANY_ROWS rows on, if not the default (a taller tile, which
    # reads each B vector for more rows, where there are rows enough to fill it).
    many_rows_tile: Tile | None = None

    def __post_init__(self):
        k4_bytes = B_LAYOUTS[self.b_layout]
        if self.many_rows_tile is not None and self.many_rows_tile not in self.tiles:
            raise ValueError(f"many_rows_tile: {self.many_rows_tile} is not one of the tiles")
        for tile in self.tiles:
            if tile.b_k4_bytes != k4_bytes:
                raise ValueError(f"tiles: {tile} reads {tile.b_k4_bytes} bytes per k4 group, "
                                 f"but b_layout {self.b_layout!r} packs {k4_bytes}")

    @property
    def default_tile(self) -> Tile:
        return self.tiles[0]

    # Cached: gemm_i8 asks on every call, and building the answer cost ~0.4 us of a 10 us call.
    @functools.cached_property
    def a_dtype(self):
        return {"u8": np.uint8, "s8": np.int8, "s16": np.int16}[self.a_encoding]

    def a_shift(self, a_dtype) -> int:
        """What packing adds to each A value of dtype `a_dtype` to reach this path's encoding."""
        unsigned_in = a_dtype == np.uint8
        if self.a_encoding == "u8":
            return 0 if unsigned_in else 128
        if self.a_encoding == "s16":
            return 0        # int16 holds int8 and uint8 values alike
        return -128 if unsigned_in else 0

    def tile_named(self, name: str) -> Tile:
        for tile in self.tiles:
            if tile_name(tile) == name:
                return tile
        raise ValueError(f"tile: {name!r} is not a tile of cpu:{self.name}; expected one of "
                         + ", ".join(tile_name(t) for t in self.tiles))


PATHS: dict[str, CpuPath] = {}

def register_path(path: CpuPath) -> CpuPath:
    PATHS[path.name] = path
    dispatch.register(dispatch.Implementation(
        op="gemm_i8", backend="cpu", path=path.name, level=path.level, entry=path,
        tuning_space=tuning_space(path),
        preferred=path.preferred,
    ))
    return path


# One thread policy for every CPU kernel (ops use it too): see dispatch.cpu.resolve_threads.
max_threads = dispatch.cpu.max_threads
resolve_threads = dispatch.cpu.resolve_threads


# ---------------------------------------------------------------------------------------------
# The tuning space: what the autotuner may vary for a path, as data (see dispatch.space).
#
#   tile     the register tile MRxNV (the path's own `tiles`; simd.py emits any of them)
#   threads  how many of the call's threads to use (1: the serial driver)
#   m_block  rows per block of work ("all": every row in one block); a multiple of MR
#   p_block  panels of NR columns per block ("all": every panel; the serial driver's only choice)
#   c_stores how whole panels write C: "cached" (ordinary stores) or "streaming" (non-temporal
#            stores, used where C's rows are aligned for them: see STREAMING_C_BYTES)
#   b_prefetch  "none" (the hardware's prefetchers alone) or "next_panel": while the first tile
#            of rows multiplies a panel, the micro-kernel prefetches the next panel into L2
#            (SIMD paths; see B_PREFETCHES)
#   a_packing   where threads that all read the whole of A (blocks of panels over every row) get
#            their packed A: "shared" (the calling thread packs it once, before the threads
#            start) or "per_thread" (each thread packs a copy of its own; see A_PACKINGS)
# Blocks run on numba's threads; within a block the driver walks panels outer and rows inner,
# so m_block x K bytes of A is what streams past each panel: m_block is the cache block over M.

# Bump when a change to simd.py, an ISA step or the driver's blocking can change which
# configuration wins: tuned entries of another version are never used.
KERNEL_VERSION = "cpu-7"
ALL = "all"
_ALL_AS_INT = 1 << 30
M_BLOCKS = (8, 16, 32, 64, 128, 256, ALL)
P_BLOCKS = (1, 2, 4, 8, 16, 32, 64, ALL)
CACHED, STREAMING = "cached", "streaming"
C_STORES = (CACHED, STREAMING)
NO_PREFETCH, NEXT_PANEL = "none", "next_panel"
B_PREFETCHES = (NO_PREFETCH, NEXT_PANEL)
# A copy packed on one core reaches the other threads through the caches between cores: at
# 32 x 512 x 512 on the Zen 4 guest (2 threads, blocks of panels), packing A on the calling
# thread before the kernel added 9 us to a 33 us kernel, 1.6 us on one thread. A copy per thread
# repeats the packing (M x K bytes each, ~0.07 ns a value) but keeps it in the core that reads it,
# and the packing runs in parallel instead of before the threads start.
SHARED_A, PER_THREAD_A = "shared", "per_thread"
A_PACKINGS = (SHARED_A, PER_THREAD_A)


def tile_name(tile: Tile) -> str:
    return f"{tile.mr}x{tile.nv}"


def _thread_counts(limits) -> tuple:
    budget = limits["threads"]
    return tuple(sorted({1, budget} | {t for t in (2, 4, 8, 16, 32, 64) if t < budget}))


def _blocks(config, shape, path: CpuPath) -> int:
    m, _, n = shape
    panels = -(-n // path.tile_named(config["tile"]).nr)
    mb, pb = config["m_block"], config["p_block"]
    return (1 if mb == ALL else -(-m // mb)) * (1 if pb == ALL else -(-panels // pb))


def tuning_space(path: CpuPath) -> dispatch.TuningSpace:
    names = tuple(tile_name(t) for t in path.tiles)
    has_simd_tiles = path.default_tile.isa in ISA_OPS

    def restrictions():
        def known_tile(c, shape, limits):
            return c["tile"] in names

        def within_budget(c, shape, limits):
            return isinstance(c["threads"], int) and 1 <= c["threads"] <= limits["threads"]

        def whole_tiles_of_rows(c, shape, limits):
            mb = c["m_block"]
            return mb == ALL or (isinstance(mb, int) and mb >= 1
                                 and mb % path.tile_named(c["tile"]).mr == 0)

        def positive_panels(c, shape, limits):
            return c["p_block"] == ALL or (isinstance(c["p_block"], int) and c["p_block"] >= 1)

        def known_c_stores(c, shape, limits):
            return c.get("c_stores") in C_STORES

        def known_b_prefetch(c, shape, limits):
            return c.get("b_prefetch") in B_PREFETCHES

        def known_a_packing(c, shape, limits):
            return c.get("a_packing") in A_PACKINGS

        return (known_tile, within_budget, whole_tiles_of_rows, positive_panels, known_c_stores,
                known_b_prefetch, known_a_packing)

    def prune():
        # Only shrink the search: configurations ruled out here still run correctly.
        def serial_runs_every_panel(c, shape, limits):
            return c["threads"] > 1 or c["p_block"] == ALL

        def one_spelling(c, shape, limits):
            m, _, n = shape
            panels = -(-n // path.tile_named(c["tile"]).nr)
            return ((c["m_block"] == ALL or c["m_block"] < m)
                    and (c["p_block"] == ALL or c["p_block"] < panels))

        def no_idle_threads(c, shape, limits):
            return c["threads"] == 1 or _blocks(c, shape, path) >= c["threads"]

        def prefetch_where_it_is_emitted(c, shape, limits):
            # Only the SIMD micro-kernels prefetch, and only where there is a next panel.
            return c["b_prefetch"] == NO_PREFETCH or (
                has_simd_tiles and shape[2] > path.tile_named(c["tile"]).nr)

        def copies_of_a_where_threads_share_it(c, shape, limits):
            # Only blocks of panels have every thread read all of A; row blocks pack their own rows.
            return c["a_packing"] == SHARED_A or not packs_a_in_blocks(
                c["threads"], _ALL_AS_INT if c["p_block"] == ALL else c["p_block"],
                -(-shape[2] // path.tile_named(c["tile"]).nr))

        return (serial_runs_every_panel, one_spelling, no_idle_threads,
                prefetch_where_it_is_emitted, copies_of_a_where_threads_share_it)

    def realize(config) -> dict:
        return {"tile": path.tile_named(config["tile"]), "threads": config["threads"],
                "m_block": _ALL_AS_INT if config["m_block"] == ALL else config["m_block"],
                "p_block": _ALL_AS_INT if config["p_block"] == ALL else config["p_block"],
                "streaming": config["c_stores"] == STREAMING,
                "prefetch_b": config["b_prefetch"] == NEXT_PANEL,
                "a_per_thread": config["a_packing"] == PER_THREAD_A}

    return dispatch.TuningSpace(
        params={"tile": names, "threads": _thread_counts, "m_block": M_BLOCKS,
                "p_block": P_BLOCKS, "c_stores": C_STORES, "b_prefetch": B_PREFETCHES,
                "a_packing": A_PACKINGS},
        default=lambda shape, limits: heuristic_config(path, shape, limits["threads"]),
        restrictions=restrictions(),
        prune=prune(),
        version=KERNEL_VERSION,
        limits=lambda threads=None: {"threads": resolve_threads(threads)},
        realize=realize,
        fingerprint=dispatch.cpu_fingerprint,
        # The micro-kernels see int8 panels whatever A's dtype (uint8 and float32 A are
        # converted while A is packed), so every A dtype shares one tuned entry.
        operand_dtype=lambda dtype: "int8",
    )


# From this many rows of A on, the heuristic takes a path's many_rows_tile. The taller tile
# multiplies each B vector it loads into more rows (6 x 4: 24 vpdpbusd per 4 loads of B, against
# 16 for 4 x 4), and its panels are as wide as the default's, so one packed copy of B serves both.
# Side by side with 4 x 4, each with its heuristic blocking (`GemmBench` samples, interleaved,
# 9-11 rounds; K x N of 512 x 512, 512 x 2048, 1024 x 1024, 2048 x 2048, 512 x 8000), geometric
# means per row count:
#   rows                       8     12    16    24    32    48    64
#   Zen 4 guest, 2 threads    0.96  1.03  1.03  1.02  1.05  1.01  1.02
#   Xeon (device), 2 threads  1.02  1.14  1.07  1.11  1.10  1.09  1.14
#   Xeon, 8 threads           0.88  1.03  1.02  1.01  1.01  1.01  (noise)
# and on the Zen 4 guest with 1 thread 0.99 at 12-16 rows, 1.01-1.14 at 32-256. With the
# encoder's K = 256 products as well (21 rounds), the Zen 4 guest gave 1.01, 1.03, 1.03, 1.02 at
# 16, 24, 32, 48 rows (2 threads) and 1.00, 1.05, 1.02, 1.05 (1 thread). Over 15
# transformer shapes of 32-2048 rows 6 x 4 ran 1.02x (Zen 4, 2 threads) and 1.08, 1.03, 1.06x
# (Xeon, 2, 8, 16 threads) as fast as the heuristic's earlier choice (4 x 4 below 1024 rows).
# Fewer rows leave the taller tile's rows empty (8 rows fill 8 of 12).
MANY_ROWS = 16


# B is "streamed" when its packed panels take at least this many bytes (more than a core's
# L2: 1 MB on Zen 4, 2 MB on the device's Xeon): the call reads B from L3 or memory, panel after
# panel. That is a decoder's output layer over the vocabulary (K = 256 to 2048, N = 32 000:
# 8-64 MB of B) at batch x beam rows. From STREAMED_B_TALL_ROWS rows on (below MANY_ROWS) the
# heuristic then takes the path's taller tile as well: with B streamed, what each loaded B vector
# is multiplied into counts for more than the empty rows. Side by side with the default tile over
# 13 such shapes (8-128 rows; K 256-2048; N 2048-32000: the README's Tuning section), the
# geometric mean gain was 1.04 (2 threads) and 1.05 (1) on the Zen 4 guest, 1.07, 1.08 and 1.06
# (2, 1, 8 threads) on the device's Xeon; no shape lost more than 4%. Below 8 rows the taller
# tile would run mostly empty. With as many rows the next panel is prefetched as well (below).
STREAMED_B_BYTES = 2 << 20
STREAMED_B_TALL_ROWS = 8
# Up to this many rows over a streamed B (from STREAMED_B_TALL_ROWS on), the heuristic also has
# the micro-kernel prefetch the next panel of B into L2 while the first tile of rows multiplies
# the current one (b_prefetch="next_panel"). Side by side with the default without it (9 shapes:
# 8-128 x 512 x 32000, 16 x 256/1024/2048 x 32000, 32 x 2048 x 8000; 11 rounds), geometric means
# 1.07 and 1.08 (1 and 2 threads) on the Zen 4 guest, 1.05, 1.03, 1.02 (1, 2, 8 threads) on the
# device's Xeon; per shape 0.94-1.35. With 1-4 rows it lost (0.79-1.02): one tile of rows leaves
# the prefetches no multiply-adds to hide behind. (An earlier session's paired runs had found no
# gain on top of the 6 x 4 tile, 0.95-1.07.)
STREAMED_B_PREFETCH_ROWS = 128


def packed_b_bytes(tile: Tile, k: int, n: int) -> int:
    """Bytes of B packed in `tile`'s panels, for K x N."""
    return -(-k // 4) * -(-n // tile.nr) * tile.nr * tile.b_k4_bytes


def streams_b(path: CpuPath, k: int, n: int) -> bool:
    """Whether a K x N B is read from beyond the core's caches (see STREAMED_B_BYTES)."""
    return packed_b_bytes(path.default_tile, k, n) >= STREAMED_B_BYTES


def heuristic_tile(path: CpuPath, shape) -> Tile:
    """The heuristic's register tile for an (M, K, N) call: the path's taller tile where there
    are rows to fill it (MANY_ROWS, or STREAMED_B_TALL_ROWS over a streamed B), else its
    default."""
    m, k, n = shape
    if path.many_rows_tile is not None and (
            m >= MANY_ROWS or (m >= STREAMED_B_TALL_ROWS and streams_b(path, k, n))):
        return path.many_rows_tile
    return path.default_tile


def heuristic_config(path: CpuPath, shape, threads: int) -> dict:
    """The heuristic choice of tile, blocking and C stores for an (M, K, N) call with `threads`
    threads."""
    m, k, n = shape
    stream = m * n * 4 >= STREAMING_C_BYTES and streams_large_results()
    prefetch = (path.many_rows_tile is not None
                and STREAMED_B_TALL_ROWS <= m <= STREAMED_B_PREFETCH_ROWS and streams_b(path, k, n))
    return {**_heuristic_blocking(heuristic_tile(path, shape), shape, threads, stream),
            "c_stores": STREAMING if stream else CACHED,
            "b_prefetch": NEXT_PANEL if prefetch else NO_PREFETCH, "a_packing": SHARED_A}


def _heuristic_blocking(tile: Tile, shape, threads: int, streaming: bool) -> dict:
    m, k, n = shape
    name = tile_name(tile)
    panels = -(-n // tile.nr)
    threads = 1 if m * k * n < SERIAL_WORK else threads
    rows = _row_block(tile, k, n)
    long_row_blocks = streaming and rows < _ALL_AS_INT
    if long_row_blocks:
        # Streaming stores do not read C's lines, so the order C is written in no longer costs:
        # blocks of many rows, which keep each panel of B in L1 for longer. 2048 x 256 x 1024 on
        # a Zen 4 guest: one thread 3.42 ms in blocks of 12 rows, 2.86 in blocks of 126-252 or
        # all; two threads 1.65 against 1.44 (252 rows). K = 256, N = 256 and 768 gained 4-9%.
        rows = m
    if threads == 1:
        return {"tile": name, "threads": 1, "m_block": ALL if rows >= m else rows, "p_block": ALL}
    # run_parallel deals blocks out as threads come free, so a few blocks per thread let one
    # that lost its core for a while be covered by the others.
    fair = -(-m // (BLOCKS_PER_THREAD * threads))
    fair = -(-fair // tile.mr) * tile.mr   # rows per block for a few blocks per thread
    if long_row_blocks and -(-m // fair) >= threads:
        return {"tile": name, "threads": threads, "m_block": fair, "p_block": ALL}
    if rows < m and -(-m // rows) >= threads:
        # Row blocks over every panel: B stays in the core's cache and C is written in whole rows.
        return {"tile": name, "threads": threads, "m_block": min(rows, fair), "p_block": ALL}
    if panels >= 2 * threads or m <= tile.mr:
        # Enough columns: blocks of panels, each over all the rows.
        return {"tile": name, "threads": threads, "m_block": ALL,
                "p_block": max(1, -(-panels // (BLOCKS_PER_THREAD * threads)))}
    # Few columns, many rows: split the rows too.
    return {"tile": name, "threads": threads, "m_block": fair, "p_block": ALL}


# From this many bytes of C on, the heuristic stores C with non-temporal ("streaming") stores,
# on the micro-architectures where that was measured to pay (streams_large_results).
# An ordinary store to a line that is not in the cache first reads the line from memory (write
# allocate); a C of megabytes is not in the cache, so every line of it was read and then written
# back. Streaming stores write whole lines without the read. Measured on one Zen 4 core, the
# 2048 x 256 x 768 product ran at 150-155 GMAC/s with ordinary stores, 175-181 streaming, and
# 194-198 with C's stores redirected to a few cache-resident rows (the micro-kernel's pace).
# The cost falls on the next reader: it finds C in memory, not in the cache, so small outputs,
# which a cache keeps, stay cached.
STREAMING_C_BYTES = 2 << 20
# Micro-architectures (LLVM's names, by prefix) whose large results stream by default. Zen 4:
# the int8 encoder at 2 threads ran 3-4% faster, its GEMMs 6-8% (in-process, alternating runs).
# Not the device's Emerald Rapids Xeon (2 MB of L2 per core, 300 MB of L3): there the GEMMs
# alone were no faster (within 2%, `i8gemm tune`) and the encoder 2-3% slower at 2 threads (the
# same at 1), its readers of C finding it in memory instead of the cache; ordinary stores there
# seem not to pay the read. Elsewhere untested: the tuner's c_stores decides per machine.
STREAMING_MICROARCHITECTURES = ("znver",)
# Streaming stores need each address aligned to the vector (64 bytes for AVX-512); C qualifies
# when its start and its row stride are multiples of this.
STREAMING_ALIGNMENT = 64


def streams_large_results() -> bool:
    """Whether the heuristic streams C of STREAMING_C_BYTES or more on this CPU."""
    return dispatch.cpu.cpu_name().startswith(STREAMING_MICROARCHITECTURES)


def can_stream_into(out: np.ndarray) -> bool:
    """Whether C = `out` (C-contiguous) is aligned for streaming stores."""
    return (out.ctypes.data % STREAMING_ALIGNMENT == 0
            and out.strides[0] % STREAMING_ALIGNMENT == 0)


def aligned_empty(shape, dtype) -> np.ndarray:
    """np.empty(shape, dtype), starting at a multiple of STREAMING_ALIGNMENT bytes (numpy's own
    allocations are 16-byte aligned), so that a GEMM may stream its result into it."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize   # (np.prod of a tuple: 3 us, half of a small call)
    raw = np.empty(nbytes + STREAMING_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % STREAMING_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


# Row blocks (see _row_block) are used when packed B takes at most this many bytes, so that it
# stays in a core's L2 cache (1 MB on Zen 4, 2 MB on the device's Xeon) while each block of rows
# streams past every panel; above it B would come from L3 or memory once per block.
ROW_BLOCK_MAX_B_BYTES = 512 << 10
# ...and then a block writes about this many bytes of C: whole rows, sequential in memory.
ROW_BLOCK_C_BYTES = 64 << 10


def _row_block(tile: Tile, k: int, n: int) -> int:
    """Rows per block when B is small enough to be read once per block of rows, else "all" (as
    _ALL_AS_INT).

    Walking every row under one panel writes C in strips NR columns wide, one cache line run per
    row and (from N = 1024 on, at 4 bytes a value) a page per row; blocks of a few rows over every
    panel write C in whole rows instead. Zen 4, one thread, K = 256: M = 2048, N = 1024 ran
    1.21-1.29x faster in blocks of 8-16 rows; N = 256 (rows of 1 KB) gained nothing. With B
    larger than the cache (N = 32000, K = 512) blocks of 8-16 rows ran 0.83-0.88x as fast."""
    if packed_b_bytes(tile, k, n) > ROW_BLOCK_MAX_B_BYTES:
        return _ALL_AS_INT
    rows = ROW_BLOCK_C_BYTES // (4 * n) // tile.mr * tile.mr
    return max(tile.mr, rows)


# ---------------------------------------------------------------------------------------------
# Packing.


@njit(cache=True, nogil=True)
def _pack_panel(cols32, ids, nr, panel, first):
    """panel[k4, c] = cols32[ids[first + c], k4] for the (up to nr) columns from `first`.

    This transpose is most of what `select_columns` costs, so it moves eight columns at a time:
    eight sequential source streams and 32-byte runs of output, instead of one strided store
    per element (1.5x faster)."""
    k4 = cols32.shape[1]
    ncols = min(nr, ids.shape[0] - first)
    full = ncols - ncols % 8
    for c0 in range(0, full, 8):
        s0 = cols32[ids[first + c0]]
        s1 = cols32[ids[first + c0 + 1]]
        s2 = cols32[ids[first + c0 + 2]]
        s3 = cols32[ids[first + c0 + 3]]
        s4 = cols32[ids[first + c0 + 4]]
        s5 = cols32[ids[first + c0 + 5]]
        s6 = cols32[ids[first + c0 + 6]]
        s7 = cols32[ids[first + c0 + 7]]
        for k in range(k4):
            row = panel[k, c0:c0 + 8]
            row[0] = s0[k]
            row[1] = s1[k]
            row[2] = s2[k]
            row[3] = s3[k]
            row[4] = s4[k]
            row[5] = s5[k]
            row[6] = s6[k]
            row[7] = s7[k]
    for c in range(full, ncols):
        src = cols32[ids[first + c]]
        for k in range(k4):
            panel[k, c] = src[k]


@njit(cache=True, nogil=True)
def pack_b_panels(cols32, ids, nr, out32):
    """out32[p, k4, c] = cols32[ids[p*nr + c], k4]: B columns (as uint32 groups of 4 k) into
    panels of nr columns. out32's padding columns (past the ids) must hold zeros already."""
    for p in range(out32.shape[0]):
        _pack_panel(cols32, ids, nr, out32[p], p * nr)


@njit(cache=True, nogil=True, parallel=prange_only())
def pack_b_panels_parallel(cols32, ids, nr, out32):
    """pack_b_panels with the panels shared among numba's threads (for shortlists)."""
    for p in prange(out32.shape[0]):
        _pack_panel(cols32, ids, nr, out32[p], p * nr)


# Below this many columns a pack runs on one thread: waking the pool costs more than it saves.
PARALLEL_PACK_COLUMNS = 512


# How A's rows reach the packed buffer (pack_rows); the modes for float32 A quantize it on the
# way, so A is read once and its quantized copy is written straight into the kernel's panel.
PACK_COPY = 0       # int8/uint8 A: a + shift
PACK_SYMMETRIC = 1  # float32 A: clamp(rint(a * scale), -127, 127) + shift      (a_quant_mult)
PACK_LINEAR = 2     # float32 A: clamp(rint(a / scale) + zero_point, 0, 255) + shift
                    # (ONNX QuantizeLinear to uint8: a float32 division, then the zero point)

# Who packs A: the last member of run_serial's and run_parallel's `pack`.
A_BY_CALLER = 0     # the caller, once, before the kernel runs (blocks of panels, A_PACKINGS shared)
A_IN_BLOCKS = 1     # each block its own rows, on its thread (blocks over every panel)
A_PER_THREAD = 2    # each thread all of A into a copy of its own (blocks of panels, per_thread)


def packs_a_in_blocks(threads: int, p_block: int, panels: int) -> bool:
    """Whether the blocks each cover every panel, so that each row of A is read by one block."""
    return threads == 1 or p_block >= panels


@njit(cache=True, nogil=True, error_model="numpy")
def pack_rows(src, mode, scale, zero_point, shift, m0, m1, packed, a_stride, rowsum):
    """Rows m0:m1 of A into the packed rows (flat, a_stride values each; the padding past K
    zeroed) and their row sums, of the values the product uses (int8 or uint8). Returns False if a
    float32 A held NaN (PACK_SYMMETRIC: also an infinity), leaving those rows undefined."""
    k = src.shape[1]
    finite = True
    # int32 throughout: numba widens int32 + int32 to int64, and the loops then ran on 64-bit
    # lanes, half as many per vector (2048 x 256 on one Zen 4 core, ns per value before/after:
    # float32 A 0.25 / 0.15, the divide-by-scale form 0.29 / 0.19, int8 A 0.10 / 0.07).
    sh = np.int32(shift)
    zp = np.int32(zero_point)
    for i in range(m0, m1):
        row = src[i]
        out = packed[i * a_stride:(i + 1) * a_stride]
        s = np.int32(0)
        # One loop per mode, each straight arithmetic that LLVM vectorises. The NaN test is an
        # and-reduction (vectorises), not a float sum (a serial chain, 5x slower).
        if mode == PACK_COPY:
            for x in range(k):
                v = np.int32(row[x])
                s = np.int32(s + v)
                out[x] = np.int32(v + sh)
        elif mode == PACK_SYMMETRIC:
            lo = np.float32(-127.0)
            hi = np.float32(127.0)
            for x in range(k):
                v = row[x]
                finite &= (v - v) == np.float32(0.0)
                q = np.int32(np.rint(min(max(v * scale, lo), hi)))
                s = np.int32(s + q)
                out[x] = np.int32(q + sh)
        else:
            # As ops.quantize_linear: rint first, then the clamp to [-zp, 255 - zp] in float32
            # (saturating values beyond int32 and infinities), then the zero point, exactly.
            lo = np.float32(-zero_point)
            hi = np.float32(255 - zero_point)
            for x in range(k):
                q = np.rint(row[x] / scale)
                finite &= q == q
                q = lo if q < lo else q
                q = hi if q > hi else q
                v = np.int32(np.int32(q) + zp)
                s = np.int32(s + v)
                out[x] = np.int32(v + sh)
        rowsum[i] = s
        for x in range(k, a_stride):
            out[x] = 0
    return finite


@njit(cache=True, nogil=True)
def quantize_into(a, row_mults, out):
    """out[i] = clamp(rint(a[i] * row_mults[i]), -127, 127) as int8 (row_mults has one value, or
    one per row). Returns False on NaN/inf in a; a product that overflows merely clamps."""
    lo = np.float32(-127.0)
    hi = np.float32(127.0)
    per_row = row_mults.shape[0] > 1
    finite = True
    for i in range(a.shape[0]):
        mult = row_mults[i] if per_row else row_mults[0]
        for x in range(a.shape[1]):
            v = a[i, x]
            finite &= (v - v) == np.float32(0.0)
            out[i, x] = np.int32(np.rint(min(max(v * mult, lo), hi)))
    return finite


# ---------------------------------------------------------------------------------------------
# The epilogue: one tile of int32 accumulators -> C, fused corrections, scale, bias, relu.


def store_tile(out, acc, i0, rows, j0, ncols, nr, rowsum, cols, zb, inv_qa, inv_qb, bias,
               relu):
    raise NotImplementedError("store_tile runs only inside numba-jitted code")


@overload(store_tile, jit_options={"cache": True})
def _ov_store_tile(out, acc, i0, rows, j0, ncols, nr, rowsum, cols, zb, inv_qa, inv_qb, bias,
                   relu):
    # Each loop below indexes 1-D views from 0, never `j0 + c`: numba wraps negative indices,
    # and with an offset it cannot prove the index positive, so LLVM falls back to gathers.
    if out.dtype == numba.types.int32:
        def store_int32(out, acc, i0, rows, j0, ncols, nr, rowsum, cols, zb, inv_qa, inv_qb,
                        bias, relu):
            colsum, col_mult, kza = cols
            cs = colsum[j0:j0 + ncols]
            has_zb = zb.shape[0] > 0
            z = zb[j0:j0 + ncols] if has_zb else zb
            for r in range(rows):
                o = out[i0 + r, j0:j0 + ncols]
                t = acc[r * nr:r * nr + ncols]
                if has_zb:
                    rs = rowsum[i0 + r] - kza
                    for c in range(ncols):
                        o[c] = t[c] + col_mult * cs[c] - z[c] * rs
                else:
                    for c in range(ncols):
                        o[c] = t[c] + col_mult * cs[c]
        return store_int32

    if out.dtype == numba.types.float32:
        def store_float32(out, acc, i0, rows, j0, ncols, nr, rowsum, cols, zb, inv_qa, inv_qb,
                          bias, relu):
            # Branches on the options sit outside the column loops, so each loop is straight
            # arithmetic that LLVM vectorises.
            colsum, col_mult, kza = cols
            cs = colsum[j0:j0 + ncols]
            qb = inv_qb[j0:j0 + ncols]
            has_zb = zb.shape[0] > 0
            z = zb[j0:j0 + ncols] if has_zb else zb
            has_bias = bias.shape[0] > 0
            bs = bias[j0:j0 + ncols] if has_bias else bias
            zero = np.float32(0.0)
            for r in range(rows):
                o = out[i0 + r, j0:j0 + ncols]
                t = acc[r * nr:r * nr + ncols]
                # Corrections in int32, stored back into the int32 tile: with A stored as
                # a + 128 the accumulator may wrap for long K, and only the wrapped sum is exact.
                if has_zb:
                    rs = rowsum[i0 + r] - kza
                    for c in range(ncols):
                        t[c] = t[c] + col_mult * cs[c] - z[c] * rs
                else:
                    for c in range(ncols):
                        t[c] = t[c] + col_mult * cs[c]
                if has_bias:
                    for c in range(ncols):
                        o[c] = np.float32(t[c]) * (inv_qa * qb[c]) + bs[c]
                else:
                    for c in range(ncols):
                        o[c] = np.float32(t[c]) * (inv_qa * qb[c])
                if relu:
                    for c in range(ncols):
                        o[c] = max(o[c], zero)
        return store_float32
    return None


def panel_to_c(tile, a, a_stride, k4, m0, m1, b, b_off, out, j0, ncols, rowsum, cols, zb,
               inv_qa, inv_qb, bias, relu, streaming, prefetch, acc):
    """C[m0:m1, j0:j0+ncols] from the packed panel at b[b_off:]: micro-kernel and epilogue, one
    register tile of rows after another. streaming: whole panels store C non-temporally
    (simd.tile_dot_store); a partial panel's columns are stored as usual. prefetch: 0, or the
    distance in bytes to the panel to bring into L2 meanwhile (whole panels only)."""
    raise NotImplementedError("panel_to_c runs only inside numba-jitted code")


@njit(cache=True, nogil=True)
def _panel_through_acc(tile, a, a_stride, k4, m0, m1, b, b_off, out, j0, ncols, rowsum, cols,
                       zb, inv_qa, inv_qb, bias, relu, streaming, prefetch, acc):
    """panel_to_c through the tile buffer `acc`, of which store_tile reads ncols columns (with
    ordinary stores, whatever `streaming`, and no prefetching)."""
    mr = tile_mr(tile)
    nr = tile_nr(tile)
    for i in range(m0, m1, mr):
        rows = min(mr, m1 - i)
        tile_dot(tile, rows, a, i * a_stride, a_stride, b, b_off, k4, acc)
        store_tile(out, acc, i, rows, j0, ncols, nr, rowsum, cols, zb, inv_qa, inv_qb, bias,
                   relu)


@overload(panel_to_c, jit_options={"cache": True})
def _ov_panel_to_c(tile, a, a_stride, k4, m0, m1, b, b_off, out, j0, ncols, rowsum, cols, zb,
                   inv_qa, inv_qb, bias, relu, streaming, prefetch, acc):
    if not has_fused_store(tile):
        return _panel_through_acc.py_func

    mr, nr = tile.mr, tile.nr

    # A whole panel's epilogue runs on the accumulators in registers (tile_dot_store): the round
    # trip through `acc` cost up to a quarter of the time at K = 256. A partial last panel goes
    # through `acc`. The choice is made once per panel, outside the row loop: with both calls in
    # one loop body the fused tiles ran 5-20% slower than in a loop of their own (one Zen 4 core).
    # The next panel is prefetched while the first tile of rows reads this one, which is then in
    # the cache for the other rows: their steps would issue the same prefetches again.
    def fused_when_whole(tile, a, a_stride, k4, m0, m1, b, b_off, out, j0, ncols, rowsum,
                         cols, zb, inv_qa, inv_qb, bias, relu, streaming, prefetch, acc):
        if ncols == nr:
            for i in range(m0, m1, mr):
                tile_dot_store(tile, min(mr, m1 - i), a, i * a_stride, a_stride, b, b_off, k4,
                               out, i, j0, rowsum, cols, zb, inv_qa, inv_qb, bias, relu,
                               streaming, prefetch if i == m0 else 0)
        else:
            _panel_through_acc(tile, a, a_stride, k4, m0, m1, b, b_off, out, j0, ncols, rowsum,
                               cols, zb, inv_qa, inv_qb, bias, relu, streaming, prefetch, acc)
    return fused_when_whole


# ---------------------------------------------------------------------------------------------
# Calling compiled kernels cheaply.

_ENTRY_POINTS: dict = {}


def call_compiled(kernel, key, *args):
    """kernel(*args), skipping numba's per-call argument typing (~5 us, most of it for the Tile
    object) once this `key` -- which must determine every argument's numba type -- has run."""
    entry = _ENTRY_POINTS.get(key)
    if entry is not None:
        return entry(*args)
    result = kernel(*args)
    signature = tuple(numba.typeof(x) for x in args)
    _ENTRY_POINTS[key] = kernel.overloads[signature].entry_point
    return result


# ---------------------------------------------------------------------------------------------
# Blocking and threads.


@njit(cache=True, nogil=True)
def _block(tile, a, a_stride, k4, m0, m1, b, n, p0, p1, out, rowsum, cols, zb, inv_qa,
           inv_qb, bias, relu, streaming, prefetch_b, acc):
    """Rows m0:m1 x panels p0:p1. Panel-outer, so a panel of B (k4*nr*4 bytes, twice that for
    int16 panels) stays in cache while every row tile of the block streams past it.
    prefetch_b: bring each next panel (the block's or, after its last, the following one) into
    L2 while this one is multiplied."""
    nr = tile_nr(tile)
    panel_bytes = tile_panel_bytes(tile, k4)
    panels = (n + nr - 1) // nr
    for p in range(p0, p1):
        j0 = p * nr
        ahead = panel_bytes if prefetch_b and p + 1 < panels else 0
        panel_to_c(tile, a, a_stride, k4, m0, m1, b, p * panel_bytes, out, j0, min(nr, n - j0),
                   rowsum, cols, zb, inv_qa, inv_qb, bias, relu, streaming, ahead, acc)


@njit(cache=True, nogil=True)
def run_serial(tile, a, a_stride, k4, m, b, n, out, rowsum, cols, zb, inv_qa, inv_qb, bias,
               relu, streaming, prefetch_b, m_block, pack):
    """Blocks of m_block rows, one after another, each over every panel; each block packs its own
    rows of A first, while they are about to be used (see run_parallel for `pack`)."""
    src, mode, scale, zero_point, shift, packer = pack
    nr = tile_nr(tile)
    acc = np.empty(tile_mr(tile) * nr, np.int32)
    finite = True
    for m0 in range(0, m, m_block):
        m1 = min(m, m0 + m_block)
        if packer == A_IN_BLOCKS:
            finite &= pack_rows(src, mode, scale, zero_point, shift, m0, m1, a, a_stride, rowsum)
        _block(tile, a, a_stride, k4, m0, m1, b, n, 0, (n + nr - 1) // nr, out, rowsum, cols,
               zb, inv_qa, inv_qb, bias, relu, streaming, prefetch_b, acc)
    if streaming:
        store_fence()
    return finite


@njit(cache=True, nogil=True, parallel=prange_only())
def run_parallel(tile, a, a_stride, k4, m, b, n, out, rowsum, cols, zb, inv_qa, inv_qb, bias,
                 relu, streaming, prefetch_b, m_block, p_block, threads, pack):
    """The blocks are dealt out as threads come free (a shared counter), not in fixed shares:
    on shared cores a thread that loses its core for a while would otherwise hold up the whole
    call while the others wait at the join (a 180 us call was seen taking 1300 us).

    pack = (src, mode, scale, zero_point, shift, packer): with A_IN_BLOCKS (blocks over every
    panel, so each row is in one block) a block packs its own rows of A (pack_rows) on its
    thread; with A_PER_THREAD each thread packs all of A into a copy of its own before its first
    block; with A_BY_CALLER the caller has packed A. Returns pack_rows' verdict."""
    src, mode, scale, zero_point, shift, packer = pack
    nr = tile_nr(tile)
    panels = (n + nr - 1) // nr
    m_blocks = (m + m_block - 1) // m_block
    p_blocks = (panels + p_block - 1) // p_block
    blocks = m_blocks * p_blocks
    workers = min(threads, blocks)
    next_block = np.zeros(1, np.int64)
    finite = np.ones(workers, np.bool_)
    for t in prange(workers):
        acc = np.empty(tile_mr(tile) * nr, np.int32)
        own_a, own_rowsum = a, rowsum
        if packer == A_PER_THREAD:
            own_a, own_rowsum = np.empty_like(a), np.empty_like(rowsum)
            if not pack_rows(src, mode, scale, zero_point, shift, 0, m, own_a, a_stride,
                             own_rowsum):
                finite[t] = False
        w = fetch_add(next_block, 1)
        while w < blocks:
            mb = w // p_blocks
            pb = w - mb * p_blocks
            m0 = mb * m_block
            m1 = min(m, m0 + m_block)
            if packer == A_IN_BLOCKS and not pack_rows(src, mode, scale, zero_point, shift, m0,
                                                       m1, a, a_stride, rowsum):
                finite[t] = False
            _block(tile, own_a, a_stride, k4, m0, m1, b, n, pb * p_block,
                   min(panels, (pb + 1) * p_block), out, own_rowsum, cols, zb, inv_qa, inv_qb,
                   bias, relu, streaming, prefetch_b, acc)
            w = fetch_add(next_block, 1)
        if streaming:
            store_fence()
    return finite.all()
