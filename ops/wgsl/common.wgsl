// Shared by the ops kernels: workgroup size, special-value tests and float32 maths with known
// accuracy. driver.py prepends this file to every kernel.
//
// Special values are decided by bit tests, never by float comparisons: WGSL lets an
// implementation assume that no NaN or infinity occurs, so `x != x` or max(NaN, y) may not mean
// what IEEE says. NaN and infinity are also built from bits at run time (a constant NaN is a
// shader-creation error in WGSL).
//
// exp, log and erfc are our own (range reduction and polynomials, only +, -, * and ldexp-like
// bit building, which WGSL rounds correctly), so their accuracy is the same on every GPU: the
// built-in exp/log are only bounded by WGSL's 3 + 2|x| ulp and 2**-21 absolute. Divisions are
// WGSL's (2.5 ulp); the bounds in the Python modules include that.

const WG: u32 = ${WG}u;          // invocations per workgroup (programs.WG unless a kernel asks)
const NAN_BITS: u32 = 0x7fc00000u;
const POS_INF_BITS: u32 = 0x7f800000u;
const NEG_INF_BITS: u32 = 0xff800000u;

fn from_bits(b: u32) -> f32 { return bitcast<f32>(b); }
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > POS_INF_BITS; }
fn not_finite(x: f32) -> bool { return (bitcast<u32>(x) & POS_INF_BITS) == POS_INF_BITS; }
fn is_neg_inf(x: f32) -> bool { return bitcast<u32>(x) == NEG_INF_BITS; }
// NaN or +inf: what makes a whole softmax row NaN.
fn poisons_row(x: f32) -> bool {
  let b = bitcast<u32>(x);
  return (b & 0x7fffffffu) > POS_INF_BITS || b == POS_INF_BITS;
}
fn nan_mask4(v: vec4<f32>) -> vec4<bool> {
  return (bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu)) > vec4<u32>(POS_INF_BITS);
}
fn neg_inf_mask4(v: vec4<f32>) -> vec4<bool> {
  return bitcast<vec4<u32>>(v) == vec4<u32>(NEG_INF_BITS);
}
fn any_poisons4(v: vec4<f32>) -> bool {
  let b = bitcast<vec4<u32>>(v);
  return any((b & vec4<u32>(0x7fffffffu)) > vec4<u32>(POS_INF_BITS)) || any(b == vec4<u32>(POS_INF_BITS));
}
// max of the numbers among v's lanes (NaN lanes count as -inf).
fn max_of_numbers4(v: vec4<f32>) -> f32 {
  let w = select(v, vec4<f32>(from_bits(NEG_INF_BITS)), nan_mask4(v));
  return max(max(w.x, w.y), max(w.z, w.w));
}

fn pow2i(n: vec4<i32>) -> vec4<f32> {   // 2**n for -126 <= n <= 127, from the exponent bits
  return bitcast<vec4<f32>>(vec4<u32>(n + vec4<i32>(127)) << vec4<u32>(23u));
}

const LOG2E: f32 = 1.4426950408889634;
// ln 2 in two parts (Cody and Waite): n * LN2_HI is exact for |n| < 2**11.
const LN2_HI: f32 = 0.693145751953125;
const LN2_LO: f32 = 1.428606765330187e-06;

// e**r on |r| <= ln2/2 (the CPU kernels' polynomial: relative error < 2**-27 before rounding).
fn exp_poly4(r: vec4<f32>) -> vec4<f32> {
  var p = 0.0013751407386735082 * r + vec4<f32>(0.008368915878236294);
  p = p * r + vec4<f32>(0.04166953265666962);
  p = p * r + vec4<f32>(0.166665181517601);
  p = p * r + vec4<f32>(0.49999988079071045);
  p = p * r + vec4<f32>(1.0);
  return p * r + vec4<f32>(1.0);
}

// e**x, about 1 ulp for normal results; 0 below -103.97 (subnormal results may be flushed to 0,
// which WGSL allows); inf above 88.72; NaN stays NaN.
fn exp4(x: vec4<f32>) -> vec4<f32> {
  let xc = clamp(select(x, vec4<f32>(0.0), nan_mask4(x)), vec4<f32>(-104.0), vec4<f32>(89.0));
  let n = round(xc * LOG2E);
  var r = xc - n * LN2_HI;
  r = r - n * LN2_LO;
  let ni = vec4<i32>(n);
  let n1 = ni >> vec4<u32>(1u);
  let y = exp_poly4(r) * pow2i(n1) * pow2i(ni - n1);
  return select(y, x, nan_mask4(x));
}

// e**x for x <= 0 as a term of a sum >= 1 (softmax's denominator): x below -87 counts as -87,
// which no such sum can see. For sums whose row or column is flagged apart when it holds NaN
// (softmax.wgsl's rows, softmax_strided.wgsl's columns): a NaN lane gives a meaningless term.
// exp4's reduction and polynomial, so its accuracy; 2**n goes into the exponent by an integer
// add, n read from the bits of n + 1.5 * 2**23 (exact for these n), instead of a float-to-int
// conversion and a multiply (conversions run at a fraction of the float rate). (Not
// x * log2(e) + 1.5 * 2**23 for the rounding itself: a driver may reassociate (t + c) - c to t,
// as Mesa's does.) The add stays in the normal range: n = -126 only for x < -86.98, where
// r > 0.33 and the polynomial is above 1.
const INT_BITS_OFFSET: f32 = 12582912.0;   // 1.5 * 2**23: n + it holds n in its low bits
fn exp_term4(x: vec4<f32>) -> vec4<f32> {
  let xc = max(x, vec4<f32>(-87.0));
  let n = round(xc * LOG2E);
  var r = xc - n * LN2_HI;
  r = r - n * LN2_LO;
  let two_n = bitcast<vec4<u32>>(n + vec4<f32>(INT_BITS_OFFSET)) << vec4<u32>(23u);
  return bitcast<vec4<f32>>(bitcast<vec4<u32>>(exp_poly4(r)) + two_n);
}

// ln(s) for a positive normal s (a softmax denominator: 1 <= s <= n): s = 2**e f with
// f in [sqrt(1/2), sqrt(2)), ln f = 2 atanh(z), z = (f - 1) / (f + 1), |z| < 0.172, by its odd
// series to z**13 (truncation < 2**-30 relative); e ln 2 in two parts.
fn log_pos(s: f32) -> f32 {
  let b = bitcast<u32>(s);
  var e = i32(b >> 23u) - 127;
  var f = bitcast<f32>((b & 0x007fffffu) | 0x3f800000u);
  if (f > 1.41421356) { f = f * 0.5; e = e + 1; }
  let z = (f - 1.0) / (f + 1.0);
  let z2 = z * z;
  var p = z2 * (2.0 / 13.0) + 2.0 / 11.0;
  p = p * z2 + 2.0 / 9.0;
  p = p * z2 + 2.0 / 7.0;
  p = p * z2 + 2.0 / 5.0;
  p = p * z2 + 2.0 / 3.0;
  let lnf = 2.0 * z + z * z2 * p;
  let ef = f32(e);
  return ef * LN2_HI + (lnf + ef * LN2_LO);
}

// -- activations (the CPU kernels' formulas) ------------------------------------------------

fn sigmoid4(x: vec4<f32>) -> vec4<f32> {
  // the exponential is never large, so neither tail overflows or cancels
  let e = exp4(-abs(x));
  let s = 1.0 / (1.0 + e);
  return select(e * s, s, x >= vec4<f32>(0.0));
}

fn tanh4(x: vec4<f32>) -> vec4<f32> {
  let a = abs(x);
  let z = x * x;
  var small = -5.70498872745e-3 * z + vec4<f32>(2.06390887954e-2);
  small = small * z + vec4<f32>(-5.37397155531e-2);
  small = small * z + vec4<f32>(1.33314422036e-1);
  small = small * z + vec4<f32>(-3.33332819422e-1);
  small = small * z * x + x;
  var large = 1.0 - 2.0 / (exp4(a + a) + 1.0);
  large = select(-large, large, x >= vec4<f32>(0.0));
  return select(select(large, small, a < vec4<f32>(0.625)), x, nan_mask4(x));
}

fn gelu_tanh4(x: vec4<f32>) -> vec4<f32> {
  // x * sigmoid(2u): the same number as 0.5 x (1 + tanh u), without 1 + tanh u's cancellation
  let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
  return x * sigmoid4(u + u);
}

// erfc(z / sqrt 2) for z >= 0: the Chebyshev fit of Numerical Recipes' erfcc (fractional error
// < 1.2e-7 in exact arithmetic), t exp(-u**2 - 1.26551223 + t P(t)) with u = z / sqrt 2 and
// t = 1 / (1 + u/2). u**2 = z**2 / 2 is taken as zh**2 / 2 (zh: z's top 12 bits, so exact)
// plus (z - zh)(z + zh) / 2: the large exponent loses nothing to rounding, and z is never
// divided by sqrt 2 (whose rounding would cost 2 u**2 eps of relative accuracy).
fn erfc_scaled4(z: vec4<f32>) -> vec4<f32> {
  let t = 1.0 / (1.0 + 0.35355339059327373 * z);
  var p = 0.17087277 * t + vec4<f32>(-0.82215223);
  p = p * t + vec4<f32>(1.48851587);
  p = p * t + vec4<f32>(-1.13520398);
  p = p * t + vec4<f32>(0.27886807);
  p = p * t + vec4<f32>(-0.18628806);
  p = p * t + vec4<f32>(0.09678418);
  p = p * t + vec4<f32>(0.37409196);
  p = p * t + vec4<f32>(1.00002368);
  let zh = bitcast<vec4<f32>>(bitcast<vec4<u32>>(z) & vec4<u32>(0xfffff000u));
  let low = 0.5 * ((z - zh) * (z + zh));
  return t * exp4(-0.5 * (zh * zh)) * exp4(t * p - low - 1.26551223);
}

// x Phi(x) = 0.5 x erfc(-x / sqrt 2): erfc of a positive argument keeps its relative accuracy on
// the negative tail, where 1 + erf(x / sqrt 2) would cancel.
fn gelu_erf4(x: vec4<f32>) -> vec4<f32> {
  let tail = erfc_scaled4(min(abs(x), vec4<f32>(20.0)));   // erfc(20 / sqrt 2) is 0 in float32
  let c = select(2.0 - tail, tail, x <= vec4<f32>(0.0));
  return select(0.5 * x * c, x, nan_mask4(x));
}

fn relu4(x: vec4<f32>) -> vec4<f32> {
  // NaN < 0 is false, but a driver may turn this select into max(x, 0), which drops NaN
  // (NVIDIA's does): the bit test keeps it.
  return select(select(x, vec4<f32>(0.0), x < vec4<f32>(0.0)), x, nan_mask4(x));
}

// op codes shared with driver.py: NONE 0, RELU 1, EXP 2, TANH 3, SIGMOID 4, GELU_TANH 5, GELU_ERF 6
fn activate4(op: u32, x: vec4<f32>) -> vec4<f32> {
  switch op {
    case 1u: { return relu4(x); }
    case 2u: { return exp4(x); }
    case 3u: { return tanh4(x); }
    case 4u: { return sigmoid4(x); }
    case 5u: { return gelu_tanh4(x); }
    case 6u: { return gelu_erf4(x); }
    default: { return x; }
  }
}
