// Elementwise: out = ACT((x OP y[j]) + r), over x's flat order in vec4 groups.
//   y (optional, OP 0 add / 1 mul): repeats with p.period values, each value spanning p.inner
//     consecutive elements: y index of element e = (e / inner) % period. That covers a scalar,
//     a bias over the trailing axes (inner 1) or along an inner axis (bias_add), and a
//     same-shaped operand. load_y() takes the cheapest form for the case at hand.
//   r (optional): a residual of x's shape (bias_add).
// ACT: the activation code of common.wgsl (0: none). Each invocation handles ITEMS groups,
// WG * groups apart, so every load instruction of a workgroup reads one contiguous span.

struct Params {
  n: u32,        // elements
  n4: u32,       // vec4 groups, ceil(n / 4)
  period: u32,
  inner: u32,
}

@group(0) @binding(0) var<storage, read> x: array<${XT}>;
@group(0) @binding(1) var<storage, read> yv: array<f32>;
@group(0) @binding(2) var<storage, read> r: array<${XT}>;
@group(0) @binding(3) var<storage, read_write> out: array<${XT}>;
@group(0) @binding(4) var<uniform> p: Params;

const OP: u32 = ${OP}u;         // 0 add, 1 mul, 2 no y
const ACT: u32 = ${ACT}u;
const HAS_R: bool = ${HAS_R};
const ITEMS: u32 = 4u;

fn load_x(i: u32) -> vec4<f32> {
${LOADX}
}
fn load_r(i: u32) -> vec4<f32> {
${LOADR}
}
fn load_y(i: u32) -> vec4<f32> {
${YLOAD}
}
fn store(i: u32, v: vec4<f32>) {
${STORE}
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let first = (wid.y * nwg.x + wid.x) * WG * ITEMS + lid;
  for (var t = 0u; t < ITEMS; t = t + 1u) {
    let i = first + t * WG;
    if (i < p.n4) {
      var v = load_x(i);
      if (OP == 0u) { v = v + load_y(i); }
      if (OP == 1u) { v = v * load_y(i); }
      if (HAS_R) { v = v + load_r(i); }
      store(i, activate4(ACT, v));
    }
  }
}
