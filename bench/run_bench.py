#!/usr/bin/python3
"""bench/run_bench.py — `make bench`: the engine against PyTorch and the sgemm peak.

Runs bench/torch_ref.py (PyTorch, 1 thread; it also writes the reference checkpoint) and
build/bench_engine (innserve engine, 1 thread) alternately for --rounds rounds, keeps the
best throughput of each (the machines are small and noisy; the best run is the least
disturbed one), and prints a Markdown table of samples/s, effective GFLOP/s and the
ratios the targets are stated in.  --write updates the generated table in
docs/performance.md between its BEGIN/END markers.
"""
import argparse
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bench_engine"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--write", action="store_true", help="update docs/performance.md")
    a = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               BENCH_SECONDS=str(a.seconds))
    best_t, best_e = None, None
    for r in range(a.rounds):
        t = run_json(["/usr/bin/python3", os.path.join(HERE, "torch_ref.py")], env)
        e = run_json([a.bin, t["checkpoint"], str(a.seconds)], env)
        if best_t is None:
            best_t, best_e = t, e
        else:
            for op in ("sample", "log_prob"):
                for b in best_t[op]:
                    best_t[op][b] = max(best_t[op][b], t[op][b])
                    if e[op][b]["per_s"] > best_e[op][b]["per_s"]:
                        best_e[op][b] = e[op][b]
            best_e["sgemm_peak_gflops"] = max(best_e["sgemm_peak_gflops"], e["sgemm_peak_gflops"])
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    peak = best_e["sgemm_peak_gflops"]
    fl = best_e["flops_per_row"]
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        pass
    lines = [
        f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"PyTorch {best_t['torch']} ({best_t['impl']}), 1 thread each; "
        f"best of {a.rounds} alternating rounds of {a.seconds:g} s per point.",
        "",
        f"Single-thread sgemm peak measured in this run: **{peak:.1f} GFLOP/s** "
        f"(1024³ OpenBLAS sgemm). Effective FLOPs: {fl / 1e6:.2f} MFLOP per row "
        "(2 per parameter, the work PyTorch does).",
        "",
        "| operation | batch | PyTorch rows/s | innserve rows/s | × PyTorch | innserve GFLOP/s | % of sgemm peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for op in ("sample", "log_prob"):
        for b in ("1", "64", "4096"):
            tp = best_t[op][b]
            ep = best_e[op][b]["per_s"]
            g = best_e[op][b]["gflops"]
            lines.append(f"| {op} | {b} | {tp:,.0f} | {ep:,.0f} | {ep / tp:.1f}× | {g:.1f} | "
                         f"{100 * g / peak:.0f}% |")
    table = "\n".join(lines)
    print(table)
    if a.write:
        p = os.path.join(ROOT, "docs", "performance.md")
        doc = open(p).read()
        b0, b1 = "<!-- BEGIN engine-bench -->", "<!-- END engine-bench -->"
        i, j = doc.index(b0) + len(b0), doc.index(b1)
        open(p, "w").write(doc[:i] + "\n" + table + "\n" + doc[j:])
        print(f"updated {p}", file=sys.stderr)


if __name__ == "__main__":
    main()
