fn finish(i: u32, j: u32, acc: i32) {
  c[i * p.n + j] = corrected(i, j, acc);
}
