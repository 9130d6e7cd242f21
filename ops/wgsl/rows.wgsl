// Row access and the row statistics shared by softmax.wgsl and topk.wgsl: one workgroup per row
// of x (rows of p.n values, p.n4 = ceil(n / 4) vec4 groups). programs.py fills in load4(): a
// vec4 load when rows start 16-byte aligned (n % 4 == 0), else four guarded scalar loads.
// A group past the row's end reads as -inf, which no statistic sees.

struct Params {
  rows: u32,
  n: u32,
  n4: u32,
  k: u32,        // top-k only
}

@group(0) @binding(0) var<storage, read> x: array<${XT}>;

fn load4(row: u32, i: u32) -> vec4<f32> {
${LOAD}
}

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.y * nwg.x + wid.x; }

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;
var<workgroup> red_bad: array<u32, WG>;

// e**(a - m) for a <= m, 1 when a == m (-inf == -inf included, where a - m would be NaN).
fn rescale(a: f32, m: f32) -> f32 {
  return select(exp4(vec4<f32>(a - m)).x, 1.0, bitcast<u32>(a) == bitcast<u32>(m));
}

// The order of top-k as one u32 per value: larger keys rank first; -0 ranks as +0 (they are
// equal); NaN is 1, below every number (-inf is 0x00800001); 0 is left for "no value".
// A number's key is its sign-magnitude bits as a two's complement integer, offset to unsigned.
fn order_key4(v: vec4<f32>) -> vec4<u32> {
  let b = bitcast<vec4<u32>>(v);
  let mag = b & vec4<u32>(0x7fffffffu);
  let signed_mag = select(mag, vec4<u32>(0u) - mag, b != mag);
  return select(signed_mag + vec4<u32>(0x80000001u), vec4<u32>(1u), mag > vec4<u32>(POS_INF_BITS));
}

struct RowStats {
  m: f32,       // max of the row's numbers (-inf if none)
  s: f32,       // sum of e**(x - m)
  nan_row: bool // the row holds NaN or +inf, or only -inf: every result is NaN
}

// A trip: four groups an invocation reads at once, WG apart (so a workgroup's loads are
// contiguous).
struct Trip {
  v0: vec4<f32>,
  v1: vec4<f32>,
  v2: vec4<f32>,
  v3: vec4<f32>,
}

// Groups i, i + WG, i + 2 WG, i + 3 WG of the row (past its end: -inf).
fn load_trip(row: u32, i: u32) -> Trip {
  let ninf4 = vec4<f32>(from_bits(NEG_INF_BITS));
  var t = Trip(ninf4, ninf4, ninf4, ninf4);
  if (i < p.n4) { t.v0 = load4(row, i); }
  if (i + WG < p.n4) { t.v1 = load4(row, i + WG); }
  if (i + 2u * WG < p.n4) { t.v2 = load4(row, i + 2u * WG); }
  if (i + 3u * WG < p.n4) { t.v3 = load4(row, i + 3u * WG); }
  return t;
}

var<private> st_m: f32;       // online maximum
var<private> st_s4: vec4<f32>;   // lane sums of e**(x - st_m)
var<private> st_bad: bool;

// Takes a trip into the invocation's online statistics. The trip's groups and the largest number
// among them also go to the kernel's observe4() (top-k; softmax's does nothing).
fn take_trip(i: u32, t: Trip) {
  // NaN lanes count as -inf for the maximum; NaN, or +inf as the maximum, poisons the row
  let ninf4 = vec4<f32>(from_bits(NEG_INF_BITS));
  let n0 = nan_mask4(t.v0);
  let n1 = nan_mask4(t.v1);
  let n2 = nan_mask4(t.v2);
  let n3 = nan_mask4(t.v3);
  let w = max(max(select(t.v0, ninf4, n0), select(t.v1, ninf4, n1)),
              max(select(t.v2, ninf4, n2), select(t.v3, ninf4, n3)));
  let cm = max(max(w.x, w.y), max(w.z, w.w));
  st_bad = st_bad || any((n0 | n1) | (n2 | n3)) || bitcast<u32>(cm) == POS_INF_BITS;
  observe4(i, t.v0, t.v1, t.v2, t.v3, cm);
  let m_new = max(st_m, cm);
  st_s4 = st_s4 * rescale(st_m, m_new);
  st_m = m_new;
  // while m is -inf the groups hold only -inf and NaN: referring them to 0 adds ~0 or NaN
  let r = vec4<f32>(select(st_m, 0.0, is_neg_inf(st_m)));
  st_s4 = st_s4 + ((exp_term4(t.v0 - r) + exp_term4(t.v1 - r)) +
                   (exp_term4(t.v2 - r) + exp_term4(t.v3 - r)));
}

// One pass over the row: each invocation keeps an online max and four lane sums over groups
// lid, lid + WG, ..., two trips of four loads in flight at a time (the loads of the second are
// issued before the first is taken), then a workgroup tree merges the invocations. An
// invocation's trips go to observe4() in increasing index order.
fn row_stats(row: u32, lid: u32) -> RowStats {
  st_m = from_bits(NEG_INF_BITS);
  st_s4 = vec4<f32>(0.0);
  st_bad = false;
  for (var i = lid; i < p.n4; i = i + 8u * WG) {
    let t0 = load_trip(row, i);
    let t1 = load_trip(row, i + 4u * WG);
    take_trip(i, t0);
    take_trip(i + 4u * WG, t1);
  }
  let m = st_m;
  let s4 = st_s4;
  let bad = st_bad;
  red_m[lid] = m;
  red_s[lid] = (s4.x + s4.y) + (s4.z + s4.w);
  red_bad[lid] = u32(bad);
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      let ma = red_m[lid];
      let mb = red_m[lid + stride];
      let mm = max(ma, mb);
      red_s[lid] = red_s[lid] * rescale(ma, mm) + red_s[lid + stride] * rescale(mb, mm);
      red_m[lid] = mm;
      red_bad[lid] = red_bad[lid] | red_bad[lid + stride];
    }
    workgroupBarrier();
  }
  let out = RowStats(red_m[0], red_s[0], red_bad[0] != 0u || is_neg_inf(red_m[0]));
  workgroupBarrier();   // red_* may be reused after this
  return out;
}
