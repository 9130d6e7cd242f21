// Exact float32 division for the quantize kernels: ONNX's x / scale is a correctly rounded
// float32 division, WGSL's `/` only 2.5 ulp. quantize4() takes a quotient a few ulp off and
// checks it: the integer rint(x / scale) can differ from the correctly rounded quotient's only
// when the quotient lies within a few ulp of a half-integer (or beyond 2**22, or is not
// finite); there div_rn() computes the correctly rounded quotient by long division of the
// mantissas.
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

// rint(x / scale) + zero_point saturated to [qmin, qmax], four lanes; NaN gives the zero point.
// q_near is x / scale to within 3.5 * 2**-23 (relative) of the correctly rounded quotient:
// WGSL's `/` (2.5 ulp of the exact quotient, the correct rounding half an ulp more), or
// x * (1 / scale) with WGSL's 2.5-ulp reciprocal (2.5 ulp, the product's rounding and the correct
// rounding's: 3.5; an ulp of y is at most 2**-23 |y|). rint(q_near) can differ from rint of the
// correctly rounded quotient only where a half-integer lies between the two, so within
// 3.5 * 2**-23 |q_near| of q_near: a lane within 2**-20 (relative: 8 * 2**-23) of a half-integer,
// beyond 2**22 or not finite is recomputed by div_rn (rare: a branch per group). (Beyond 2**10
// a quotient saturates whatever its last bits.)
fn quantize4(x: vec4<f32>, q_near: vec4<f32>, s: vec4<f32>, zp: vec4<i32>, qmin: i32, qmax: i32,
             force_exact: bool) -> vec4<i32> {
  var q = q_near;
  let h = floor(q) + vec4<f32>(0.5);
  // one integer compare for |q| >= 2**22 (0x4a800000), inf and NaN (a NaN x makes q NaN)
  let suspect = (abs(q - h) <= abs(q) * 9.5367431640625e-7 + vec4<f32>(1e-30))
                | ((bitcast<vec4<u32>>(q) & vec4<u32>(0x7fffffffu)) >= vec4<u32>(0x4a800000u));
  if (force_exact || any(suspect)) {
    // lane by lane with constant indices (a vector indexed at run time may live in slow memory)
    if (force_exact || suspect.x) { q.x = exact_quotient(x.x, s.x); }
    if (force_exact || suspect.y) { q.y = exact_quotient(x.y, s.y); }
    if (force_exact || suspect.z) { q.z = exact_quotient(x.z, s.z); }
    if (force_exact || suspect.w) { q.w = exact_quotient(x.w, s.w); }
  }
  let v = round(q);   // WGSL's round(): half to even
  let lo = vec4<f32>(vec4<i32>(qmin) - zp);
  let hi = vec4<f32>(vec4<i32>(qmax) - zp);
  return vec4<i32>(clamp(v, lo, hi)) + zp;
}

// The correctly rounded x / s, and 0 for a NaN x (which quantizes to the zero point).
fn exact_quotient(x: f32, s: f32) -> f32 {
  return select(div_rn(x, s), 0.0, is_nan(x));
}
