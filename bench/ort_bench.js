// bench/ort_bench.js — ONNX Runtime (onnxruntime-node, CPU) on the reference cINN exported
// by bench/torch_ref.py --export DIR: sampling (z, y -> x) and log_prob (x, y -> log p) at
// batch 1, 64 and 4096, 1 intra-op thread, sequential execution.  Checks the graphs against
// PyTorch's outputs (DIR/check.json) first.  Prints one JSON object on stdout.
//
//   NODE_PATH=.../node_modules node bench/ort_bench.js DIR [seconds-per-point]
//
// z and x are drawn once per batch size, outside the timing (PyTorch and the engine draw
// theirs inside it), and y is one observation repeated: this favours ORT slightly.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const DX = 16, DY = 8;
const dir = process.argv[2];
const seconds = Number(process.argv[3] || '1');

function randn(n, seed) {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return a;
}

function feeds(a, y, b) {
  return { in: new ort.Tensor('float32', a, [b, DX]), y: new ort.Tensor('float32', y, [b, DY]) };
}

async function main() {
  const opts = { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential',
                 graphOptimizationLevel: 'all' };
  const check = JSON.parse(fs.readFileSync(path.join(dir, 'check.json'), 'utf8'));
  const out = { ort: ort.env.versions.node || ort.env.versions.common, max_abs_diff: {} };
  for (const op of ['sample', 'log_prob']) {
    const sess = await ort.InferenceSession.create(path.join(dir, op + '.onnx'), opts);
    const n = check.in.length;
    const r = await sess.run(feeds(Float32Array.from(check.in.flat()),
                                   Float32Array.from(check.y.flat()), n));
    const want = check[op].flat();
    let d = 0;
    r.out.data.forEach((v, i) => { d = Math.max(d, Math.abs(v - want[i])); });
    out.max_abs_diff[op] = d;
    out[op] = {};
    const y1 = randn(DY, 5);
    for (const b of [1, 64, 4096]) {
      const y = new Float32Array(b * DY);
      for (let i = 0; i < b; i++) y.set(y1, i * DY);
      const f = feeds(randn(b * DX, 7 + b), y, b);
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
