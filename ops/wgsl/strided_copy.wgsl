// dst[dst_base + sum_d i_d dst_stride_d] = src[src_base + sum_d i_d src_stride_d] for every
// index (i_0, ..., i_5) of an iteration shape of up to 6 dims (leading 1s), 32-bit elements.
// Strides are in elements and may be 0 (broadcast) or negative (a reversed slice). This one
// kernel moves data for Transpose, Slice, Expand, Concat and Split. One element per invocation.

struct Params {
  count: u32, src_base: u32, dst_base: u32, pad0: u32,
  dims_lo: vec4<u32>, dims_hi: vec4<u32>,        // dims 0-3 and 4-5 (innermost last)
  src_lo: vec4<i32>, src_hi: vec4<i32>,
  dst_lo: vec4<i32>, dst_hi: vec4<i32>,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let e = (wid.y * nwg.x + wid.x) * WG + lid;
  if (e >= p.count) {
    return;
  }
  var rest = e;
  var s = i32(p.src_base);
  var d = i32(p.dst_base);
  for (var t = 5; t >= 0; t = t - 1) {
    var size: u32;
    var ss: i32;
    var ds: i32;
    if (t >= 4) {
      size = p.dims_hi[t - 4]; ss = p.src_hi[t - 4]; ds = p.dst_hi[t - 4];
    } else {
      size = p.dims_lo[t]; ss = p.src_lo[t]; ds = p.dst_lo[t];
    }
    let i = i32(rest % size);
    rest = rest / size;
    s = s + i * ss;
    d = d + i * ds;
  }
  dst[u32(d)] = src[u32(s)];
}
