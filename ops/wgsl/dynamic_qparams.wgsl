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
  pad0: u32,
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

@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  var acc = vec4<f32>(3.4e38, -3.4e38, 0.0, 0.0);
  for (var i = wid.x * WG + lid; i < p.n4; i = i + p.parts * WG) {
    let v = load_x(i);
    let valid = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n);
    let bad = valid & ((bitcast<vec4<u32>>(v) & vec4<u32>(POS_INF_BITS)) == vec4<u32>(POS_INF_BITS));
    let ok = valid & !bad;
    let lo = select(vec4<f32>(3.4e38), v, ok);
    let hi = select(vec4<f32>(-3.4e38), v, ok);
    acc = vec4<f32>(min(acc.x, min(min(lo.x, lo.y), min(lo.z, lo.w))),
                    max(acc.y, max(max(hi.x, hi.y), max(hi.z, hi.w))),
                    acc.z + dot(select(vec4<f32>(0.0), vec4<f32>(1.0), bad), vec4<f32>(1.0)), 0.0);
  }
  let r = reduce(lid, acc);
  if (lid == 0u) { part[wid.x] = r; }
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_index) lid: u32) {
  var acc = vec4<f32>(3.4e38, -3.4e38, 0.0, 0.0);
  for (var i = lid; i < p.parts; i = i + WG) { acc = combine(acc, part[i]); }
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
