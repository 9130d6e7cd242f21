// logsoftmax (MODE 0) and softmax (MODE 1) over the last axis: one workgroup per row.
// Pass 1 (rows.wgsl): online max and sum of e**(x - max); pass 2 re-reads the row back to
// front (its end, read last, from L2 where it still is) and writes
//   logsoftmax  (x - m) - ln s        softmax  e**(x - m) * (1 / s)
// -inf entries give -inf / 0; a NaN row (see RowStats) is NaN throughout.

@group(0) @binding(1) var<storage, read_write> y: array<${XT}>;
@group(0) @binding(2) var<uniform> p: Params;

const MODE: u32 = ${MODE}u;
fn observe4(i: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, cm: f32) {}

fn store4(row: u32, i: u32, v: vec4<f32>) {
${STORE}
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = row_of(wid, nwg);
  if (row >= p.rows) { return; }
  let st = row_stats(row, lid);
  let nan4 = vec4<f32>(from_bits(NAN_BITS));
  let m4 = vec4<f32>(st.m);
  var c = 0.0;
  if (!st.nan_row) {
    c = select(log_pos(st.s), 1.0 / st.s, MODE == 1u);
  }
  // back to front: the end of the row was read last, so it is the likeliest still in L2
  for (var j = lid; j < p.n4; j = j + WG) {
    let i = p.n4 - 1u - j;
    let v = load4(row, i);
    var o: vec4<f32>;
    if (MODE == 0u) {
      o = select((v - m4) - vec4<f32>(c), vec4<f32>(from_bits(NEG_INF_BITS)), neg_inf_mask4(v));
    } else {
      o = select(exp4(v - m4) * c, vec4<f32>(0.0), neg_inf_mask4(v));
    }
    store4(row, i, select(o, nan4, st.nan_row));
  }
}
