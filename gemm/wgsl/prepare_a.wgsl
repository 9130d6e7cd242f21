// Pack A for the GEMM kernels: M x K (float32 to quantize, or int8/uint8) -> packed K-major
// u32 groups (see common.wgsl) plus per-row sums and NaN/inf flags. One workgroup per row.
//   float32: q = clamp(round_half_even(x * quant_mult), -127, 127), the CPU paths' convention
//            (WGSL's round() rounds half to even; f32 multiplication is correctly rounded).
//   int8:    copied; uint8: stored as a - 128 (dot4I8Packed is signed), corrected by the GEMM.
// Groups past K are written as zeros, so padding never adds to a product.
// Row 0's workgroup also writes what the GEMM's correction needs about A as a whole:
// rowinfo[2 mp] = shift + za (shift -128 for uint8, else 0) and rowinfo[2 mp + 1] = K za
// (wrapping i32), za from the parameter block or, for a zero point that lives in GPU memory
// (DynamicQuantizeLinear's), from the low byte of zp[0].

struct PackParams {
  m: u32,
  k: u32,          // true K
  k4: u32,         // padded groups per row to write
  mp: u32,         // rows of packed A (a multiple of 4)
  quant_mult: f32,
  unsigned_src: u32,
  za: i32,         // A's zero point, when za_source is 0
  za_source: u32,  // 0: za above; 1: zp[0] as uint8; 2: zp[0] as int8
}

@group(0) @binding(0) var<storage, read> src: array<${SRC}>;
@group(0) @binding(1) var<storage, read> zp: array<u32>;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;
@group(0) @binding(3) var<storage, read_write> rowinfo: array<i32>;
@group(0) @binding(4) var<uniform> q: PackParams;

const WG: u32 = 64u;
var<workgroup> row_sum: atomic<i32>;
var<workgroup> row_bad: atomic<u32>;

fn value(row: u32, kk: u32) -> vec2<i32> {  // (the int8 lane to pack, its contribution to the row sum)
  if (kk >= q.k) {
    return vec2<i32>(0, 0);
  }
${VALUE}
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = wid.x + wid.y * 65535u;
  if (row >= q.m) {
    return;
  }
  if (tid == 0u) {
    atomicStore(&row_sum, 0);
    atomicStore(&row_bad, 0u);
  }
  workgroupBarrier();
  var sum = 0;
  for (var g = tid; g < q.k4; g = g + WG) {
    var word = 0u;
    for (var t = 0u; t < 4u; t = t + 1u) {
      let v = value(row, 4u * g + t);
      word = word | ((u32(v.x) & 0xffu) << (8u * t));
      sum = sum + v.y;
    }
    packed[g * q.mp + row] = word;
  }
  atomicAdd(&row_sum, sum);
  workgroupBarrier();
  if (tid == 0u) {
    rowinfo[row] = atomicLoad(&row_sum);
    rowinfo[q.mp + row] = i32(atomicLoad(&row_bad));
    if (row == 0u) {
      var za = q.za;
      if (q.za_source == 1u) { za = i32(zp[0] & 0xffu); }
      if (q.za_source == 2u) { za = extractBits(i32(zp[0]), 0u, 8u); }
      rowinfo[2u * q.mp] = select(0, -128, q.unsigned_src != 0u) + za;
      rowinfo[2u * q.mp + 1u] = i32(q.k) * za;
    }
  }
}
