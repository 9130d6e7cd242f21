// A as prepare_a.wgsl packed it: the vec4 of rows 4 m4 .. 4 m4 + 3 at group g is one load.
fn a_vec(g: u32, m4: u32) -> vec4<u32> {
  return a[g * p.mp4 + m4];
}
