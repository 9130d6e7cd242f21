// log_softmax_topk for k <= 8, the candidate-buffer form (probabilities.py picks it or
// topk.wgsl, whose per-invocation lists it replaces): one workgroup per row, one read of the row
// by softmax.wgsl's first pass (row_stats, so the values are bit for bit logsoftmax's).
//
// The bar is topk.wgsl's: invocation lid belongs to set lid % k and raises set_best[set] (a
// workgroup atomic) to the best number it has read; the k sets are disjoint, so the row's k-th
// best key is at least min(set_best), and a value below that cannot be among the k best.
// bar_key holds the min(set_best) some publisher last saw. Here the bar is primed before the scan:
// each invocation publishes the largest number of its first trip, then a barrier, so even the
// first trip meets a bar near the top of 1/8 of the row (~2.9 sigma for normal logits) instead of
// inserting into lists. During the scan an invocation keeps no list, only three words (its set,
// what it published, the bar it last read): few registers, more workgroups per SM. A value at or
// above the bar is appended to a workgroup buffer (one atomicAdd and two stores, so a lane that
// passes costs its warp a few instructions, not a list insertion); a random row appends a few
// dozen. At the end each buffered pair at or above the final bar counts the pairs ranked before
// it (pairs below the bar never are); the first k write themselves.
//
// Should more than CAP values reach the bar (a row rising along its index, many ties at the top,
// rows of few numbers), k rounds of "the best value ranked after the last one chosen" over the
// row find the k best instead: slower, same answer.

@group(0) @binding(1) var<storage, read_write> vals: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

const K_MAX: u32 = 8u;
const CAP: u32 = 2048u;

var<workgroup> set_best: array<atomic<u32>, K_MAX>;
var<workgroup> bar_key: atomic<u32>;
var<workgroup> count: atomic<u32>;
var<workgroup> total_count: u32;
var<workgroup> cand_key: array<u32, CAP>;
var<workgroup> cand_idx: array<u32, CAP>;

var<private> my_set: u32;
var<private> published: u32;   // the best key this invocation has put into set_best
var<private> tau: u32;         // bar_key as this invocation last read it

// (ka, ia) ranks before (kb, ib)
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
  return ka > kb || (ka == kb && ia < ib);
}

fn value_at(row: u32, idx: u32) -> f32 {
  return load4(row, idx / 4u)[idx % 4u];
}

// The least of the k sets' best (the sets from k on hold 0xffffffff).
fn sets_min() -> u32 {
  var t = 0xffffffffu;
  for (var s = 0u; s < K_MAX; s = s + 1u) {
    t = min(t, atomicLoad(&set_best[s]));
  }
  return t;
}

// Publish cm, the largest number among values this invocation read -- unless it is -inf (which
// may lie past the row's end) or zero or subnormal (a GPU may flush max()'s subnormal result to
// 0, which could claim more than a value holds). A key below the bar cannot raise the least
// set's best, and is not published.
fn publish(cm: f32) {
  if ((bitcast<u32>(cm) & POS_INF_BITS) != 0u && !is_neg_inf(cm)) {
    let key = order_key4(vec4<f32>(cm)).x;
    if (key > published && key >= tau) {
      atomicMax(&set_best[my_set], key);
      published = key;
      atomicMax(&bar_key, sets_min());
    }
  }
}

fn append(key: u32, idx: u32) {
  let slot = atomicAdd(&count, 1u);
  if (slot < CAP) {
    cand_key[slot] = key;
    cand_idx[slot] = idx;
  }
}

const NEG_INF_KEY: u32 = 0x00800001u;   // order_key4(-inf)

// The number whose key is `key`, for NEG_INF_KEY < key <= order_key4(+inf): order_key4 undone.
// For numbers, key >= tau is then v >= value_of_key(tau), a float compare that a GPU flushing
// subnormals to 0 keeps true; the exact key decides.
fn value_of_key(key: u32) -> f32 {
  let signed_mag = key - 0x80000001u;
  return bitcast<f32>(select(signed_mag, 0x80000000u | (0u - signed_mag), signed_mag >= 0x80000000u));
}

// Appends the lanes of group i that are numbers at least g whose key reaches the bar.
fn offer_numbers4(i: u32, v: vec4<f32>, g: f32) {
  let reach = v >= vec4<f32>(g);
  if (any(reach)) {
    let keys = order_key4(v);
    let take = reach & (keys >= vec4<u32>(tau));
    if (take.x) { append(keys.x, 4u * i); }
    if (take.y) { append(keys.y, 4u * i + 1u); }
    if (take.z) { append(keys.z, 4u * i + 2u); }
    if (take.w) { append(keys.w, 4u * i + 3u); }
  }
}

// While the bar is not a number, -inf and NaN may enter: every lane in the row is appended.
fn offer_keys4(i: u32, v: vec4<f32>) {
  let keys = order_key4(v);
  let take = (vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n))
             & (keys >= vec4<u32>(tau));
  if (take.x) { append(keys.x, 4u * i); }
  if (take.y) { append(keys.y, 4u * i + 1u); }
  if (take.z) { append(keys.z, 4u * i + 2u); }
  if (take.w) { append(keys.w, 4u * i + 3u); }
}

// row_stats's hook, once per trip; cm: the largest number of the trip (-inf if none).
fn observe4(i: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, cm: f32) {
  publish(cm);
  tau = atomicLoad(&bar_key);
  if (tau > NEG_INF_KEY) {
    // the usual case: one compare per trip, then a float compare per value where that passes
    let g = value_of_key(tau);
    if (cm >= g) {
      offer_numbers4(i, v0, g);
      offer_numbers4(i + WG, v1, g);
      offer_numbers4(i + 2u * WG, v2, g);
      offer_numbers4(i + 3u * WG, v3, g);
    }
  } else {
    offer_keys4(i, v0);
    offer_keys4(i + WG, v1);
    offer_keys4(i + 2u * WG, v2);
    offer_keys4(i + 3u * WG, v3);
  }
}

// Output j of the row: the value at idx, as logsoftmax computes it.
fn emit(row: u32, j: u32, idx: u32, st: RowStats) {
  let v = value_at(row, idx);
  var o = select((v - st.m) - log_pos(st.s), from_bits(NEG_INF_BITS), is_neg_inf(v));
  o = select(o, from_bits(NAN_BITS), st.nan_row);
  vals[row * p.k + j] = o;
  ids[row * p.k + j] = i32(idx);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (lid < K_MAX) { atomicStore(&set_best[lid], select(0u, 0xffffffffu, lid >= p.k)); }
  if (lid == 0u) {
    atomicStore(&bar_key, 0u);
    atomicStore(&count, 0u);
  }
  my_set = lid % p.k;
  published = 0u;
  tau = 0u;
  workgroupBarrier();
  // prime the bar with the first trip's maxima (row_stats reads these groups again next, from
  // the cache)
  var first_max = from_bits(NEG_INF_BITS);
  for (var t = 0u; t < 4u; t = t + 1u) {
    let i = lid + t * WG;
    if (i < p.n4) { first_max = max(first_max, max_of_numbers4(load4(row, i))); }
  }
  publish(first_max);
  workgroupBarrier();
  let st = row_stats(row, lid);   // its workgroup tree's barriers also end every append
  let bar = sets_min();           // final: the least set's best
  if (lid == 0u) { total_count = atomicLoad(&count); }
  let total = workgroupUniformLoad(&total_count);
  if (total <= CAP) {
    for (var t = lid; t < total; t = t + WG) {
      let key = cand_key[t];
      let idx = cand_idx[t];
      if (key >= bar) {
        var rank = 0u;
        for (var u = 0u; u < total && rank < p.k; u = u + 1u) {
          rank = rank + u32(before(cand_key[u], cand_idx[u], key, idx));
        }
        if (rank < p.k) { emit(row, rank, idx, st); }
      }
    }
    return;
  }
  // the buffer overflowed: pick the k best one at a time
  var last_key = 0xffffffffu;
  var last_idx = 0u;   // nothing ranks before (0xffffffff, 0): no value has that key
  for (var j = 0u; j < p.k; j = j + 1u) {
    var best_key = 0u;
    var best_idx = 0xffffffffu;
    for (var i = lid; i < p.n4; i = i + WG) {
      let key = order_key4(load4(row, i));
      for (var c = 0u; c < 4u; c = c + 1u) {
        let idx = 4u * i + c;
        if (idx < p.n && before(last_key, last_idx, key[c], idx)
            && before(key[c], idx, best_key, best_idx)) {
          best_key = key[c];
          best_idx = idx;
        }
      }
    }
    cand_key[lid] = best_key;
    cand_idx[lid] = best_idx;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride >> 1u) {
      if (lid < stride && before(cand_key[lid + stride], cand_idx[lid + stride],
                                 cand_key[lid], cand_idx[lid])) {
        cand_key[lid] = cand_key[lid + stride];
        cand_idx[lid] = cand_idx[lid + stride];
      }
      workgroupBarrier();
    }
    last_key = cand_key[0];
    last_idx = cand_idx[0];
    if (lid == 0u) { emit(row, j, last_idx, st); }
    workgroupBarrier();
  }
}
