"""Attention's MatMul -> Div -> Softmax -> MatMul as one step: ops.attention's one pass per
(batch, head), where it gives the three steps' results bit for bit, and the three steps where it
does not.

The one pass keeps each head's scores in cache instead of writing (batch, heads, seq, seq) to
memory and reading it back twice, and runs on the same threads as the int8 kernels. Its products
add in the order numpy's BLAS does for attention's shapes (ops/cpu/attention_pass.py's
docstring); that order is the BLAS's choice, so the first call of each shape and layout runs
both ways and compares every bit. Where they differ (another BLAS, another k extent), that shape
keeps the three steps. The check is per matrix shape and layout, not per batch: a translation
pipeline's changing batch sizes do not repeat it.

The output is written in (batch, seq, heads, d) memory order and returned as its (batch, heads,
seq, d) view: the graph's next steps, Transpose(0, 2, 1, 3) and Reshape to (batch, seq, width),
then find it contiguous and copy nothing.
"""

from __future__ import annotations

import numpy as np

import ops

from . import parallel


class FloatAttention:
    """softmax(q @ kt / divisor) @ v over the last two axes of 4-D float32 stacks (the steps
    `first`, `softmax`, `second` compute it unfused)."""

    def __init__(self, first, softmax, second, threads):
        self.first, self.softmax, self.second = first, softmax, second
        self.threads = threads
        self.verdicts: dict[tuple, bool] = {}   # matrix shapes and layout -> the one pass agreed

    def unfused(self, q, kt, v):
        return self.second(self.softmax(self.first(q, kt)), v)

    def __call__(self, q, kt, v, with_range=False):
        """with_range: also the output's ops.ValueRange, for a DynamicQuantizeLinear next (the
        one pass takes it (batch, head) by (batch, head) while each is in cache)."""
        key = self._key(q, kt, v)
        verdict = None if key is None else self.verdicts.get(key)
        if key is None or verdict is False:
            return self._ranged(self.unfused(q, kt, v), with_range)
        found = ops.attention(q, kt, v, divide_by=self.softmax.divisor, with_range=with_range,
                              threads=parallel.resolve(self.threads))
        if verdict is None:
            ours = found[0] if with_range else found
            expected = self.unfused(q, kt, v)
            self.verdicts[key] = bool(np.array_equal(ours, expected, equal_nan=True))
            return self._ranged(expected, with_range)
        return found

    def _ranged(self, out, with_range):
        return (out, ops.value_range(out, threads=parallel.resolve(self.threads))) \
            if with_range else out

    def _key(self, q, kt, v):
        """The call's matrix shapes and layout if the one pass applies to it, else None."""
        arrays = (q, kt, v)
        if not all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 4
                   for a in arrays):
            return None
        b, h, s, d = q.shape
        if kt.shape[:3] != (b, h, d) or v.shape[:3] != (b, h, kt.shape[3]) or \
                v.strides[3] != 4 or 0 in q.shape or 0 in v.shape or kt.shape[3] == 0:
            return None
        if self.softmax.axis % 4 != 3 or not self.softmax.divisor_is_float32 or \
                not ops.replicates_numpy_exp():
            return None
        # The order in which a BLAS adds can depend on each product's extents and on which of
        # its operands are transposed (unit stride along rows or columns), not on how many
        # products there are: a new batch size reuses the verdict of its matrix shapes.
        return tuple((a.shape[2:], a.strides[3] == 4, a.strides[2] == 4) for a in arrays)
