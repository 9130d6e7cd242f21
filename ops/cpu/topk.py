"""log_softmax_topk on the CPU: logsoftmax and the k largest entries of each row, in one pass.

logsoftmax is x minus a per-row constant, so its k largest entries are x's. Per row, chunk by
chunk (as in probabilities.py): the chunk max feeds the online max/sum and also decides whether the
chunk can hold a top-k candidate at all -- once k values are kept, a chunk whose max does not
exceed the k-th kept value is skipped; in the others, blocks of BLOCK values are checked the same
way and only a block that can contribute is scanned value by value.
Candidates go into a sorted array of k (insertion: k is small, beam sizes of 4 to 16).

Order: by value descending; equal values by index ascending (a value enters only if strictly
greater than the k-th kept one, and is placed after kept values equal to it). NaN ranks below
every number, -inf included, so a row holding NaN returns its k largest numbers first (the values
themselves are then all NaN, as logsoftmax of that row is).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dispatch.cpu import prange_only

from .mathfuncs import fmax_f32
from .probabilities import CHUNK, _rescale, chunk_max, chunk_sum_exp
from .threads import split, take_block, threads_for

_NEG_INF = np.float32(-np.inf)
BLOCK = 64


@njit(error_model="numpy", cache=True)
def _insert(vals, ids, count, v, i):
    """Insert (v, i) into the descending arrays holding `count` items; returns the new count."""
    k = vals.shape[0]
    if count < k:
        pos = count
        count += 1
    else:
        pos = k - 1
    while pos > 0 and vals[pos - 1] < v:
        vals[pos] = vals[pos - 1]
        ids[pos] = ids[pos - 1]
        pos -= 1
    vals[pos] = v
    ids[pos] = i
    return count


@njit(error_model="numpy", cache=True)
def topk_row(x, k, out_vals, out_ids, keep):
    """keep: float32 scratch of k (the x values kept)."""
    n = x.shape[0]
    m = _NEG_INF
    s = 0.0
    count = 0
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        cm = chunk_max(x[lo:hi])
        m_new = fmax_f32(m, cm)
        s = _rescale(s, m, m_new)
        m = m_new
        s += chunk_sum_exp(x[lo:hi], m if m != _NEG_INF else np.float32(0.0))
        if count == k and not cm > keep[k - 1]:
            continue
        # Some value here may enter: scan, value by value, only the blocks that can contribute.
        for b in range((hi - lo + BLOCK - 1) // BLOCK):
            b0 = lo + b * BLOCK
            b1 = min(b0 + BLOCK, hi)
            if count == k and not chunk_max(x[b0:b1]) > keep[k - 1]:
                continue
            for i in range(b0, b1):
                v = x[i]
                if v == v and (count < k or v > keep[k - 1]):
                    count = _insert(keep, out_ids, count, v, i)
    if count < k:   # fewer than k numbers: NaN entries fill up, in index order
        for i in range(n):
            if count == k:
                break
            if x[i] != x[i]:
                keep[count] = x[i]
                out_ids[count] = i
                count += 1
    if m == _NEG_INF:
        s = np.nan
    log_s = np.float32(np.log(s))
    for t in range(k):
        out_vals[t] = (keep[t] - m) - log_s   # the same expression as logsoftmax_row


@njit(error_model="numpy", cache=True)
def topk_rows(x, k, out_vals, out_ids):
    keep = np.empty(k, np.float32)
    for r in range(x.shape[0]):
        topk_row(x[r], k, out_vals[r], out_ids[r], keep)


@njit(error_model="numpy", cache=True, parallel=prange_only())
def topk_rows_parallel(x, k, out_vals, out_ids, workers, block):
    """Blocks of `block` rows, taken by `workers` threads as they come free (threads.py)."""
    rows = x.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(workers):
        keep = np.empty(k, np.float32)
        lo, hi = take_block(counter, block, rows)
        while lo < hi:
            for r in range(lo, hi):
                topk_row(x[r], k, out_vals[r], out_ids[r], keep)
            lo, hi = take_block(counter, block, rows)


def log_softmax_topk(x: np.ndarray, k: int, out_vals: np.ndarray, out_ids: np.ndarray,
                     threads) -> tuple[np.ndarray, np.ndarray]:
    """x: float32 (..., n), any layout; 1 <= k <= n; out_vals float32 and out_ids int64 of shape
    (..., k), C-contiguous."""
    if out_vals.size == 0:
        return out_vals, out_ids
    x = np.ascontiguousarray(x)
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    rows = x2.shape[0]
    v2, i2 = out_vals.reshape(rows, k), out_ids.reshape(rows, k)
    workers, block = split(rows, n, threads_for(x.size, rows, threads))
    if workers == 1:
        topk_rows(x2, k, v2, i2)
    else:
        topk_rows_parallel(x2, k, v2, i2, workers, block)
    return out_vals, out_ids
