"""Atomic operations for numba kernels, which numba lacks: the shared counter from which the
threads of a parallel region take blocks of work as they come free.

Kernel layers (gemm/cpu, ops/cpu) use it; it lives here, at the bottom, because it is an
instruction, not a kernel, and both need it without importing each other. Importing this module
imports numba (the rest of `dispatch` does not need it).
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic


@intrinsic
def fetch_add(typingctx, counter, value):
    """Atomically counter[0] += value; returns the previous value. counter: a 1-D int64 array
    shared by the threads of a prange (numba has no atomics of its own)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64
            and isinstance(value, types.Integer)):
        return None
    sig = types.int64(counter, value)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        step = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.atomic_rmw("add", data, step, "monotonic")

    return sig, codegen
