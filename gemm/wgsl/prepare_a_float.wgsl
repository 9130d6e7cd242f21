  let x = src[row * q.k + kk];
  if ((bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u) {  // NaN or infinity (bit test: no fast-math)
    atomicOr(&row_bad, 1u);
    return vec2<i32>(0, 0);
  }
  let v = i32(clamp(round(x * q.quant_mult), -127.0, 127.0));
  return vec2<i32>(v, v);
