// QuantizeLinear: a vec4 group of x per u32 of the int8 or uint8 output; each invocation takes
// ITEMS groups WG apart (a workgroup's loads are contiguous) and loads them all before it
// computes, so ITEMS loads are in flight. Workgroups take their blocks back to front: the end of
// x, which whatever wrote it (or dynamic_quantize_linear's min/max pass) touched last, is the
// likeliest still in L2. Channel of element e: (e / inner) % nch (per tensor: nch 1). scale and
// zp are GPU arrays: host values uploaded once, or the output of dynamic_qparams.wgsl. Per
// tensor, the quotient is x * (1 / scale): one reciprocal per invocation, not a division per
// value (quantize4 takes either).

struct Params {
  n: u32,
  n4: u32,
  nch: u32,
  inner: u32,
  qmin: i32,
  qmax: i32,
  force_exact: u32,
  pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<${XT}>;
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read> zp: array<i32>;
@group(0) @binding(3) var<storage, read_write> q: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;

const ITEMS: u32 = 4u;

fn load_x(i: u32) -> vec4<f32> {
${LOADX}
}

const PER_TENSOR: bool = ${PER_TENSOR};

fn channel(e: u32) -> u32 {
  if (PER_TENSOR) { return 0u; }
  return (e / p.inner) % p.nch;
}

// Group i of x, v, into q[i]. s0, inv, z0: the scale, its reciprocal and the zero point per tensor
// (read once per invocation: the stores into q might alias them as far as a compiler knows).
fn quantize_group(i: u32, v: vec4<f32>, s0: f32, inv: f32, z0: i32, exact: bool) {
  if (i >= p.n4) { return; }
  let e = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u);
  var s: vec4<f32>;
  var z: vec4<i32>;
  var q_near: vec4<f32>;
  if (PER_TENSOR) {
    s = vec4<f32>(s0);
    z = vec4<i32>(z0);
    q_near = v * inv;
  } else {
    let ch = vec4<u32>(channel(e.x), channel(e.y), channel(e.z), channel(e.w));
    s = vec4<f32>(scale[ch.x], scale[ch.y], scale[ch.z], scale[ch.w]);
    z = vec4<i32>(zp[ch.x], zp[ch.y], zp[ch.z], zp[ch.w]);
    q_near = v / s;
  }
  var bytes = vec4<u32>(quantize4(v, q_near, s, z, p.qmin, p.qmax, exact)) & vec4<u32>(0xffu);
  if (e.w >= p.n) { bytes = select(vec4<u32>(0u), bytes, e < vec4<u32>(p.n)); }   // the ragged end
  let b = bytes << vec4<u32>(0u, 8u, 16u, 24u);
  q[i] = (b.x | b.y) | (b.z | b.w);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let blocks = (p.n4 + WG * ITEMS - 1u) / (WG * ITEMS);
  let block = wid.y * nwg.x + wid.x;
  if (block >= blocks) { return; }
  let first = (blocks - 1u - block) * WG * ITEMS + lid;
  let last = p.n4 - 1u;
  // groups past the end load the last one again (and are not stored): the loads need no branch
  let v0 = load_x(min(first, last));
  let v1 = load_x(min(first + WG, last));
  let v2 = load_x(min(first + 2u * WG, last));
  let v3 = load_x(min(first + 3u * WG, last));
  let s0 = scale[0];   // these three used per tensor only
  let inv = 1.0 / s0;
  let z0 = zp[0];
  let exact = p.force_exact != 0u;
  quantize_group(first, v0, s0, inv, z0, exact);
  quantize_group(first + WG, v1, s0, inv, z0, exact);
  quantize_group(first + 2u * WG, v2, s0, inv, z0, exact);
  quantize_group(first + 3u * WG, v3, s0, inv, z0, exact);
}
