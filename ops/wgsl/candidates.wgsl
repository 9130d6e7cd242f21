// For topk.wgsl: the rank order of candidates and a bitonic sort of the workgroup's candidate
// list. The kernel declares
//   var<workgroup> cand_key: array<u32, CAP>;  var<workgroup> cand_idx: array<u32, CAP>;
// with CAP a power of two at least as large as any `total` it sorts.

// (ka, ia) ranks before (kb, ib): larger order key first, then the lower index.
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
  return ka > kb || (ka == kb && ia < ib);
}

// Sort cand_*[0:total] into rank order (best first). `total` must be the same in every
// invocation (the sort has workgroup barriers); slots past it up to the next power of two are
// padded with entries that rank last.
fn sort_candidates(lid: u32, total: u32) {
  var size = 2u;
  while (size < total) { size = size << 1u; }
  for (var t = total + lid; t < size; t = t + WG) {
    cand_key[t] = 0u;
    cand_idx[t] = 0xffffffffu;
  }
  workgroupBarrier();
  for (var span = 2u; span <= size; span = span << 1u) {
    for (var stride = span >> 1u; stride > 0u; stride = stride >> 1u) {
      for (var t = lid; t < size / 2u; t = t + WG) {
        let a = 2u * stride * (t / stride) + t % stride;
        let b = a + stride;
        let first_better = (a & span) == 0u;   // runs of span alternate direction
        let ka = cand_key[a];
        let ia = cand_idx[a];
        let kb = cand_key[b];
        let ib = cand_idx[b];
        if (before(kb, ib, ka, ia) == first_better) {
          cand_key[a] = kb; cand_idx[a] = ib;
          cand_key[b] = ka; cand_idx[b] = ia;
        }
      }
      workgroupBarrier();
    }
  }
}
