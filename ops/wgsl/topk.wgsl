// log_softmax_topk for k <= 8 (topk_gather.wgsl takes larger k): one workgroup per row and one
// read of the row. The read is softmax.wgsl's first pass (row_stats, the same code, so the values
// are bit for bit logsoftmax's); its observe4() hook keeps, in registers, each invocation's best
// 8 (key, index) pairs among the values it reads (keys: order_key4; an invocation reads its
// indices in increasing order, so a new value ranks after an equal key already listed).
//
// What keeps that cheap is a bar every invocation can read and that only rises: invocation lid
// belongs to set lid % k and raises set_best[set] (a workgroup atomic) to the best key it has
// read. The k sets are disjoint, so k distinct values of the row reach min(set_best), whenever
// it is read: the row's k-th best key is at least that, and a value below it cannot be among the
// k best. Every invocation publishes in its first trip, so from then on few values reach the bar
// and the list insertions (about 40 instructions, branch-free) are rare; a trip costs 16 key
// computations, a compare and the k loads of the bar.
//
// At the end, every listed pair at or above the final bar goes to workgroup memory (at most 8 per
// invocation: CAP never overflows, whatever the ties), a bitonic sort orders them by (key
// descending, index ascending), and the first k are the answer.

@group(0) @binding(1) var<storage, read_write> vals: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

const K_MAX: u32 = 8u;
const CAP: u32 = K_MAX * WG;

var<workgroup> set_best: array<atomic<u32>, K_MAX>;
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
var<private> my_set: u32;
var<private> published: u32;   // the best key this invocation has put into set_best

// (ka, ia) ranks before (kb, ib)
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
  return ka > kb || (ka == kb && ia < ib);
}

fn value_at(row: u32, idx: u32) -> f32 {
  return load4(row, idx / 4u)[idx % 4u];
}

// A key the row's k-th best reaches: the least of the k sets' best.
fn bar() -> u32 {
  var t = 0xffffffffu;
  for (var s = 0u; s < p.k; s = s + 1u) {
    t = min(t, atomicLoad(&set_best[s]));
  }
  return t;
}

// Slot k - 1's key: what a new value must beat to be among this invocation's first k.
fn kth_key() -> u32 {
  return select(key_a[min(p.k, 4u) - 1u], key_b[max(p.k, 5u) - 5u], p.k > 4u);
}

// Lanes of group i that lie in the row.
fn lanes_in_row(i: u32) -> vec4<bool> {
  return vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n);
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
}

fn offer4(i: u32, keys: vec4<u32>, tau: u32) {
  for (var c = 0u; c < 4u; c = c + 1u) {
    if (keys[c] >= max(tau, kth_key() + 1u)) { insert(keys[c], 4u * i + c); }
  }
}

fn observe4(i: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
  var k0 = order_key4(v0);
  var k1 = order_key4(v1);
  var k2 = order_key4(v2);
  var k3 = order_key4(v3);
  if (i + 3u * WG >= p.n / 4u) {   // the trip reaches the row's end: lanes past it get no key
    k0 = select(vec4<u32>(0u), k0, lanes_in_row(i));
    k1 = select(vec4<u32>(0u), k1, lanes_in_row(i + WG));
    k2 = select(vec4<u32>(0u), k2, lanes_in_row(i + 2u * WG));
    k3 = select(vec4<u32>(0u), k3, lanes_in_row(i + 3u * WG));
  }
  let best4 = max(max(k0, k1), max(k2, k3));
  let best = max(max(best4.x, best4.y), max(best4.z, best4.w));
  if (best > published) {
    atomicMax(&set_best[my_set], best);
    published = best;
  }
  let tau = bar();
  if (best >= max(tau, kth_key() + 1u)) {   // rare after the first trip
    offer4(i, k0, tau);
    offer4(i + WG, k1, tau);
    offer4(i + 2u * WG, k2, tau);
    offer4(i + 3u * WG, k3, tau);
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (lid < K_MAX) { atomicStore(&set_best[lid], 0u); }
  if (lid == 0u) { atomicStore(&count, 0u); }
  my_set = lid % p.k;
  workgroupBarrier();
  let st = row_stats(row, lid);   // its workgroup tree's barriers also end every invocation's read
  let tau = bar();
  for (var j = 0u; j < p.k; j = j + 1u) {
    let key = select(key_a[min(j, 3u)], key_b[max(j, 4u) - 4u], j >= 4u);
    let idx = select(idx_a[min(j, 3u)], idx_b[max(j, 4u) - 4u], j >= 4u);
    if (key != 0u && key >= tau) {
      let slot = atomicAdd(&count, 1u);
      cand_key[slot] = key;
      cand_idx[slot] = idx;
    }
  }
  workgroupBarrier();
  if (lid == 0u) { total_count = atomicLoad(&count); }
  let total = workgroupUniformLoad(&total_count);   // >= k: the k best all reach the bar
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
  let c = log_pos(st.s);
  for (var j = lid; j < p.k; j = j + WG) {
    let idx = cand_idx[j];
    let v = value_at(row, idx);
    var o = select((v - st.m) - c, from_bits(NEG_INF_BITS), is_neg_inf(v));
    o = select(o, from_bits(NAN_BITS), st.nan_row);
    vals[row * p.k + j] = o;
    ids[row * p.k + j] = i32(idx);
  }
}
