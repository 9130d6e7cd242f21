  let e = row * q.k + kk;
  let word = src[e / 4u];
  let offset = 8u * (e % 4u);
  if (q.unsigned_src != 0u) {
    let v = i32(extractBits(word, offset, 8u));
    return vec2<i32>(v - 128, v);
  }
  let v = extractBits(i32(word), offset, 8u);
  return vec2<i32>(v, v);
