// Split K, second step: add the parts gemm_tiled.wgsl stored ([split][M][4 * np4] int32, bound
// as a) and finish C with the epilogue. Wrapping int32 addition is associative, so the sum is
// bit for bit the unsplit kernel's. One invocation per four columns of one row.

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n4 = wid.x * WG + tid;
  let i = wid.y + wid.z * 65535u;
  if (n4 >= p.np4 || i >= p.m) {
    return;
  }
  var sum = vec4<i32>(0);
  for (var s = 0u; s < p.splits; s = s + 1u) {
    sum = sum + bitcast<vec4<i32>>(a[(s * p.m + i) * p.np4 + n4]);
  }
  let j = 4u * n4;
  if (j < p.n) { finish(i, j, sum.x); }
  if (j + 1u < p.n) { finish(i, j + 1u, sum.y); }
  if (j + 2u < p.n) { finish(i, j + 2u, sum.z); }
  if (j + 3u < p.n) { finish(i, j + 3u, sum.w); }
}
