// A as the caller gave it: int8 rows of K = 4 p.ka values, read as u32 groups, so the GEMM
// needs no packing dispatch (tiles.py: direct configurations). The vec4 of rows 4 m4 .. 4 m4 + 3
// at group g takes four loads. Rows past M read the last row and groups past K the last group:
// valid addresses whose products are never stored (rows) or meet B's zero padding (groups).
fn a_vec(g: u32, m4: u32) -> vec4<u32> {
  let gc = min(g, p.ka - 1u);
  let r = 4u * m4;
  let last = p.m - 1u;
  return vec4<u32>(a[min(r, last) * p.ka + gc], a[min(r + 1u, last) * p.ka + gc],
                   a[min(r + 2u, last) * p.ka + gc], a[min(r + 3u, last) * p.ka + gc]);
}
