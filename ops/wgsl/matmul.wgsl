// Batched float32 matrix product, ONNX MatMul / np.matmul: C[b] = A[b] @ B[b], A[b] M x K and
// B[b] K x N row-major, batch dims broadcast through strides (0 for a broadcast dimension).
// A workgroup computes a 64 x 64 tile of one product; its 16 x 16 invocations each own 4 rows
// (4 ty + i) and 4 columns (tx + 16 j, so a row of invocations writes 16 consecutive values).
// K advances in slices of 16 staged in workgroup memory. Sums run in float32, in K order (a
// GPU may fuse the multiply-add: one rounding instead of two).

struct Params {
  m: u32, n: u32, k: u32, batch0: u32,     // batch0: the first product of this dispatch
  dims: vec4<u32>,                         // the result's batch dims (up to 4, leading 1s)
  a_strides: vec4<u32>,                    // element strides of A's batch dims
  b_strides: vec4<u32>,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const TILE: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> sa: array<f32, 1024>;   // [kk * TILE + row]
var<workgroup> sb: array<f32, 1024>;   // [kk * TILE + col]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let batch = p.batch0 + wid.z;
  var rest = batch;
  var a_off = 0u;
  var b_off = 0u;
  for (var d = 3; d >= 0; d = d - 1) {
    let i = rest % p.dims[d];
    rest = rest / p.dims[d];
    a_off = a_off + i * p.a_strides[d];
    b_off = b_off + i * p.b_strides[d];
  }
  let c_off = batch * p.m * p.n;
  let row0 = wid.y * TILE;
  let col0 = wid.x * TILE;
  // Row i of the invocation's 4 x 4 outputs in accs[i] (vec4s, which a compiler keeps in
  // registers; a 16-element array indexed in loops was kept in memory: 12x slower on an H200).
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var k0 = 0u; k0 < p.k; k0 = k0 + TK) {
    for (var t = 0u; t < 4u; t = t + 1u) {
      let e = li + 256u * t;
      // A: 64 rows x 16 k, read along k; B: 16 k x 64 columns, read along n.
      let r = e / TK;
      let ka = k0 + e % TK;
      var va = 0.0;
      if (row0 + r < p.m && ka < p.k) { va = a[a_off + (row0 + r) * p.k + ka]; }
      sa[(e % TK) * TILE + r] = va;
      let kb = k0 + e / TILE;
      let col = e % TILE;
      var vb = 0.0;
      if (kb < p.k && col0 + col < p.n) { vb = b[b_off + kb * p.n + col0 + col]; }
      sb[(e / TILE) * TILE + col] = vb;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk = kk + 1u) {
      let ar = kk * TILE + 4u * lid.y;
      let bv = vec4<f32>(sb[kk * TILE + lid.x], sb[kk * TILE + lid.x + 16u],
                         sb[kk * TILE + lid.x + 32u], sb[kk * TILE + lid.x + 48u]);
      acc0 = acc0 + sa[ar] * bv;
      acc1 = acc1 + sa[ar + 1u] * bv;
      acc2 = acc2 + sa[ar + 2u] * bv;
      acc3 = acc3 + sa[ar + 3u] * bv;
    }
    workgroupBarrier();
  }
  store_row(c_off, row0 + 4u * lid.y, col0 + lid.x, acc0);
  store_row(c_off, row0 + 4u * lid.y + 1u, col0 + lid.x, acc1);
  store_row(c_off, row0 + 4u * lid.y + 2u, col0 + lid.x, acc2);
  store_row(c_off, row0 + 4u * lid.y + 3u, col0 + lid.x, acc3);
}

fn store_row(c_off: u32, row: u32, col: u32, v: vec4<f32>) {
  if (row >= p.m) { return; }
  for (var j = 0u; j < 4u; j = j + 1u) {
    if (col + 16u * j < p.n) { c[c_off + row * p.n + col + 16u * j] = v[j]; }
  }
}
