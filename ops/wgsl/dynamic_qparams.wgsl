// DynamicQuantizeLinear's parameters on the GPU, in two dispatches (ENTRY partial, then
// finish): min and max of x (NaN and inf counted, not compared), then ONNX's float32 steps
//   scale = (max(0, max x) - min(0, min x)) / 255   (1 / 255 when that range is 0)
//   zero_point = rint(clamp(0 - min(0, min x) / scale, 0, 255))
// with correctly rounded divisions (div_rn), so both are bit for bit onnx's. A NaN or inf in x
// makes scale NaN and zero_point 0 (the CPU raises; the GPU cannot without a host read).

struct Params {
  n: u32,
  n4: u32,
  parts: u32,     // partial results: one per workgroup of the first dispatch
  chunk: u32,     // vec4 groups per workgroup of the first dispatch, a multiple of 4 WG
}

@group(0) @binding(0) var<storage, read> x: array<${XT}>;
@group(0) @binding(1) var<storage, read_write> part: array<vec4<f32>>;   // (lo, hi, bad, -)
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
@group(0) @binding(3) var<storage, read_write> zp: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> red: array<vec4<f32>, WG>;

fn load_x(i: u32) -> vec4<f32> {
${LOADX}
}

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(min(a.x, b.x), max(a.y, b.y), a.z + b.z, 0.0);
}

fn reduce(lid: u32, v: vec4<f32>) -> vec4<f32> {
  red[lid] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { red[lid] = combine(red[lid], red[lid + stride]); }
    workgroupBarrier();
  }
  return red[0];
}

// Workgroup w reads groups [w chunk, (w + 1) chunk) front to back (so the end of x is read last,
// and dynamic quantization's own pass, back to front, finds it in L2), four loads in flight per
// invocation and trip, each load contiguous across the workgroup. Lanes are combined as they
// come, without tests: an inf or NaN lane may leave lo and hi anything, but it also marks the
// part bad, and then they are not used; lanes past the end of x are 0 (flat_load), which min(0, lo) and
// max(0, hi) below ignore; groups past it are the last group again.
@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  var lo = vec4<f32>(3.4e38);
  var hi = vec4<f32>(-3.4e38);
  var exponents = vec4<u32>(0u);   // the largest exponent field seen: all ones for inf and NaN
  let begin = wid.x * p.chunk;
  let end = min(begin + p.chunk, p.n4);
  let last = p.n4 - 1u;
  for (var i = begin + lid; i < end; i = i + 4u * WG) {
    let v0 = load_x(i);
    let v1 = load_x(min(i + WG, last));
    let v2 = load_x(min(i + 2u * WG, last));
    let v3 = load_x(min(i + 3u * WG, last));
    lo = min(min(lo, v0), min(v1, min(v2, v3)));
    hi = max(max(hi, v0), max(v1, max(v2, v3)));
    let e = vec4<u32>(POS_INF_BITS);
    exponents = max(max(exponents, bitcast<vec4<u32>>(v0) & e), max(bitcast<vec4<u32>>(v1) & e,
                    max(bitcast<vec4<u32>>(v2) & e, bitcast<vec4<u32>>(v3) & e)));
  }
  let any_bad = f32(any(exponents == vec4<u32>(POS_INF_BITS)));
  let r = reduce(lid, vec4<f32>(min(min(lo.x, lo.y), min(lo.z, lo.w)), max(max(hi.x, hi.y), max(hi.z, hi.w)),
                               any_bad, 0.0));
  if (lid == 0u) { part[wid.x] = r; }
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_index) lid: u32) {
  var acc = vec4<f32>(3.4e38, -3.4e38, 0.0, 0.0);
  for (var i = lid; i < p.parts; i = i + 4u * WG) {   // four loads in flight
    let a = part[i];
    let b = part[min(i + WG, p.parts - 1u)];
    let c = part[min(i + 2u * WG, p.parts - 1u)];
    let d = part[min(i + 3u * WG, p.parts - 1u)];
    acc = combine(combine(acc, a), combine(combine(b, c), d));
  }
  let r = reduce(lid, acc);
  if (lid == 0u) {
    let maxx = max(0.0, r.y);
    let minx = min(0.0, r.x);
    let s = div_rn(select(maxx - minx, 1.0, maxx == minx), 255.0);
    let z = round(clamp(0.0 - div_rn(minx, s), 0.0, 255.0));
    if (r.z > 0.0) {
      scale[0] = from_bits(NAN_BITS);
      zp[0] = 0u;
    } else {
      scale[0] = s;
      zp[0] = u32(z);
    }
  }
}
