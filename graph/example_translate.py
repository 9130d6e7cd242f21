"""Worked example: greedy decoding of a small int8 encoder-decoder, with and without a shortlist.

    python -m graph.example_translate            # vocabulary 32000, width 256

The model (graph/transformer.py: random weights, so the "translation" is meaningless) ends in
an output projection over the whole vocabulary, quantized by onnxruntime's quantize_dynamic.
Decoding reaches into the Session two ways:

  - full:      session.run(["logits"], ...) each step, argmax over all 32000 words;
  - shortlist: session.run_until("decoder_hidden", ...) stops before the projection; the
               pipeline takes the projection's PreparedB (session.prepared_weight), selects the
               columns of its shortlist once per sentence (select_columns: no re-quantization)
               and multiplies only those with gemm.gemm_i8, as Marian/Bergamot-style decoders do.

The two differ only in how the last hidden state is quantized (the model quantizes every
position's hidden state together, the pipeline only the last one, symmetrically), so their
logits on the shortlist agree closely, and the decoded words agree wherever the full argmax
lies in the shortlist. Needs onnxruntime (for quantize_dynamic).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

import gemm

from . import transformer
from .session import Session

WEIGHT = "output_projection.weight_quantized"   # the name quantize_dynamic gives the weight
BIAS = "output_projection.bias"


def build_session(vocab: int, width: int, folder: str) -> Session:
    model = transformer.encoder_decoder(vocab=vocab, width=width, heads=4, layers=1)
    return Session(transformer.quantize_dynamic(model, True, folder, "translator"))


def greedy_full(session: Session, src: np.ndarray, bos: int, steps: int) -> np.ndarray:
    tgt = np.full((src.shape[0], 1), bos, np.int64)
    for _ in range(steps):
        (logits,) = session.run(["logits"], {"src": src, "tgt": tgt})
        tgt = np.concatenate([tgt, logits[:, -1].argmax(axis=-1)[:, None]], axis=1)
    return tgt


def greedy_shortlist(session: Session, src: np.ndarray, bos: int, steps: int,
                     shortlist: np.ndarray) -> np.ndarray:
    projection = session.prepared_weight(WEIGHT).select_columns(shortlist)  # once per sentence
    bias = session.constant(BIAS)[shortlist]
    tgt = np.full((src.shape[0], 1), bos, np.int64)
    for _ in range(steps):
        hidden = session.run_until("decoder_hidden", {"src": src, "tgt": tgt})[:, -1]
        logits = shortlisted_logits(hidden, projection, bias)
        tgt = np.concatenate([tgt, shortlist[logits.argmax(axis=-1)][:, None]], axis=1)
    return tgt


def shortlisted_logits(hidden: np.ndarray, projection: gemm.PreparedB, bias: np.ndarray):
    """The pipeline's own int8 multiply: symmetric quantization of the hidden state, the
    shortlisted weight columns, bias in the same pass."""
    a_quant_mult = 127.0 / max(float(np.abs(hidden).max()), 1e-30)
    return gemm.gemm_i8(np.ascontiguousarray(hidden), projection, a_quant_mult=a_quant_mult,
                        bias=bias)


def demo(vocab: int = 32000, width: int = 256, batch: int = 4, src_len: int = 12, steps: int = 8,
         shortlist_size: int = 2000, seed: int = 0, verbose: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        session = build_session(vocab, width, folder)
    src = rng.integers(1, vocab, (batch, src_len))
    bos = 0

    full = greedy_full(session, src, bos, steps)
    # A shortlist as a lexical shortlist would give it: frequent words plus the source's words;
    # here the words the full decode chose are added so the two decodes can be compared.
    shortlist = np.unique(np.concatenate([np.arange(shortlist_size), src.reshape(-1),
                                          full.reshape(-1)]))
    short = greedy_shortlist(session, src, bos, steps, shortlist)

    # The same hidden state through both projections.
    hidden = session.run_until("decoder_hidden", {"src": src, "tgt": full})[:, -1]
    projection = session.prepared_weight(WEIGHT)
    bias = session.constant(BIAS)
    whole = shortlisted_logits(hidden, projection, bias)
    selected = projection.select_columns(shortlist)
    part = shortlisted_logits(hidden, selected, bias[shortlist])
    t_whole = _median_time(lambda: shortlisted_logits(hidden, projection, bias))
    t_part = _median_time(lambda: shortlisted_logits(hidden, selected, bias[shortlist]))
    result = {
        "full": full, "shortlist": short, "shortlist_ids": shortlist,
        "agreement": float((full == short).mean()),
        "logits_max_diff": float(np.abs(whole[:, shortlist] - part).max()),
        "projection_speedup": t_whole / t_part,
    }
    if verbose:
        print(f"vocabulary {vocab}, width {width}, batch {batch}, {steps} steps, "
              f"shortlist of {shortlist.size} words")
        print("full decode     :", full[0].tolist())
        print("shortlist decode:", short[0].tolist())
        print(f"tokens agreeing: {100 * result['agreement']:.1f}%   shortlisted logits equal the "
              f"full ones on those columns (max diff {result['logits_max_diff']:.2e})")
        print(f"output projection, last position: full {t_whole * 1e3:.3f} ms, shortlisted "
              f"{t_part * 1e3:.3f} ms ({result['projection_speedup']:.1f}x)")
    return result


def _median_time(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--shortlist", type=int, default=2000)
    args = parser.parse_args(argv)
    demo(args.vocab, args.width, steps=args.steps, shortlist_size=args.shortlist)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
