// Tiled int8 GEMM: a workgroup computes a BM x BN tile of C, each invocation TM x TN of it.
// Per K-slice of BK groups (4*BK values of k), the workgroup copies A's BK x BM and B's BK x BN
// slices (K-major, as vec4<u32>) into workgroup memory; each invocation then reads its TM/4 +
// TN/4 vec4s per k-group and issues TM*TN dot4I8Packed. The next slice's global loads are issued
// into registers before the current slice is multiplied, hiding their latency.
//
// An invocation's rows are the vec4 groups g*WG_M + tm (g < TM/4) and its columns g*WG_N + tn:
// neighbouring invocations read neighbouring vec4s of workgroup memory (conflict-free), and the
// invocations of one warp that share tm read the same A vec4 (a broadcast).
// Rows past M and columns past N load clamped (valid) addresses; their results are not stored.
// Split K (KS > 1 in tiles.py): workgroup z multiplies k-groups [z * p.kchunk, + p.kchunk) and
// stores its int32 part of the tile; reduce_splits.wgsl adds the parts and finishes C.
// Constants below are substituted by driver.py (the tuning space is in tiles.py).

const BM4: u32 = ${BM4}u;   // BM / 4
const BN4: u32 = ${BN4}u;   // BN / 4
const BK: u32 = ${BK}u;     // k-groups (of 4) per slice
const WG_M: u32 = ${WG_M}u; // invocations along M (BM / TM)
const WG_N: u32 = ${WG_N}u; // invocations along N (BN / TN)

var<workgroup> sa: array<vec4<u32>, ${SA}>;  // BK x BM4
var<workgroup> sb: array<vec4<u32>, ${SB}>;  // BK x BN4

@compute @workgroup_size(${WG_N}, ${WG_M})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let tn = tid % WG_N;
  let tm = tid / WG_N;
  let m4_0 = wid.y * BM4;
  let n4_0 = wid.x * BN4;
  let last_m4 = p.mp4 - 1u;
  let last_n4 = p.np4 - 1u;
  var acc: array<vec4<i32>, ${ACC}>;
${DECLS}
  var k0 = wid.z * p.kchunk;
  let k_end = min(k0 + p.kchunk, p.k4);
${LOAD}
  loop {
${STORE}
    workgroupBarrier();
    k0 = k0 + BK;
    let more = k0 < k_end;
    if (more) {
${LOAD}
    }
${COMPUTE}
    workgroupBarrier();
    if (!more) {
      break;
    }
  }
${EPILOGUE}
}
