// log_softmax_topk for k <= 8 (topk_gather.wgsl takes larger k): one workgroup per row and one
// read of the row. The read is softmax.wgsl's first pass (row_stats, the same code, so the values
// are bit for bit logsoftmax's); its observe4() hook keeps, in registers, each invocation's best
// 8 (key, index) pairs among the values it reads (keys: order_key4; an invocation reads its
// indices in increasing order, so a new value ranks after an equal key already listed).
//
// What keeps that cheap is a bar every invocation can read and that only rises: invocation lid
// belongs to set lid % k and raises set_best[set] (a workgroup atomic) to the best number it has
// read (row_stats's trip maximum). The k sets are disjoint, so k distinct values of the row reach
// min(set_best), whenever it is read: the row's k-th best key is at least that, and a value below
// it cannot be among the k best. A publisher also raises bar_key to the min(set_best) it then
// sees, so the others read one word per trip. Invocations publish from their first trip on (a
// key below the bar cannot raise the least set's best, and is not published), so from the second
// trip on well under 1% of a random row's values reach the bar. A trip then
// costs the load of the bar, one compare of the trip maximum with it and, where that passes, a
// float compare per value; only the values that pass get a key, and the list insertions (about
// 40 instructions, branch-free) are rarer still. (A row rising along its index defeats the bar:
// every value enters a list. Slower, same answer.) Until the bar is a number (rows of few
// numbers: -inf and NaN can still enter), every value's key is taken instead.
//
// At the end, every listed pair at or above the final bar goes to workgroup memory (at most 8 per
// invocation: CAP never overflows, whatever the ties); usually a few dozen do, and each finds its
// rank among them by counting (one barrier); more than WG (ties at the bar) are ordered by a
// bitonic sort. Order: key descending, index ascending; the first k are the answer.

@group(0) @binding(1) var<storage, read_write> vals: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

const K_MAX: u32 = 8u;
const CAP: u32 = K_MAX * WG;

var<workgroup> set_best: array<atomic<u32>, K_MAX>;
// min(set_best) as some publisher last saw it: a bar too (each set's entry a real value of that
// set), so a trip reads one word, not K_MAX (those reads may cost an atomic operation each)
var<workgroup> bar_key: atomic<u32>;
var<workgroup> count: atomic<u32>;
var<workgroup> total_count: u32;
var<workgroup> cand_key: array<u32, CAP>;
var<workgroup> cand_idx: array<u32, CAP>;

// This invocation's best K_MAX (key, index) pairs, best first (slots 0-3 in *_a, 4-7 in *_b);
// key 0: an empty slot.
var<private> key_a: vec4<u32>;
var<private> key_b: vec4<u32>;
var<private> idx_a: vec4<u32>;
var<private> idx_b: vec4<u32>;
var<private> kth: u32;         // slot k - 1's key: what a new value must beat to be in the first k
var<private> my_set: u32;
var<private> published: u32;   // the best key this invocation has put into set_best
var<private> tau: u32;         // bar_key as this invocation last read it

fn value_at(row: u32, idx: u32) -> f32 {
  return load4(row, idx / 4u)[idx % 4u];
}

// A key the row's k-th best reaches: the least of the k sets' best (the sets from k on hold
// 0xffffffff, so all K_MAX are read, in an unrolled loop).
fn sets_min() -> u32 {
  var t = 0xffffffffu;
  for (var s = 0u; s < K_MAX; s = s + 1u) {
    t = min(t, atomicLoad(&set_best[s]));
  }
  return t;
}

// Lanes of group i that lie in the row.
fn lanes_in_row(i: u32) -> vec4<bool> {
  return vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n);
}

// Slot j of a list (selects: a private vector indexed at run time may live in slow memory).
fn pick(a: vec4<u32>, b: vec4<u32>, j: u32) -> u32 {
  let v = select(a, b, j >= 4u);
  let r = j & 3u;
  return select(select(v.x, v.y, r == 1u), select(v.z, v.w, r == 3u), r >= 2u);
}

// The pair goes before every slot whose key is smaller (its index is larger than any listed);
// the slots after it move down one, the last drops out.
fn insert(key: u32, idx: u32) {
  let e = vec4<u32>(key);
  let f = vec4<u32>(idx);
  let ma = e > key_a;
  let mb = e > key_b;
  // slot j takes slot j - 1's pair where the new pair also goes before slot j - 1
  let pa = vec4<bool>(false, ma.x, ma.y, ma.z);
  let pb = vec4<bool>(ma.w, mb.x, mb.y, mb.z);
  key_b = select(key_b, select(e, vec4<u32>(key_a.w, key_b.x, key_b.y, key_b.z), pb), mb);
  idx_b = select(idx_b, select(f, vec4<u32>(idx_a.w, idx_b.x, idx_b.y, idx_b.z), pb), mb);
  key_a = select(key_a, select(e, vec4<u32>(0u, key_a.x, key_a.y, key_a.z), pa), ma);
  idx_a = select(idx_a, select(f, vec4<u32>(0u, idx_a.x, idx_a.y, idx_a.z), pa), ma);
  kth = pick(key_a, key_b, p.k - 1u);
}

var<private> gate: u32;   // the least key a value needs to enter the list: max(bar, kth + 1)

fn offer(key: u32, idx: u32) {
  if (key >= gate) {
    insert(key, idx);
    gate = max(tau, kth + 1u);
  }
}

fn offer4(i: u32, keys: vec4<u32>) {
  if (any(keys >= vec4<u32>(gate))) {
    offer(keys.x, 4u * i);
    offer(keys.y, 4u * i + 1u);
    offer(keys.z, 4u * i + 2u);
    offer(keys.w, 4u * i + 3u);
  }
}

const NEG_INF_KEY: u32 = 0x00800001u;   // order_key4(-inf)

// The number whose key is `key`, for NEG_INF_KEY < key <= order_key4(+inf): order_key4 undone
// (every key there is one number's, ±0 sharing one). For numbers, key >= gate is then
// v >= value_of_key(gate), a float compare: a GPU flushing subnormals to 0 keeps it true.
fn value_of_key(key: u32) -> f32 {
  let signed_mag = key - 0x80000001u;
  return bitcast<f32>(select(signed_mag, 0x80000000u | (0u - signed_mag), signed_mag >= 0x80000000u));
}

// Offers the lanes of group i that are numbers at least g (a float at most the gate's value, so
// every lane reaching the gate passes); offer() then decides by the exact key.
fn offer_numbers4(i: u32, v: vec4<f32>, g: f32) {
  let reach = v >= vec4<f32>(g);
  if (any(reach)) {
    if (reach.x) { offer(order_key4(v).x, 4u * i); }
    if (reach.y) { offer(order_key4(v).y, 4u * i + 1u); }
    if (reach.z) { offer(order_key4(v).z, 4u * i + 2u); }
    if (reach.w) { offer(order_key4(v).w, 4u * i + 3u); }
  }
}

// The keys of group i, 0 for lanes past the row's end.
fn row_keys4(i: u32, v: vec4<f32>) -> vec4<u32> {
  return select(vec4<u32>(0u), order_key4(v), lanes_in_row(i));
}

// cm: the largest number of the trip (-inf if none).
fn observe4(i: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, cm: f32) {
  // Publish cm -- unless it is -inf (which may lie past the row's end) or zero or subnormal (a
  // GPU may flush max()'s subnormal result to 0, which could claim more than a value holds).
  // A key below the bar cannot raise the least set's best (every set's is at or above it).
  if ((bitcast<u32>(cm) & POS_INF_BITS) != 0u && !is_neg_inf(cm)) {
    let key = order_key4(vec4<f32>(cm)).x;
    if (key > published && key >= tau) {
      atomicMax(&set_best[my_set], key);
      published = key;
      atomicMax(&bar_key, sets_min());
    }
  }
  tau = atomicLoad(&bar_key);
  gate = max(tau, kth + 1u);
  if (gate > NEG_INF_KEY) {
    // the usual case: only numbers reach the gate; a float compare picks the few whose key to take
    let g = value_of_key(gate);
    if (cm >= g) {
      offer_numbers4(i, v0, g);
      offer_numbers4(i + WG, v1, g);
      offer_numbers4(i + 2u * WG, v2, g);
      offer_numbers4(i + 3u * WG, v3, g);
    }
  } else {
    // -inf and NaN may still enter (a row of few numbers so far): every key
    offer4(i, row_keys4(i, v0));
    offer4(i + WG, row_keys4(i + WG, v1));
    offer4(i + 2u * WG, row_keys4(i + 2u * WG, v2));
    offer4(i + 3u * WG, row_keys4(i + 3u * WG, v3));
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
  workgroupBarrier();
  let st = row_stats(row, lid);   // its workgroup tree's barriers also end every invocation's read
  tau = sets_min();               // final: the least set's best
  for (var j = 0u; j < p.k; j = j + 1u) {
    let key = pick(key_a, key_b, j);
    let idx = pick(idx_a, idx_b, j);
    if (key != 0u && key >= tau) {
      let slot = atomicAdd(&count, 1u);
      cand_key[slot] = key;
      cand_idx[slot] = idx;
    }
  }
  workgroupBarrier();
  if (lid == 0u) { total_count = atomicLoad(&count); }
  let total = workgroupUniformLoad(&total_count);   // >= k: the k best all reach the bar
  if (total <= WG) {
    // the usual case: each candidate counts those ranked before it (the pairs are distinct, so
    // the ranks are too), and the first k put themselves in place; no further barrier
    if (lid < total) {
      let key = cand_key[lid];
      let idx = cand_idx[lid];
      var rank = 0u;
      for (var u = 0u; u < total; u = u + 1u) {
        rank = rank + u32(before(cand_key[u], cand_idx[u], key, idx));
      }
      if (rank < p.k) { emit(row, rank, idx, st); }
    }
    return;
  }
  // many ties at the bar: a bitonic sort of the candidates
  sort_candidates(lid, total);
  for (var j = lid; j < p.k; j = j + WG) {
    emit(row, j, cand_idx[j], st);
  }
}
