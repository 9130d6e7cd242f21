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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let first = (wid.y * nwg.x + wid.x) * WG * ITEMS + lid;
  let exact = p.force_exact != 0u;
  for (var t = 0u; t < ITEMS; t = t + 1u) {
    let i = first + t * WG;
    if (i < p.n4) {
      let v = load_x(i);
      var word = 0u;
      for (var c = 0u; c < 4u; c = c + 1u) {
        let e = 4u * i + c;
        if (e < p.n) {
          let ch = select((e / p.inner) % p.nch, 0u, p.nch == 1u);
          let qv = quantize_value(v[c], scale[ch], zp[ch], p.qmin, p.qmax, exact);
          word = word | ((u32(qv) & 0xffu) << (8u * c));
        }
      }
      q[i] = word;
    }
  }
}
