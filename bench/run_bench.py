#!/usr/bin/python3
"""bench/run_bench.py — `make bench`: the engine against PyTorch (+FrEIA), ONNX Runtime and
this machine's sgemm and FMA peaks, side by side in one run.

1. bench/torch_ref.py --export writes the reference checkpoint (PyTorch's outputs inside,
   which the engine checks when it loads it) and exports the same module to ONNX.
2. onnxruntime-node is installed with npm under BUILD/onnxruntime when missing; without
   npm or the registry the ORT column is left out, and the run says so.
3. --rounds alternating rounds of: torch_ref.py (PyTorch, 1 thread), bench_engine (the
   engine, 1 thread, then 2 threads), bench/ort_bench.js (ORT, 1 intra-op thread),
   bench_sgemm (OpenBLAS as configured, forced SkylakeX on AVX-512 CPUs, the engine's
   kernels, the FMA ceiling).  The best of each point is kept: the machines are small and
   noisy, and the best run is the least disturbed one.
4. A Markdown table with the targets, pass or fail; --write puts it in docs/performance.md
   between its engine-bench markers.

FrEIA is used when importable (put a FrEIA tree on PYTHONPATH); else a line-for-line port.

The image cINN (bench/torch_img.py: the digits cINN of models/train/train_digits_cinn.py, a
FrEIA GraphINN with conv GLOW couplings) runs in the same rounds: PyTorch+FrEIA's GraphINN,
the engine on the checkpoint, ONNX Runtime on torch.onnx.export of the GraphINN, at batch 1,
64 and 1024, one thread each.  Before any timing the three are checked on the same z, y
(and x for log_prob); a disagreement leaves the image timings out and says so.  It needs the
real FrEIA (no port): without it the image section says so and the rest runs as before.
--write puts its table between the image-bench markers.  --models picks vector, image or both.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ORT_PACKAGE = "onnxruntime-node@1.31.1"
BATCHES = ("1", "64", "4096")
IMG_BATCHES = ("1", "64", "1024")
OPS = ("sample", "log_prob")
# agreement before timing, max abs diff vs PyTorch: x of a sample, log_prob (64 dims, float32)
# "draw": the engine's eng_sample (the timed call) vs its eng_inverse of the latents it draws
IMG_TOL = {"sample": 1e-3, "log_prob": 1e-2, "draw": 1e-5}
# (batch, contender, minimum ratio): engine rows/s >= ratio x contender's; "peak" is the
# fraction of the machine's best single-core sgemm (GFLOP/s).
TARGETS = [("1", "ort", 5.0), ("1", "torch", 30.0), ("64", "ort", 1.2),
           ("4096", "ort", 1.05), ("4096", "peak", 0.80)]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_json(cmd, env=None, timeout=300, ok=(0,)):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode not in ok:
        raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def ort_modules(build):
    """node_modules holding onnxruntime-node (npm-installed when missing), or (None, why)."""
    prefix = os.path.join(build, "onnxruntime")
    mods = os.path.join(prefix, "node_modules")
    if os.path.exists(os.path.join(mods, "onnxruntime-node", "package.json")):
        return mods, None
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "node or npm is not installed"
    log(f"installing {ORT_PACKAGE} under {prefix} (npm) ...")
    os.makedirs(prefix, exist_ok=True)
    try:
        r = subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund",
                            "--prefix", prefix, ORT_PACKAGE],
                           capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None, "npm install timed out (registry unreachable?)"
    if r.returncode != 0:
        errs = [l for l in r.stderr.splitlines() if "error" in l and "complete log" not in l]
        return None, f"npm install {ORT_PACKAGE} failed (registry unreachable?): {(errs or ['?'])[0]}"
    return mods, None


def keep_best(best, new):
    """Max of every number in nested dicts `new` into `best` (same shape)."""
    for k, v in new.items():
        if isinstance(v, dict):
            keep_best(best.setdefault(k, {}), v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            best[k] = max(best.get(k, v), v)
        else:
            best[k] = v


def sgemm_runs(sgemm_bin, env, secs):
    """bench_sgemm as the environment configures OpenBLAS, and with SkylakeX forced on
    AVX-512 CPUs; returns {(kernel, m, n, k): gflops}, fma peaks, OpenBLAS core names."""
    first = run_json([sgemm_bin, str(secs)], env)
    runs = [first]
    if first["avx512"] and first["openblas_core"] != "SkylakeX":
        runs.append(run_json([sgemm_bin, str(secs), "--openblas-only"],
                             dict(env, OPENBLAS_CORETYPE="SkylakeX")))
    rows = {}
    for r in runs:
        for s in r["sgemm"]:
            key = (s["kernel"] + (" (forced)" if r is not first
                                  and s["kernel"].startswith("OpenBLAS") else ""),
                   s["m"], s["n"], s["k"])
            rows[key] = s["gflops"]
    return {"rows": rows, "fma": first["fma_peak"], "core": first["openblas_core"],
            "engine_kernel": first.get("engine_kernel")}


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        return platform.machine()


def mark(ok):
    return "✓" if ok else "✗"


def table(a, t, e, o, peaks, ort_info, ort_note):
    fl = e["flops_per_row"]
    rows = peaks["rows"]
    best_key = max(rows, key=rows.get)
    peak = rows[best_key]
    tname = "PyTorch+FrEIA" if t["impl"] == "FrEIA" else "PyTorch (port)"
    env_core = os.environ.get("OPENBLAS_CORETYPE")
    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"best of {a.rounds} alternating rounds of {a.seconds:g} s per point, 1 thread each "
        f"unless stated; load average {a.load[0]:.1f} before the run, {a.load[1]:.1f} after "
        "(other processes share the cores: ratios are only as good as the quietest round).",
        "",
        f"- **{tname}**: PyTorch {t['torch']}, {t['impl']}, 1 thread.",
    ]
    if o:
        d = ort_info["max_abs_diff"]
        lines.append(
            f"- **ORT**: ONNX Runtime {o['ort']} (onnxruntime-node, CPU, 1 intra-op thread, "
            f"sequential) on the same module exported by torch.onnx.export ({ort_info['onnx_impl']}"
            f"{'; ' + ort_info['note'] if ort_info.get('note') else ''}); max abs diff vs PyTorch: "
            f"sample {d['sample']:.1e}, log_prob {d['log_prob']:.1e}"
            f"{' — NOT THE SAME MODEL' if max(d.values()) > 1e-3 else ''}. z and x are drawn once "
            "outside its timing (the others draw inside theirs).")
    else:
        lines.append(f"- **ORT**: not measured: {ort_note}.")
    lines += [
        "- **innserve**: the engine on the checkpoint PyTorch wrote, verified against "
        "PyTorch's outputs when loaded; " + (
            f"its own kernels, path `{peaks['engine_kernel']}`." if peaks.get("engine_kernel")
            else "this build has no engine kernels of its own (OpenBLAS inside)."),
        "",
        "Single-core peaks measured in this run (GFLOP/s; sgemm shapes m × n × k, "
        f"Y = X Wᵀ; OpenBLAS core as configured: {peaks['core']}"
        f"{', OPENBLAS_CORETYPE=' + env_core if env_core else ''}):",
        "",
    ]
    shapes = sorted({k[1:] for k in rows}, key=lambda s: -s[0] * s[1] * s[2])
    kernels = list(dict.fromkeys(k[0] for k in rows))
    lines.append("| sgemm kernel | " + " | ".join(f"{m}×{n}×{k}" for m, n, k in shapes) + " |")
    lines.append("|---|" + "---:|" * len(shapes))
    for kn in kernels:
        lines.append(f"| {kn} | " + " | ".join(
            f"{rows[(kn,) + s]:.1f}" if (kn,) + s in rows else "—" for s in shapes) + " |")
    fma = peaks["fma"]
    lines += [
        "",
        f"The machine's peak (best sgemm above): **{peak:.1f} GFLOP/s** ({best_key[0]}, "
        f"{best_key[1]}×{best_key[2]}×{best_key[3]}); FMA ceiling (register-only loop): "
        + ", ".join(f"{v:.1f} ({k})" for k, v in fma.items()) +
        f". Effective FLOPs: {fl / 1e6:.2f} MFLOP per row (2 per parameter, the work PyTorch "
        "does).",
        "",
        f"| operation | batch | {tname} rows/s | ORT rows/s | innserve rows/s | × ORT | "
        f"× PyTorch | innserve GFLOP/s | % of peak | targets |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    met = total = 0
    for op in OPS:
        for b in BATCHES:
            ep = e["threads1"][op][b]["per_s"]
            g = e["threads1"][op][b]["gflops"]
            tp = t[op][b]
            op_ = o[op][b] if o else None
            have = {"torch": tp, "ort": op_, "peak": peak}
            marks = []
            for tb, who, ratio in TARGETS:
                if tb != b:
                    continue
                name = {"torch": "PyTorch", "ort": "ORT", "peak": "peak"}[who]
                want = f"≥ {ratio:g}× {name}" if who != "peak" else f"≥ {ratio:.0%} of peak"
                if have[who] is None:
                    marks.append(f"{want} n/a")
                    continue
                got = g / peak if who == "peak" else ep / have[who]
                total += 1
                met += got >= ratio
                marks.append(f"{want} {mark(got >= ratio)}")
            ort_s = f"{op_:,.0f}" if op_ else "—"
            xo = f"{ep / op_:.2f}×" if op_ else "—"
            lines.append(f"| {op} | {b} | {tp:,.0f} | {ort_s} | {ep:,.0f} | {xo} | {ep / tp:.1f}× "
                         f"| {g:.1f} | {100 * g / peak:.0f}% | {'; '.join(marks)} |")
    lines += ["", f"Targets met: **{met} of {total}**.", "",
              "Two worker threads (each with its own workspace, both calling the engine at once "
              "on independent batches; rows/s in total):", "",
              "| operation | batch | innserve 1 thread | innserve 2 threads | scaling |",
              "|---|---:|---:|---:|---:|"]
    for op in OPS:
        for b in BATCHES[1:]:
            r1, r2 = e["threads1"][op][b]["per_s"], e["threads2"][op][b]["per_s"]
            lines.append(f"| {op} | {b} | {r1:,.0f} | {r2:,.0f} | {r2 / r1:.2f}× |")
    return "\n".join(lines)


def peak_of(peaks):
    rows = peaks["rows"]
    best_key = max(rows, key=rows.get)
    return rows[best_key], best_key


def table_img(a, t, e, o, peaks, info, ort_note):
    """The image cINN's table: rows/s of the three, ratios, GFLOP/s and share of the peak."""
    fl = info["flops_per_row"]
    peak, best_key = peak_of(peaks)
    ck, d = info["check"], (o or {}).get("max_abs_diff", {})
    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"best of {a.rounds} alternating rounds of {a.seconds:g} s per point, 1 thread each; "
        f"load average {a.load[0]:.1f} before the run, {a.load[1]:.1f} after, "
        f"{min(a.loads):.1f} to {max(a.loads):.1f} between rounds (other processes share the "
        "cores: ratios are only as good as the quietest round).",
        "",
        f"- **Model**: the digits cINN of `models/train/train_digits_cinn.py` (`build()`: FrEIA "
        "GraphINN, x 1 × 8 × 8, Haar downsampling, conv GLOW couplings with 3×3 / 1×1 / 3×3 "
        "subnets and y one-hot (10) broadcast over the positions, "
        "PermuteRandom, channel Split, Flatten, Concat; z 64), weights "
        f"{info['weights']}; {info['params']:,} parameters, {fl / 1e6:.2f} MFLOP per row "
        "(2 per multiply-add of the subnet convolutions as PyTorch runs them, zero padding "
        "included). y is digit 3 for every row.",
        f"- **PyTorch+FrEIA**: PyTorch {t['torch']}, FrEIA {t['freia']}, the GraphINN itself, "
        "1 thread: sampling draws z and runs the reverse pass, log_prob the forward pass plus "
        "the Gaussian log-density.",
    ]
    if o:
        lines.append(
            f"- **ORT**: ONNX Runtime {o['ort']} (onnxruntime-node, CPU, 1 intra-op thread, "
            "sequential) on the GraphINN's reverse and forward passes exported by "
            "torch.onnx.export (opset 17, dynamic batch, traced at batch 3 and checked at 8); "
            f"max abs diff vs PyTorch: sample {d['sample']:.1e}, log_prob {d['log_prob']:.1e}. "
            "z is drawn once outside its timing.")
    else:
        lines.append(f"- **ORT**: not measured: {ort_note}.")
    lines += [
        "- **innserve**: the engine on the checkpoint (verified against PyTorch's outputs when "
        f"loaded); on the same z, y and x before timing, max abs diff vs PyTorch: sample "
        f"{ck['sample']:.1e}, log_prob {ck['log_prob']:.1e}; its sampling call (the one timed) "
        f"against its inverse of the latents it draws: {ck['draw']:.1e}.",
        "",
        f"Peak: the best single-core sgemm of this run, **{peak:.1f} GFLOP/s** ({best_key[0]}, "
        f"{best_key[1]}×{best_key[2]}×{best_key[3]}); FMA ceiling "
        + ", ".join(f"{v:.1f} ({k})" for k, v in peaks["fma"].items()) + ".",
        "",
        "| operation | batch | PyTorch+FrEIA rows/s | ORT rows/s | innserve rows/s | "
        "innserve ÷ PyTorch | innserve ÷ ORT | GFLOP/s PyTorch / ORT / innserve | "
        "% of peak PyTorch / ORT / innserve |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for op in OPS:
        for b in IMG_BATCHES:
            ep, tp = e["threads1"][op][b]["per_s"], t[op][b]
            op_ = o[op][b] if o else None
            ort_s = f"{op_:,.0f}" if op_ else "—"
            xo = f"{ep / op_:.2f}×" if op_ else "—"
            gf = [tp * fl / 1e9, op_ * fl / 1e9 if op_ else None, ep * fl / 1e9]
            gs = " / ".join(f"{g:.2f}" if g is not None else "—" for g in gf)
            ps = " / ".join(f"{100 * g / peak:.1f}%" if g is not None else "—" for g in gf)
            lines.append(f"| {op} | {b} | {tp:,.0f} | {ort_s} | {ep:,.0f} | {ep / tp:.2f}× | "
                         f"{xo} | {gs} | {ps} |")
    return "\n".join(lines)


def img_setup(a, build, env, mods):
    """Exports the image cINN and checks the engine and ORT against PyTorch on the same
    inputs before any timing.  Returns (info or None, ORT command or None, why not)."""
    img_dir = os.path.join(build, "onnx_img")
    r = run_json(["/usr/bin/python3", os.path.join(HERE, "torch_img.py"), "--export", img_dir],
                 env, ok=(0, 3))
    if "missing" in r:
        return None, None, r["missing"]
    chk = os.path.join(img_dir, "check.bin")
    r["check"] = run_json([a.bin, r["checkpoint"], "--check", chk, "--check-only"], env)["check"]
    bad = {k: r["check"][k] for k in IMG_TOL if not r["check"][k] <= IMG_TOL[k]}
    if bad:
        return None, None, (f"the engine disagrees with PyTorch+FrEIA on the same inputs "
                            f"(max abs diff {bad}); nothing timed")
    log(f"image cINN: {r['weights']}; checkpoint {r['checkpoint']}; engine vs PyTorch "
        f"sample {r['check']['sample']:.1e}, log_prob {r['check']['log_prob']:.1e}")
    ort_cmd, why = None, None
    if r["onnx_impl"] is None:
        why = r["note"]
    elif mods:
        ort_cmd = ["node", os.path.join(HERE, "ort_bench.js"), img_dir]
        try:
            d = run_json(ort_cmd + ["0"], dict(env, NODE_PATH=mods))["max_abs_diff"]
            bad = {k: d[k] for k in ("sample", "log_prob") if not d[k] <= IMG_TOL[k]}
            if bad:
                ort_cmd, why = None, (f"ONNX Runtime's graphs disagree with PyTorch+FrEIA on "
                                      f"the same inputs (max abs diff {bad})")
            else:
                log(f"image cINN: ORT vs PyTorch sample {d['sample']:.1e}, "
                    f"log_prob {d['log_prob']:.1e}")
        except (subprocess.SubprocessError, ValueError) as ex:
            err = getattr(ex, "stderr", "") or str(ex)
            ort_cmd, why = None, f"onnxruntime-node failed: {err.strip().splitlines()[-1:]}"
    return r, ort_cmd, why


def write_section(name, out):
    p = os.path.join(ROOT, "docs", "performance.md")
    doc = open(p).read()
    b0, b1 = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    i, j = doc.index(b0) + len(b0), doc.index(b1)
    open(p, "w").write(doc[:i] + "\n" + out + "\n" + doc[j:])
    log(f"updated {p} ({name})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bench_engine"))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.0, help="per point")
    ap.add_argument("--no-ort", action="store_true", help="leave ONNX Runtime out")
    ap.add_argument("--models", default="vector,image",
                    help="vector (the reference cINN), image (the digits cINN) or both")
    ap.add_argument("--write", action="store_true", help="update docs/performance.md")
    a = ap.parse_args()
    models = set(a.models.split(","))
    if not models or models - {"vector", "image"}:
        ap.error("--models takes vector, image or vector,image")
    a.load, a.loads = [os.getloadavg()[0], 0.0], []
    build = os.path.dirname(os.path.abspath(a.bin))
    sgemm_bin = os.path.join(build, "bench_sgemm")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               BENCH_SECONDS=str(a.seconds))
    torch_ref = ["/usr/bin/python3", os.path.join(HERE, "torch_ref.py")]
    torch_img = ["/usr/bin/python3", os.path.join(HERE, "torch_img.py")]

    mods, ort_note = (None, "--no-ort") if a.no_ort else ort_modules(build)
    if ort_note:
        log(f"ONNX Runtime left out: {ort_note}")
    exp = None
    if "vector" in models:
        onnx_dir = os.path.join(build, "onnx")
        exp = run_json(torch_ref + ["--export", onnx_dir], env)
        log(f"PyTorch: {exp['impl']}; checkpoint {exp['checkpoint']}; ONNX graphs of "
            f"{exp['onnx_impl']} in {onnx_dir}" + (f" ({exp['note']})" if exp["note"] else ""))
        ort_cmd = ["node", os.path.join(HERE, "ort_bench.js"), onnx_dir, str(a.seconds)]
    img, img_ort, img_ort_note, img_note = None, None, ort_note, None
    if "image" in models:
        img, img_ort, why = img_setup(a, build, env, mods)
        if img is None:
            img_note = why
            log(f"image cINN not measured: {why}")
        elif why:
            img_ort_note = why
            log(f"image cINN: ONNX Runtime left out: {why}")
        if img_ort:
            img_ort = img_ort + [str(a.seconds)]
    img_eng = [a.bin, img["checkpoint"], str(a.seconds), "--batches", ",".join(IMG_BATCHES),
               "--threads", "1", "--check", os.path.join(img["dir"], "check.bin")] if img else None

    t, e, o, peaks = {}, {}, {}, {"rows": {}}
    ti, ei, oi = {}, {}, {}
    for r in range(a.rounds if exp or img else 0):
        a.loads.append(os.getloadavg()[0])
        if exp:
            keep_best(t, run_json(torch_ref, env))
            keep_best(e, run_json([a.bin, exp["checkpoint"], str(a.seconds)], env))
            if mods:
                try:
                    keep_best(o, run_json(ort_cmd, dict(env, NODE_PATH=mods)))
                except (subprocess.SubprocessError, ValueError) as ex:
                    err = getattr(ex, "stderr", "") or str(ex)
                    ort_note = f"onnxruntime-node failed: {err.strip().splitlines()[-1:]}"
                    log(f"ONNX Runtime left out: {ort_note}")
                    mods, o = None, {}
        if img:
            keep_best(ti, run_json(torch_img, env))
            keep_best(ei, run_json(img_eng, env))
            if img_ort:
                try:
                    keep_best(oi, run_json(img_ort, dict(env, NODE_PATH=mods)))
                except (subprocess.SubprocessError, ValueError) as ex:
                    err = getattr(ex, "stderr", "") or str(ex)
                    img_ort_note = f"onnxruntime-node failed: {err.strip().splitlines()[-1:]}"
                    log(f"image cINN: ONNX Runtime left out: {img_ort_note}")
                    img_ort, oi = None, {}
        s = sgemm_runs(sgemm_bin, env, a.seconds / 2)
        for k, v in s["rows"].items():
            peaks["rows"][k] = max(peaks["rows"].get(k, 0.0), v)
        keep_best(peaks.setdefault("fma", {}), s["fma"])
        peaks["core"], peaks["engine_kernel"] = s["core"], s["engine_kernel"]
        log(f"round {r + 1}/{a.rounds} done")
    a.load[1] = os.getloadavg()[0]
    if exp:
        ort_info = {"onnx_impl": exp["onnx_impl"], "note": exp["note"],
                    "max_abs_diff": o.get("max_abs_diff", {})}
        out = table(a, t, e, o or None, peaks, ort_info, ort_note)
        print(out)
        if a.write:
            write_section("engine-bench", out)
    if "image" in models:
        if img:
            # the pre-timing check of every round's engine run: the worst one is kept
            img["check"] = {k: max(img["check"][k], ei.get("check", {}).get(k, 0.0))
                            for k in IMG_TOL}
            out = table_img(a, ti, ei, oi or None, peaks, img, img_ort_note)
            print("\n" + out)
            if a.write:
                write_section("image-bench", out)
        else:
            print(f"\nImage cINN not measured: {img_note}.")
            if a.write:
                log("docs/performance.md: the image-bench section is left as it was")


if __name__ == "__main__":
    main()
