// C = f32(exact int32 product) * (1/qa * 1/qb_j) + bias_j, then relu; the order of the CPU paths.
// With out_scale, inv_qa is 1 and scale holds out_scale (exact: 1 * s = s).
fn finish(i: u32, j: u32, acc: i32) {
  var f = f32(corrected(i, j, acc)) * (p.inv_qa * scale[j * p.scale_step]);
  if ((p.flags & HAS_BIAS) != 0u) {
    f = f + bias[j];
  }
  if ((p.flags & RELU) != 0u) {
    f = max(f, 0.0);
  }
  // A GPU-resident float A is not checked on the host; a row that held NaN/inf gives NaN, as a
  // float matmul would, instead of a silently finite answer.
  if ((p.flags & ROW_FLAGS) != 0u && rowinfo[p.mp4 * 4u + i] != 0) {
    f = bitcast<f32>(0x7fc00000u);
  }
  c[i * p.n + j] = f;
}
