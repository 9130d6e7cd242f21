// log_softmax_topk, any k <= WG: one workgroup per row, the row read once in full.
//
// Pass 1 is softmax.wgsl's (row_stats, the same code, so the values are bit for bit
// logsoftmax's); its observe4() hook only keeps each invocation's largest order key, mostly from
// the trip maximum row_stats computes anyway: no lists, no atomics, no branches on the data.
// The k-th largest of the WG per-invocation keys, tau, is a threshold at least k values reach,
// and every value at or above it lies in the share of an invocation whose largest key is at or
// above it: usually just k invocations (more with ties at tau). Only their shares are read
// again -- k * n / WG values, 6% of the row for k = 8 and WG = 128 -- spread over the whole
// workgroup, and the values at or above tau (usually few more than k) are gathered into
// workgroup memory and put in order (key descending, index ascending: rank counting up to WG
// candidates, a bitonic sort up to CAP); each output's value comes back from its key. Should
// more than CAP values reach tau (a row of many equal values), k rounds of "the best value
// ranked after the last one chosen" over the row find them instead: slower, same answer.
//
// (Two earlier forms kept, during the read, each invocation's best 8 in registers behind a bar
// the workgroup raised with atomics, or re-read the whole row after the threshold: on an H200
// they took 407 and 752 us for (4096, 32000) with k = 8, against 212 us here.)

@group(0) @binding(1) var<storage, read_write> vals: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

const CAP: u32 = 1024u;

var<workgroup> keys: array<vec4<u32>, WG / 4u>;   // key of invocation u (later: of pick u): keys[u / 4][u % 4]
var<workgroup> owners: array<u32, WG>;
var<workgroup> owner_count: atomic<u32>;
var<workgroup> threshold: atomic<u32>;
var<workgroup> count: atomic<u32>;
var<workgroup> total_count: u32;
var<workgroup> cand_key: array<u32, CAP>;
var<workgroup> cand_idx: array<u32, CAP>;

var<private> top_key: u32;   // this invocation's largest order key (0: none yet)

// The keys of group i, 0 for lanes past the row's end.
fn row_keys4(i: u32, v: vec4<f32>) -> vec4<u32> {
  let valid = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n);
  return select(vec4<u32>(0u), order_key4(v), valid);
}

fn group_top_key(i: u32, v: vec4<f32>) -> u32 {
  let k = row_keys4(i, v);
  return max(max(k.x, k.y), max(k.z, k.w));
}

// cm: the largest number of the trip (-inf if none). Where cm is a normal number or +inf, its
// key is the trip's largest (keys follow the numbers; NaN's lies below them all). Otherwise the
// keys are taken one by one: -inf may be padding past the row's end or stand for a trip of NaN,
// and a zero or subnormal maximum may have been flushed by the GPU (either way, too small or too
// large a key).
fn observe4(i: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, cm: f32) {
  if ((bitcast<u32>(cm) & POS_INF_BITS) != 0u && !is_neg_inf(cm)) {
    top_key = max(top_key, order_key4(vec4<f32>(cm)).x);
  } else {
    top_key = max(top_key, max(max(group_top_key(i, v0), group_top_key(i + WG, v1)),
                               max(group_top_key(i + 2u * WG, v2), group_top_key(i + 3u * WG, v3))));
  }
}

fn gather(key: u32, idx: u32, tau: u32) {
  if (key >= tau) {
    let slot = atomicAdd(&count, 1u);
    if (slot < CAP) {
      cand_key[slot] = key;
      cand_idx[slot] = idx;
    }
  }
}

// Group number of work item w (p.n4, past the row's end, for none).
fn share_group(w: u32, share: u32, work: u32) -> u32 {
  if (w >= work) { return p.n4; }
  let i = owners[w / share] + (w % share) * WG;
  return min(i, p.n4);
}

// Gathers the values of group i (none if i >= p.n4) that reach tau.
fn gather4(i: u32, v: vec4<f32>, tau: u32) {
  if (i < p.n4) {
    let key = row_keys4(i, v);
    if (any(key >= vec4<u32>(tau))) {
      gather(key.x, 4u * i, tau);
      gather(key.y, 4u * i + 1u, tau);
      gather(key.z, 4u * i + 2u, tau);
      gather(key.w, 4u * i + 3u, tau);
    }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  if (lid == 0u) {
    atomicStore(&count, 0u);
    atomicStore(&owner_count, 0u);
    atomicStore(&threshold, 0xffffffffu);
  }
  let st = row_stats(row, lid);   // its workgroup tree's barriers also publish the stores above
  keys[lid / 4u][lid % 4u] = top_key;
  workgroupBarrier();
  // tau, the k-th largest of the keys, is the least key that fewer than k keys exceed: the
  // invocations holding such keys (k of them, more with ties at tau) own every value >= tau
  let mine = top_key;
  var greater = 0u;
  for (var u = 0u; u < WG / 4u; u = u + 1u) {
    let gt = keys[u] > vec4<u32>(mine);
    greater = greater + ((u32(gt.x) + u32(gt.y)) + (u32(gt.z) + u32(gt.w)));
    if (greater >= p.k) { break; }
  }
  if (greater < p.k) {
    owners[atomicAdd(&owner_count, 1u)] = lid;
    atomicMin(&threshold, max(mine, 1u));   // key 0 is no value
  }
  workgroupBarrier();
  let tau = atomicLoad(&threshold);
  // the owners' shares: owner o holds groups o, o + WG, o + 2 WG, ... (at most `share` of them);
  // work item w is group w % share of owner w / share, four items in flight per trip
  let share = (p.n4 + WG - 1u) / WG;
  let work = atomicLoad(&owner_count) * share;
  for (var w = lid; w < work; w = w + 4u * WG) {
    let i0 = share_group(w, share, work);
    let i1 = share_group(w + WG, share, work);
    let i2 = share_group(w + 2u * WG, share, work);
    let i3 = share_group(w + 3u * WG, share, work);
    let v0 = load4(row, min(i0, p.n4 - 1u));
    let v1 = load4(row, min(i1, p.n4 - 1u));
    let v2 = load4(row, min(i2, p.n4 - 1u));
    let v3 = load4(row, min(i3, p.n4 - 1u));
    gather4(i0, v0, tau);
    gather4(i1, v1, tau);
    gather4(i2, v2, tau);
    gather4(i3, v3, tau);
  }
  workgroupBarrier();
  if (lid == 0u) { total_count = atomicLoad(&count); }
  let total = workgroupUniformLoad(&total_count);   // >= k
  let c = log_pos(st.s);
  if (total <= WG) {
    // the usual case: each candidate counts those ranked before it (the pairs are distinct, so
    // the ranks are too), and the first k write themselves; no further barrier
    if (lid < total) {
      let key = cand_key[lid];
      let idx = cand_idx[lid];
      var before_me = 0u;
      for (var u = 0u; u < total; u = u + 1u) {
        before_me = before_me + u32(before(cand_key[u], cand_idx[u], key, idx));
      }
      if (before_me < p.k) { emit(row, before_me, key, idx, st, c); }
    }
    return;
  }
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
        let key = row_keys4(i, load4(row, i));
        for (var l = 0u; l < 4u; l = l + 1u) {
          let idx = 4u * i + l;
          if (key[l] != 0u && before(last_key, last_idx, key[l], idx)
              && before(key[l], idx, best_key, best_idx)) {
            best_key = key[l];
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
      if (lid == 0u) {   // park the pick (k <= WG): cand_* is scratch here
        owners[j] = last_idx;
        keys[j / 4u][j % 4u] = last_key;
      }
      workgroupBarrier();
    }
    for (var j = lid; j < p.k; j = j + WG) {
      cand_idx[j] = owners[j];
      cand_key[j] = keys[j / 4u][j % 4u];
    }
    workgroupBarrier();
  }
  for (var j = lid; j < p.k; j = j + WG) {
    emit(row, j, cand_key[j], cand_idx[j], st, c);
  }
}

// Output j of the row: the value of `key`, as logsoftmax computes it (c: ln of the row's sum).
// The value comes from its key (order_key4 undone), not from memory: one round trip less.
fn emit(row: u32, j: u32, key: u32, idx: u32, st: RowStats, c: f32) {
  var o = (value_of_key(key) - st.m) - c;
  o = select(o, from_bits(NEG_INF_BITS), key == NEG_INF_KEY);
  o = select(o, from_bits(NAN_BITS), st.nan_row || key == NAN_KEY);
  vals[row * p.k + j] = o;
  ids[row * p.k + j] = i32(idx);
}

const NAN_KEY: u32 = 1u;
const NEG_INF_KEY: u32 = 0x00800001u;   // order_key4(-inf)

// The number whose key is `key`, for NEG_INF_KEY < key <= order_key4(+inf): order_key4 undone
// (±0 share a key and come back as +0, which logsoftmax maps to the same result as -0).
fn value_of_key(key: u32) -> f32 {
  let signed_mag = key - 0x80000001u;
  return bitcast<f32>(select(signed_mag, 0x80000000u | (0u - signed_mag), signed_mag >= 0x80000000u));
}
