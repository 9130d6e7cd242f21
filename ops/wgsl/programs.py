"""The WGSL programs of ops.wgsl and what every kernel call shares: sources, array access
snippets, workgroup grids, parameter blocks, the arrays (allocation, `out=` checks, in-place).

A kernel's source is common.wgsl (maths, special values) + its .wgsl file (bindings: inputs
first, outputs next, the uniform block last), with `${...}` template values filled in: how
arrays are read and written (vec4 loads when the data allow them, guarded scalar loads
otherwise) and the op codes. The source text is the pipeline's key in dispatch.gpu, so each
variant compiles once per process.
"""

from __future__ import annotations

import contextlib
import functools
import string
from pathlib import Path

import numpy as np

from dispatch import gpu
from dispatch.gpu_array import GpuArray

HERE = Path(__file__).parent
WG = 256          # invocations per workgroup (common.wgsl's WG, unless a kernel is given another)
ITEMS = 4         # vec4 groups per invocation in the flat kernels
MAX_GROUPS = 65535


@functools.cache
def _read(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


@functools.cache
def source(name: str, *parts: str, **values) -> str:
    """common.wgsl + the named extra parts + the kernel `name`, template values filled in."""
    text = "\n".join(_read(p) for p in ("common.wgsl", *parts, name))
    values.setdefault("WG", WG)
    return string.Template(text).substitute(**{k: str(v) for k, v in values.items()})


def program(name: str, bindings: str, *parts: str, entry: str = "main", **values):
    return gpu.pipeline(source(name, *parts, **values), bindings, entry)


# -- how kernels read and write arrays ----------------------------------------------------------

X_VEC4, X_SCALAR = "vec4<f32>", "f32"


def row_load(vec: bool, array: str = "x", pad: str = "from_bits(NEG_INF_BITS)") -> str:
    """Body of load4(row, i): group i of a row of p.n values (p.n4 groups)."""
    if vec:
        return f"  return {array}[row * p.n4 + i];"
    return (f"  let base = row * p.n + 4u * i;\n  var v = vec4<f32>({pad});\n"
            f"  for (var c = 0u; c < 4u; c = c + 1u) {{\n"
            f"    if (4u * i + c < p.n) {{ v[c] = {array}[base + c]; }}\n  }}\n  return v;")


def row_store(vec: bool, array: str = "y") -> str:
    if vec:
        return f"  {array}[row * p.n4 + i] = v;"
    return (f"  let base = row * p.n + 4u * i;\n"
            f"  for (var c = 0u; c < 4u; c = c + 1u) {{\n"
            f"    if (4u * i + c < p.n) {{ {array}[base + c] = v[c]; }}\n  }}")


def flat_load(vec: bool, array: str) -> str:
    """Body of a load of group i of a flat array of p.n values."""
    if vec:
        return f"  return {array}[i];"
    return (f"  var v = vec4<f32>(0.0);\n  for (var c = 0u; c < 4u; c = c + 1u) {{\n"
            f"    if (4u * i + c < p.n) {{ v[c] = {array}[4u * i + c]; }}\n  }}\n  return v;")


def flat_store(vec: bool, array: str) -> str:
    if vec:
        return f"  {array}[i] = v;"
    return (f"  for (var c = 0u; c < 4u; c = c + 1u) {{\n"
            f"    if (4u * i + c < p.n) {{ {array}[4u * i + c] = v[c]; }}\n  }}")


def xtype(vec: bool) -> str:
    return X_VEC4 if vec else X_SCALAR


# -- grids and parameter blocks ------------------------------------------------------------------


def grid(workgroups: int) -> tuple[int, int, int]:
    """At least `workgroups` workgroups as a 2-D grid (each dimension is capped at 65535); the
    kernels number them wid.y * nwg.x + wid.x and skip those past the work."""
    workgroups = max(1, workgroups)
    x = min(workgroups, MAX_GROUPS)
    return (x, -(-workgroups // x), 1)


def flat_grid(groups4: int) -> tuple[int, int, int]:
    return grid(-(-groups4 // (WG * ITEMS)))


def params(*fields) -> object:
    """A uniform block of 32-bit fields (Python ints as u32/i32, np.float32 as f32), padded to
    16 bytes."""
    words = []
    for f in fields:
        if isinstance(f, (float, np.floating)):
            words.append(int(np.float32(f).view(np.uint32)))
        else:
            words.append(int(f) & 0xFFFFFFFF)
    words += [0] * (-len(words) % 4)
    return gpu.uniform(np.array(words, np.uint32).tobytes())


_CONSTANTS: dict = {}


def constant_array(values: np.ndarray):
    """A small read-only storage buffer holding `values` (a kernel's parameters: scales, zero
    points), made once per distinct content like dispatch.gpu.uniform -- not an array transfer."""
    import wgpu

    data = np.ascontiguousarray(values)
    key = (gpu.generation(), data.dtype.str, data.tobytes())
    buf = _CONSTANTS.get(key)
    if buf is None:
        if len(_CONSTANTS) > 1024:
            _CONSTANTS.clear()
        raw = data.tobytes() + bytes(-data.nbytes % 16 or (16 if data.nbytes == 0 else 0))
        buf = _CONSTANTS[key] = gpu.device().create_buffer_with_data(
            data=raw, usage=wgpu.BufferUsage.STORAGE)
    return buf


def dummy():
    """A buffer for a binding the kernel does not read (the bind group still needs one)."""
    return constant_array(np.zeros(4, np.uint32))


# -- running -------------------------------------------------------------------------------------

_RECORDING: list = []


def run(dispatches) -> None:
    """Queue the dispatches on the device (dispatch.gpu.run), or, inside recording(), collect
    them instead."""
    if _RECORDING:
        _RECORDING[-1].extend(dispatches)
    else:
        gpu.run(dispatches)


@contextlib.contextmanager
def recording():
    """with recording() as dispatches: ops calls inside add their dispatches to the list instead
    of running them (the benchmark times the list with dispatch.gpu.time_dispatches)."""
    dispatches: list = []
    _RECORDING.append(dispatches)
    try:
        yield dispatches
    finally:
        _RECORDING.pop()


# -- arrays --------------------------------------------------------------------------------------


def empty(shape: tuple[int, ...], dtype) -> GpuArray:
    return GpuArray(tuple(shape), dtype)


def check_out(out, shape: tuple[int, ...], dtype, argument: str = "out", inputs=()) -> GpuArray:
    """`out` must be a GpuArray of exactly this shape and dtype; it may be one of the inputs
    (the call is then in place)."""
    if type(out) is not GpuArray:
        raise TypeError(f"{argument}: expected a GpuArray (the inputs are on the GPU), got "
                        f"{type(out).__name__}")
    if out.dtype != np.dtype(dtype):
        raise TypeError(f"{argument}: expected dtype {np.dtype(dtype)}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{argument}: expected shape {tuple(shape)}, got {out.shape}")
    return out


def target(out: GpuArray, *inputs) -> GpuArray:
    """Where a kernel writes: `out` itself, or a temporary when `out` is one of the inputs
    (WebGPU forbids one buffer bound both read-only and writable in a dispatch); then
    finish(out, written) copies the result into place."""
    if any(a is not None and a.buffer is out.buffer for a in inputs):
        return GpuArray(out.shape, out.dtype)
    return out


def finish(out: GpuArray, written: GpuArray) -> GpuArray:
    if written is not out:
        copy(written, out)
    return out


def copy_dispatch(src: GpuArray, dst: GpuArray):
    groups4 = -(-src.nbytes // 16)
    return (program("copy.wgsl", "rwu"), (src.buffer, dst.buffer, params(groups4)),
            flat_grid(groups4))


def copy(src: GpuArray, dst: GpuArray) -> None:
    if src.nbytes:
        run([copy_dispatch(src, dst)])
