// Exact float32 division for the quantize kernels: ONNX's x / scale is a correctly rounded
// float32 division, WGSL's `/` only 2.5 ulp. quotient() uses `/` and checks the result: the
// integer rint(x / scale) can differ from the correctly rounded quotient's only when the
// quotient lies within a few ulp of a half-integer (or beyond 2**22, or is not finite); there
// div_rn() computes the correctly rounded quotient by long division of the mantissas.
// (x / scale is never exactly halfway between two floats: that would need a 25-bit mantissa in
// x, so round-to-nearest has no ties to break.)

fn mantissa_exponent(a: u32) -> vec2<i32> {   // |value| = m * 2**(e - 150), m in [2**23, 2**24)
  var e = i32(a >> 23u);
  var m = a & 0x7fffffu;
  if (e == 0) {                                  // subnormal: normalise
    let sh = countLeadingZeros(m) - 8u;
    m = m << sh;
    e = 1 - i32(sh);
  } else {
    m = m | 0x800000u;
  }
  return vec2<i32>(i32(m), e);
}

// x / s rounded to nearest (even) for s > 0 finite; quotients beyond float32 saturate to
// +-3e38 and those below 2**-126 give +-0 (both quantize like the true quotient).
fn div_rn(x: f32, s: f32) -> f32 {
  let bx = bitcast<u32>(x);
  let ax = bx & 0x7fffffffu;
  if (ax == 0u || ax >= POS_INF_BITS) { return x; }   // +-0, +-inf, NaN
  let mx_e = mantissa_exponent(ax);
  let ms_e = mantissa_exponent(bitcast<u32>(s));
  var mx = u32(mx_e.x);
  let ms = u32(ms_e.x);
  var e = mx_e.y - ms_e.y;
  if (mx < ms) { mx = mx << 1u; e = e - 1; }        // now ms <= mx < 2 ms: quotient in [1, 2)
  var q = 0u;
  var r = mx;
  for (var i = 0u; i < 24u; i = i + 1u) {
    q = q << 1u;
    if (r >= ms) { r = r - ms; q = q | 1u; }
    r = r << 1u;
  }
  if (r > ms || (r == ms && (q & 1u) == 1u)) { q = q + 1u; }   // r is twice the remainder
  var v: f32;
  if (e > 127) { v = 3.0e38; } else if (e < -126) { v = 0.0; } else { v = ldexp(f32(q), e - 23); }
  return select(v, -v, (bx & 0x80000000u) != 0u);
}

fn quotient(x: f32, s: f32, force_exact: bool) -> f32 {
  let q = x / s;
  let h = floor(q) + 0.5;
  let near = abs(q - h) <= abs(q) * 9.5367431640625e-7 + 1e-30;   // 2**-20: 8 ulp and more
  if (force_exact || near || !(abs(q) < 4194304.0) || not_finite(q)) { return div_rn(x, s); }
  return q;
}

// rint(x / scale) + zero_point, saturated to [qmin, qmax]; NaN gives the zero point.
fn quantize_value(x: f32, scale: f32, zp: i32, qmin: i32, qmax: i32, force_exact: bool) -> i32 {
  if (is_nan(x)) { return zp; }
  let v = round(quotient(x, scale, force_exact));   // WGSL's round(): half to even
  let lo = f32(qmin - zp);
  let hi = f32(qmax - zp);
  return i32(clamp(v, lo, hi)) + zp;
}
