// Split K: a workgroup's int32 part of C goes to its own slice of the parts buffer (bound as c),
// [split][M][4 * np4]; reduce_splits.wgsl adds the parts and applies the epilogue.
fn store_part(split: u32, i: u32, j: u32, acc: i32) {
  c[(split * p.m + i) * 4u * p.np4 + j] = acc;
}
