// QuantizeLinear: four consecutive values per invocation, packed into one u32 of the int8 or
// uint8 output. Channel of element e: (e / inner) % nch (per tensor: nch 1). scale and zp are
// GPU arrays: host values uploaded once, or the output of dynamic_qparams.wgsl.

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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let first = (wid.y * nwg.x + wid.x) * WG * ITEMS + lid;
  let exact = p.force_exact != 0u;
  for (var t = 0u; t < ITEMS; t = t + 1u) {
    let i = first + t * WG;
    if (i < p.n4) {
      let v = load_x(i);
      let e = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u);
      var ch = vec4<u32>(0u);
      if (!PER_TENSOR) { ch = vec4<u32>(channel(e.x), channel(e.y), channel(e.z), channel(e.w)); }
      let s = vec4<f32>(scale[ch.x], scale[ch.y], scale[ch.z], scale[ch.w]);
      let z = vec4<i32>(zp[ch.x], zp[ch.y], zp[ch.z], zp[ch.w]);
      let q4 = quantize4(v, s, z, p.qmin, p.qmax, exact);
      let bytes = vec4<u32>(q4) & vec4<u32>(0xffu);
      let valid = e < vec4<u32>(p.n);
      let b = select(vec4<u32>(0u), bytes, valid) << vec4<u32>(0u, 8u, 16u, 24u);
      q[i] = (b.x | b.y) | (b.z | b.w);
    }
  }
}
