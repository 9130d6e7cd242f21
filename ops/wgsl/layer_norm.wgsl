// layer_norm: one workgroup per normalised row (the trailing axes flattened, p.n values).
// Pass 1: mean and sum of squared deviations in one read, stable for any offset: each
// invocation merges vec4 groups into (count, mean, M2) with Chan et al.'s pairwise update,
// then a workgroup tree merges the invocations the same way. Pass 2 re-reads the row and
// writes ((x - mean) * rstd) * w + b. A row holding NaN or inf, or with var + epsilon == 0,
// is NaN throughout.

struct Params {
  rows: u32,
  n: u32,
  n4: u32,
  has_bias: u32,
  epsilon: f32,
  pad0: u32, pad1: u32, pad2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<${XT}>;
@group(0) @binding(1) var<storage, read> w: array<${XT}>;
@group(0) @binding(2) var<storage, read> b: array<${XT}>;
@group(0) @binding(3) var<storage, read_write> y: array<${XT}>;
@group(0) @binding(4) var<uniform> p: Params;

// (value, lane valid) for group i of row `row` of array `which` (0 x, 1 w, 2 b)
fn load4(row: u32, i: u32) -> vec4<f32> {
${LOAD}
}
fn load_wb(which: u32, i: u32) -> vec4<f32> {
${LOAD_WB}
}
fn store4(row: u32, i: u32, v: vec4<f32>) {
${STORE}
}
fn lanes_valid(i: u32) -> vec4<bool> {
  return vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n);
}

var<workgroup> red_n: array<f32, WG>;
var<workgroup> red_mean: array<f32, WG>;
var<workgroup> red_m2: array<f32, WG>;
var<workgroup> red_bad: array<u32, WG>;

struct Moments { n: f32, mean: f32, m2: f32 }

fn merge(a: Moments, b: Moments) -> Moments {
  let n = a.n + b.n;
  if (b.n == 0.0) { return a; }
  if (a.n == 0.0) { return b; }
  let d = b.mean - a.mean;
  let fb = b.n / n;
  return Moments(n, a.mean + d * fb, a.m2 + b.m2 + d * d * (a.n * fb));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  var acc = Moments(0.0, 0.0, 0.0);
  var bad = false;
  for (var i = lid; i < p.n4; i = i + WG) {
    let valid = lanes_valid(i);
    let v = select(vec4<f32>(0.0), load4(row, i), valid);
    bad = bad || any(valid & ((bitcast<vec4<u32>>(v) & vec4<u32>(POS_INF_BITS)) == vec4<u32>(POS_INF_BITS)));
    let cnt = dot(select(vec4<f32>(0.0), vec4<f32>(1.0), valid), vec4<f32>(1.0));
    let mean = ((v.x + v.y) + (v.z + v.w)) / cnt;
    let d = select(vec4<f32>(0.0), v - vec4<f32>(mean), valid);
    acc = merge(acc, Moments(cnt, mean, dot(d, d)));
  }
  red_n[lid] = acc.n;
  red_mean[lid] = acc.mean;
  red_m2[lid] = acc.m2;
  red_bad[lid] = u32(bad);
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      let m = merge(Moments(red_n[lid], red_mean[lid], red_m2[lid]),
                    Moments(red_n[lid + stride], red_mean[lid + stride], red_m2[lid + stride]));
      red_n[lid] = m.n;
      red_mean[lid] = m.mean;
      red_m2[lid] = m.m2;
      red_bad[lid] = red_bad[lid] | red_bad[lid + stride];
    }
    workgroupBarrier();
  }
  let mean = red_mean[0];
  let var_eps = red_m2[0] / red_n[0] + p.epsilon;
  let nan_row = red_bad[0] != 0u || var_eps <= 0.0;
  let rstd = inverseSqrt(select(var_eps, 1.0, nan_row));
  for (var j = lid; j < p.n4; j = j + WG) {
    let i = p.n4 - 1u - j;   // back to front, as in softmax.wgsl
    var o = (load4(row, i) - vec4<f32>(mean)) * rstd * load_wb(0u, i);
    if (p.has_bias != 0u) { o = o + load_wb(1u, i); }
    store4(row, i, select(o, vec4<f32>(from_bits(NAN_BITS)), nan_row));
  }
}
