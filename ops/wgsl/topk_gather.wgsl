// log_softmax_topk for k > 8 (topk.wgsl takes k <= 8): one workgroup per row. Pass 1 is
// softmax.wgsl's (row_stats, the same code, so the values are bit for bit logsoftmax's) and also
// keeps each invocation's largest order key. The k-th largest of those WG keys is a threshold
// at least k values reach. Pass 2 gathers every value at or above it into workgroup memory (CAP
// slots), which a bitonic sort orders by (key descending, index ascending). Should more than
// CAP values reach the threshold (a row of many equal values), k rounds of "the best value
// ranked after the last one chosen" over the row find them instead: slower, same answer.

@group(0) @binding(1) var<storage, read_write> vals: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

const CAP: u32 = 1024u;

var<workgroup> keys: array<u32, WG>;
var<workgroup> threshold: u32;
var<workgroup> count: atomic<u32>;
var<workgroup> total_count: u32;
var<workgroup> cand_key: array<u32, CAP>;
var<workgroup> cand_idx: array<u32, CAP>;

var<private> local_top_key: u32;   // this invocation's largest order key (0: none yet)

// Largest order key among the row's values group i holds (0 past the row's end).
fn group_top_key(i: u32, v: vec4<f32>) -> u32 {
  let valid = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n);
  let k = select(vec4<u32>(0u), order_key4(v), valid);
  return max(max(k.x, k.y), max(k.z, k.w));
}

fn observe4(i: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, cm: f32) {
  local_top_key = max(local_top_key, max(max(group_top_key(i, v0), group_top_key(i + WG, v1)),
                                         max(group_top_key(i + 2u * WG, v2), group_top_key(i + 3u * WG, v3))));
}

fn value_at(row: u32, idx: u32) -> f32 {
  return load4(row, idx / 4u)[idx % 4u];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (lid == 0u) { atomicStore(&count, 0u); }
  let st = row_stats(row, lid);
  keys[lid] = local_top_key;
  workgroupBarrier();
  // the k-th largest key (ties by invocation): the invocation of rank k - 1 holds it
  var rank = 0u;
  let mine = keys[lid];
  for (var u = 0u; u < WG; u = u + 1u) {
    rank = rank + u32(before(keys[u], u, mine, lid));
  }
  if (rank == p.k - 1u) { threshold = mine; }
  workgroupBarrier();
  let tau = threshold;
  for (var j = lid; j < p.n4; j = j + WG) {
    let i = p.n4 - 1u - j;   // back to front, as in softmax.wgsl
    let key = order_key4(load4(row, i));
    for (var c = 0u; c < 4u; c = c + 1u) {
      let idx = 4u * i + c;
      if (idx < p.n && key[c] >= tau) {
        let slot = atomicAdd(&count, 1u);
        if (slot < CAP) {
          cand_key[slot] = key[c];
          cand_idx[slot] = idx;
        }
      }
    }
  }
  workgroupBarrier();
  if (lid == 0u) { total_count = atomicLoad(&count); }
  let total = workgroupUniformLoad(&total_count);
  if (total <= CAP) {
    sort_candidates(lid, total);
  } else {
    // many values tie at the threshold: pick the k best one at a time
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
      workgroupBarrier();
      if (lid == 0u) { red_bad[j] = last_idx; }   // park the pick: cand_* is scratch here
      workgroupBarrier();
    }
    for (var j = lid; j < p.k; j = j + WG) {
      cand_idx[j] = red_bad[j];
    }
    workgroupBarrier();
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
