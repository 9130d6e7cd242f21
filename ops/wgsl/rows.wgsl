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

// One pass over the row: each invocation keeps an online max and four lane sums over groups
// lid, lid + WG, ... (four loads in flight per trip), then a workgroup tree merges them. Each
// trip's groups i, i + WG, i + 2 WG, i + 3 WG (past the row's end: -inf) and the largest number
// among them also go to the kernel's observe4() (top-k; softmax's does nothing), so an
// invocation sees its values in increasing index order.
fn row_stats(row: u32, lid: u32) -> RowStats {
  let ninf = from_bits(NEG_INF_BITS);
  var m = ninf;
  var s4 = vec4<f32>(0.0);
  var bad = false;
  for (var i = lid; i < p.n4; i = i + 4u * WG) {
    let v0 = load4(row, i);
    var v1 = vec4<f32>(ninf);
    var v2 = vec4<f32>(ninf);
    var v3 = vec4<f32>(ninf);
    if (i + WG < p.n4) { v1 = load4(row, i + WG); }
    if (i + 2u * WG < p.n4) { v2 = load4(row, i + 2u * WG); }
    if (i + 3u * WG < p.n4) { v3 = load4(row, i + 3u * WG); }
    bad = bad || any_poisons4(v0) || any_poisons4(v1) || any_poisons4(v2) || any_poisons4(v3);
    let cm = max(max(max_of_numbers4(v0), max_of_numbers4(v1)),
                 max(max_of_numbers4(v2), max_of_numbers4(v3)));
    observe4(i, v0, v1, v2, v3, cm);
    let m_new = max(m, cm);
    s4 = s4 * rescale(m, m_new);
    m = m_new;
    // while m is -inf the groups hold only -inf and NaN: referring them to 0 adds ~0 or NaN
    let r = vec4<f32>(select(m, 0.0, is_neg_inf(m)));
    s4 = s4 + ((exp_term4(v0 - r) + exp_term4(v1 - r)) + (exp_term4(v2 - r) + exp_term4(v3 - r)));
  }
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
