// logsoftmax (MODE 0) / softmax (MODE 1) along an axis that is not the last: x viewed as
// (outer, n, inner); one invocation per (outer, j) column walks its n values with stride inner
// (neighbouring invocations read neighbouring addresses). Three sweeps of the column: max,
// sum, write; the same special-value rules as softmax.wgsl.

struct Params {
  outer: u32,
  n: u32,
  inner: u32,
  pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

const MODE: u32 = ${MODE}u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let col = gid.y * nwg.x * WG + gid.x;
  if (col >= p.outer * p.inner) { return; }
  let o = col / p.inner;
  let j = col % p.inner;
  let base = o * p.n * p.inner + j;
  let ninf = from_bits(NEG_INF_BITS);
  var m = ninf;
  var bad = false;
  for (var k = 0u; k < p.n; k = k + 1u) {
    let v = x[base + k * p.inner];
    bad = bad || poisons_row(v);
    m = max(m, select(v, ninf, is_nan(v)));
  }
  let r = select(m, 0.0, is_neg_inf(m));
  var s = 0.0;
  for (var k = 0u; k < p.n; k = k + 1u) {
    s = s + exp_term4(vec4<f32>(x[base + k * p.inner] - r)).x;
  }
  let nan_col = bad || is_neg_inf(m);
  var c = 0.0;
  if (!nan_col) { c = select(log_pos(s), 1.0 / s, MODE == 1u); }
  for (var k = 0u; k < p.n; k = k + 1u) {
    let v = x[base + k * p.inner];
    var out: f32;
    if (MODE == 0u) {
      out = select((v - m) - c, ninf, is_neg_inf(v));
    } else {
      out = select(exp4(vec4<f32>(v - m)).x * c, 0.0, is_neg_inf(v));
    }
    y[base + k * p.inner] = select(out, from_bits(NAN_BITS), nan_col);
  }
}
