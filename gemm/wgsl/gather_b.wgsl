// Shortlisting on the GPU: the packed B of the columns ids[0..n) of a packed B (see
// common.wgsl), with their column sums and unquantization multipliers. Columns past n (up to
// the next multiple of 4) are zero.

struct GatherParams {
  n: u32,        // selected columns
  np: u32,       // columns per K-row of the result (n rounded up to 4)
  src_np: u32,   // columns per K-row of the source
  k4: u32,       // K-rows (groups of four k)
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> src_colsum: array<i32>;
@group(0) @binding(3) var<storage, read> src_scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<u32>;
@group(0) @binding(5) var<storage, read_write> dst_colsum: array<i32>;
@group(0) @binding(6) var<storage, read_write> dst_scale: array<f32>;
@group(0) @binding(7) var<uniform> g: GatherParams;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  let k = gid.y;
  if (j >= g.np || k >= g.k4) {
    return;
  }
  if (j >= g.n) {
    dst[k * g.np + j] = 0u;
    return;
  }
  let col = ids[j];
  dst[k * g.np + j] = src[k * g.src_np + col];
  if (k == 0u) {
    dst_colsum[j] = src_colsum[col];
    if (j < arrayLength(&dst_scale)) {  // a one-value placeholder when B has no multipliers
      dst_scale[j] = src_scale[col % arrayLength(&src_scale)];
    }
  }
}
