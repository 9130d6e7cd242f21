// GEMV-like int8 GEMM for M <= 8, where a tiled kernel would leave most of its tile empty.
// Each invocation owns four columns (one vec4 of packed B) and all ROWS rows; the KS invocations
// of a column group split K between them and add their partial sums in workgroup memory.
// A (at most 2 vec4s per k-group) is the same for every invocation: the loads are broadcasts.
// Constants below are substituted by driver.py (the tuning space is in tiles.py).

const ROWS: u32 = ${ROWS}u;   // M rounded up to 1, 2, 4 or 8
const WG_X: u32 = ${WG_X}u;   // column groups per workgroup
const KS: u32 = ${KS}u;       // invocations splitting K

var<workgroup> partial: array<vec4<i32>, ${PARTIAL}>;  // (KS - 1) x WG_X x ROWS

@compute @workgroup_size(${WG_X}, ${KS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let x = lid.x;
  let s = lid.y;
  let n4 = wid.x * WG_X + x;
  let n4c = min(n4, p.np4 - 1u);
  let last_k = p.k4 - 1u;
  var acc: array<vec4<i32>, ${ROWS}>;
  for (var k = s; k < p.k4; k = k + ${UNROLL}u * KS) {
${COMPUTE}
  }
${REDUCE}
${EPILOGUE}
}
