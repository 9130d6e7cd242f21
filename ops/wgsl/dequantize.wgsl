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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let first = (wid.y * nwg.x + wid.x) * WG * ITEMS + lid;
  for (var t = 0u; t < ITEMS; t = t + 1u) {
    let i = first + t * WG;
    if (i < p.n4) {
      let word = q[i];
      var v = vec4<f32>(0.0);
      for (var c = 0u; c < 4u; c = c + 1u) {
        let e = 4u * i + c;
        let ch = select((e / p.inner) % p.nch, 0u, p.nch == 1u);
        var qi = i32((word >> (8u * c)) & 0xffu);
        if (p.signed != 0u) { qi = (qi << 24u) >> 24u; }
        if (e < p.n) { v[c] = (f32(qi) - f32(zp[ch])) * scale[ch]; }
      }
      store(i, v);
    }
  }
}
