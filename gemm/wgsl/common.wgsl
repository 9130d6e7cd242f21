// Shared by the GEMM kernels: the parameter block, the bindings (inputs first, the output last)
// and the fused epilogue. driver.py substitutes ${OUT} (i32 or f32) before compiling.
//
// Layouts (all int8 data packed four to a u32 along K, K padded with zeros to p.k4 groups):
//   a: packed A, K-major: a[k4 * p.mp4 + m/4] holds rows m..m+3 of group k4 (p.mp4 = Mp / 4)
//   b: packed B, K-major: b[k4 * p.np4 + n/4] holds columns n..n+3 of group k4
// K-major staging means a workgroup copies whole rows of a K-slice into workgroup memory as
// vec4s, with no transposition and no bank conflicts.

struct Params {
  m: u32,          // rows of C
  n: u32,          // columns of C
  k4: u32,         // K in groups of four, padded (a multiple of every BK)
  mp4: u32,        // vec4s per K-row of packed A
  np4: u32,        // vec4s per K-row of packed B
  scale_step: u32, // 1: scale[j] per column; 0: scale[0] for every column
  kchunk: u32,     // k-groups per split of K (p.k4 when K is not split)
  flags: u32,      // 1: per-column B zero points, 2: bias, 4: relu, 8: NaN rows of A
  inv_qa: f32,     // 1 / a_quant_mult
  splits: u32,     // parts K is split into (1: not split)
  ka: u32,         // groups of four per row of A, for a direct A (a_direct.wgsl)
  pad2: u32,
}

const HAS_ZB: u32 = 1u;
const HAS_BIAS: u32 = 2u;
const RELU: u32 = 4u;
const ROW_FLAGS: u32 = 8u;

@group(0) @binding(0) var<storage, read> a: array<${A_ELEM}>;   // packed A, or A's rows (a_direct.wgsl)
@group(0) @binding(1) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> colsum: array<i32>;   // sum of B's column j
@group(0) @binding(3) var<storage, read> rowinfo: array<i32>;  // [0, Mp): sum of A's row i (unpacked
                                                               // values); [Mp, 2Mp): 1 if A's row held NaN/inf;
                                                               // [2Mp]: A's offset, [2Mp + 1]: K za (prepare_a.wgsl)
@group(0) @binding(4) var<storage, read> zb: array<i32>;       // B's zero point per column
@group(0) @binding(5) var<storage, read> scale: array<f32>;    // 1 / b_quant_mult or out_scale, per column or one
@group(0) @binding(6) var<storage, read> bias: array<f32>;
@group(0) @binding(7) var<storage, read_write> c: array<${OUT}>;
@group(0) @binding(8) var<uniform> p: Params;

// (A - za)(B - zb) = acc - (shift + za) colsum_j + K za zb_j - zb_j rowsum_i, in wrapping i32:
// exact whenever the true result fits in int32, like the CPU paths. shift + za and K za come
// from prepare_a.wgsl (za may live in GPU memory: DynamicQuantizeLinear's zero point).
fn corrected(i: u32, j: u32, acc: i32) -> i32 {
  let tail = 8u * p.mp4;
  var v = acc - rowinfo[tail] * colsum[j];
  if ((p.flags & HAS_ZB) != 0u) {
    v = v + (rowinfo[tail + 1u] - rowinfo[i]) * zb[j];
  }
  return v;
}
