// DequantizeLinear: (f32(q) - f32(zero_point)) * scale, four values (one u32 of int8/uint8)
// per group. The difference is exact and the product correctly rounded, as WGSL requires, so
// the result is bit for bit the CPU's.

struct Params {
  n: u32,
  n4: u32,
  nch: u32,
  inner: u32,
  signed: u32,
  pad0: u32, pad1: u32, pad2: u32,
}

@group(0) @binding(0) var<storage, read> q: array<u32>;
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read> zp: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<${XT}>;
@group(0) @binding(4) var<uniform> p: Params;

const ITEMS: u32 = 4u;

fn store(i: u32, v: vec4<f32>) {
${STORE}
}

const PER_TENSOR: bool = ${PER_TENSOR};

fn channel(e: u32) -> u32 {
  if (PER_TENSOR) { return 0u; }
  return (e / p.inner) % p.nch;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let first = (wid.y * nwg.x + wid.x) * WG * ITEMS + lid;
  for (var t = 0u; t < ITEMS; t = t + 1u) {
    let i = first + t * WG;
    if (i < p.n4) {
      let e = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u);
      var ch = vec4<u32>(0u);
      if (!PER_TENSOR) { ch = vec4<u32>(channel(e.x), channel(e.y), channel(e.z), channel(e.w)); }
      let shifted = vec4<i32>(vec4<u32>(q[i]) << vec4<u32>(24u, 16u, 8u, 0u));
      // the byte at the top, then back down: arithmetic (int8) or logical (uint8) shift
      let qi = select(vec4<i32>(vec4<u32>(shifted) >> vec4<u32>(24u)), shifted >> vec4<u32>(24u),
                      p.signed != 0u);
      let s = vec4<f32>(scale[ch.x], scale[ch.y], scale[ch.z], scale[ch.w]);
      let z = vec4<f32>(vec4<i32>(zp[ch.x], zp[ch.y], zp[ch.z], zp[ch.w]));
      store(i, (vec4<f32>(qi) - z) * s);
    }
  }
}
