// bench/ort_bench.js — ONNX Runtime (onnxruntime-node, CPU) on a cINN exported by
// bench/torch_ref.py --export DIR (the reference cINN) or bench/torch_img.py --export DIR
// (the image cINN): sampling (z, y -> x) and log_prob (x, y -> log p) at batch 1, 64 and
// 4096 (or DIR/check.json's "batches"), 1 intra-op thread, sequential execution.  Checks the
// graphs against PyTorch's outputs (DIR/check.json) first.  Prints one JSON object on stdout.
//
//   NODE_PATH=.../node_modules node bench/ort_bench.js DIR [seconds-per-point]
//
// Row widths come from check.json.  z is drawn once per batch size, outside the timing
// (PyTorch and the engine draw theirs inside it), and y is one observation repeated
// (check.json's "y_time" when given): this favours ORT slightly.  log_prob's x is drawn the
// same way, or is check.json's "in_log_prob" rows repeated when given.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const dir = process.argv[2];
const seconds = Number(process.argv[3] || '1');

function randn(n, seed) {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return a;
}

function feeds(a, y, b, dx, dy) {
  return { in: new ort.Tensor('float32', a, [b, dx]), y: new ort.Tensor('float32', y, [b, dy]) };
}

function tile(rows, b) {
  const dx = rows[0].length;
  const a = new Float32Array(b * dx);
  for (let i = 0; i < b; i++) a.set(rows[i % rows.length], i * dx);
  return a;
}

async function main() {
  const opts = { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential',
                 graphOptimizationLevel: 'all' };
  const check = JSON.parse(fs.readFileSync(path.join(dir, 'check.json'), 'utf8'));
  const out = { ort: ort.env.versions.node || ort.env.versions.common, max_abs_diff: {} };
  const DX = check.in[0].length, DY = check.y[0].length;
  for (const op of ['sample', 'log_prob']) {
    const sess = await ort.InferenceSession.create(path.join(dir, op + '.onnx'), opts);
    const n = check.in.length;
    const inp = op === 'log_prob' && check.in_log_prob ? check.in_log_prob : check.in;
    const r = await sess.run(feeds(Float32Array.from(inp.flat()),
                                   Float32Array.from(check.y.flat()), n, DX, DY));
    const want = check[op].flat();
    let d = 0;
    r.out.data.forEach((v, i) => { d = Math.max(d, Math.abs(v - want[i])); });
    out.max_abs_diff[op] = d;
    out[op] = {};
    const y1 = check.y_time ? Float32Array.from(check.y_time) : randn(DY, 5);
    for (const b of check.batches || [1, 64, 4096]) {
      const y = new Float32Array(b * DY);
      for (let i = 0; i < b; i++) y.set(y1, i * DY);
      const a = op === 'log_prob' && check.in_log_prob ? tile(check.in_log_prob, b)
                                                       : randn(b * DX, 7 + b);
      const f = feeds(a, y, b, DX, DY);
      await sess.run(f);
      let reps = 0;
      const t0 = process.hrtime.bigint();
      let el;
      do {
        await sess.run(f);
        reps++;
        el = Number(process.hrtime.bigint() - t0) / 1e9;
      } while (el < seconds);
      out[op][String(b)] = b * reps / el;
    }
    await sess.release();
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
