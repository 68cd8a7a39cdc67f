#!/usr/bin/python3
"""sbi posteriors: sbi itself against innserve's engine on the same estimators (make bench-sbi).

    SBI_SRC=DIR /usr/bin/python3 bench/sbi_bench.py --bin build/bench_sbi_engine [--write]

For sbi's default estimators of NPE -- "maf", "nsf", "maf_rqs", "zuko_maf", "zuko_nsf", each
built by sbi's own builder (build_maf, build_nsf, build_maf_rqs, build_zuko_maf,
build_zuko_nsf) with its defaults (5 transforms, 50 hidden, z-scoring of theta and x) for
D = 5 parameters and an observation of 3, with a BoxUniform prior -- the script builds a
DirectPosterior and writes the same estimator as an innserve checkpoint (the layer mapping
of tests/fixtures/gen_nflows.py and gen_zuko.py; z-scoring as "standardize", the box as
"prior"; test vectors computed by the estimator itself in float64, which the engine checks
when it loads the file).  The weights are the builders' initial ones, untrained: the work
per sample does not depend on training, the acceptance of the rejection step does (it is
reported).  Then, single-threaded (torch.set_num_threads(1), OPENBLAS_NUM_THREADS=1), in
alternating rounds, best of each:

  sample          posterior.sample((N,), x_o): rejection outside the prior included;
                  the engine: eng_sample_prior for 1 observation x N
  sample_batched  posterior.sample_batched((N,), X) for B observations; the engine:
                  eng_sample_prior for each of them
  log_prob        estimator.log_prob of M rows (posterior samples) under x_o; the engine:
                  eng_log_prob (the largest difference from sbi's values is printed)

DIR must hold the packages `sbi/` (github.com/sbi-dev/sbi), `nflows/`
(github.com/bayesiains/nflows), `zuko/` (github.com/probabilists/zuko) and `UMNN/` (the
models/UMNN folder of github.com/AWehenkel/UMNN); they are never copied into this
repository.  torch.utils.tensorboard is stubbed when absent.  --write replaces the part
of docs/performance.md between the sbi-bench markers.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOC = os.path.join(ROOT, "docs", "performance.md")
BEGIN = "<!-- BEGIN sbi-bench -->"
END = "<!-- END sbi-bench -->"
KINDS = ["maf", "nsf", "maf_rqs", "zuko_maf", "zuko_nsf"]
HOWTO = """the sbi, nflows, zuko and UMNN sources are needed: put them in one folder DIR and run
with SBI_SRC=DIR (or --src DIR), e.g.
    git clone https://github.com/sbi-dev/sbi S; git clone https://github.com/bayesiains/nflows N
    git clone https://github.com/probabilists/zuko Z; git clone https://github.com/AWehenkel/UMNN U
    mkdir DIR; ln -s $PWD/S/sbi $PWD/N/nflows $PWD/Z/zuko $PWD/U/models/UMNN DIR/
(measured with sbi 900821d, nflows 5d22344, zuko 1063ae4, UMNN 59118c1; sbi also needs
python3-sklearn, python3-matplotlib, python3-tqdm from Debian)"""


def setup_sources(src):
    missing = [p for p in ("sbi", "nflows", "zuko", "UMNN")
               if not src or not os.path.isdir(os.path.join(src, p))]
    if missing:
        sys.exit(f"sbi_bench: missing {', '.join(missing)} in {src or '(SBI_SRC unset)'}:\n{HOWTO}")
    sys.path.insert(0, src)
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        tb = types.ModuleType("torch.utils.tensorboard")
        tw = types.ModuleType("torch.utils.tensorboard.writer")

        class SummaryWriter:
            def __init__(self, *a, **k):
                pass

            def __getattr__(self, name):
                return lambda *a, **k: None
        tb.SummaryWriter = tw.SummaryWriter = SummaryWriter
        tb.__path__ = []
        sys.modules["torch.utils.tensorboard"] = tb
        sys.modules["torch.utils.tensorboard.writer"] = tw


def version(mod, src, pkg):
    """The package's version, with the commit of its source when that is a git checkout."""
    v = getattr(mod, "__version__", None)
    if v is None:
        try:
            v = __import__(mod.__name__ + ".version", fromlist=["x"]).__version__
        except (ImportError, AttributeError):
            v = "?"
    head = git_head(src, pkg)
    return f"{v} ({head})" if head else v


def git_head(src, pkg):
    path = os.path.realpath(os.path.join(src, pkg))
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ---- the checkpoint ------------------------------------------------------------------------

def checkpoint(kind, est, low, high, D, cw, gen):
    """innserve checkpoint bytes of sbi's estimator est (z-scored theta and x, box prior);
    the estimator's z-scoring is set to the float32-rounded mean and std the file stores."""
    import torch
    import gen_fixtures as gf
    F64 = torch.float64
    S = gf.Store(1)
    if kind.startswith("zuko"):
        import gen_zuko as gz
        import zuko
        flow, emb = est.net, est._embedding_net
        st = flow.transform.transforms[0]
        loc, scale = st.loc.double(), st.scale.double()
        mx, sx = gf.f32(-loc / scale), gf.f32(1 / scale)
        with torch.no_grad():
            st.loc.copy_(-mx / sx)
            st.scale.copy_(1 / sx)
        for k, v in flow.state_dict().items():
            if k.startswith(("base.", "transform.transforms.0.")):
                continue
            if k.endswith(".order"):
                S.add("net." + k, v.numpy(), "I64")
            elif k.endswith(".mask"):
                S.add("net." + k, v.numpy().astype("float32"), "F16")
            else:
                S.add("net." + k, v.numpy(), "F32")
        # the exporter's mapping (what export_sbi writes), as gen_zuko.py uses it
        blocks = gz.manifest_blocks(flow, zuko.__version__, prefix="net.transform.transforms.")
        source = {"framework": "zuko", "version": gz.zuko_version()}
    else:
        import gen_nflows as gn
        from nflows.transforms import CompositeTransform
        flow = est.net
        emb = flow._embedding_net
        st = flow._transform._transforms[0]
        mx, sx = gf.f32(-st._shift.double() / st._scale.double()), gf.f32(1 / st._scale.double())
        with torch.no_grad():
            st._shift.copy_(-mx / sx)
            st._scale.copy_(1 / sx)
        inner = CompositeTransform(list(flow._transform._transforms)[1:])
        for k, v in gn.tensor_store(types.SimpleNamespace(transform=inner, seed=1)).t.items():
            S.t[k] = v
        blocks = gn.manifest_blocks(inner, True, prefix="_transforms.")
        source = {"framework": "nflows", "version": "HEAD 5d22344"}
    S.add("std.x.mean", mx, "F32"), S.add("std.x.std", sx, "F32")
    S.add("std.y.mean", emb[0]._mean.numpy(), "F32")
    S.add("std.y.std", emb[0]._std.numpy(), "F32")

    # test vectors: what the estimator itself computes, in float64
    n = 8
    x = gf.f32(mx + sx * torch.randn(n, D, generator=gen, dtype=F64))
    y = gf.f32(torch.randn(n, cw, generator=gen, dtype=F64))
    e64 = copy.deepcopy(est).double()
    with torch.no_grad():
        if kind.startswith("zuko"):
            z, ld = e64.net(e64._embedding_net(y)).transform.call_and_ladj(x)
        else:
            z, ld = e64.net._transform(x, context=e64.net._embedding_net(y))
    m = {"format": "innserve-manifest", "version": 1, "kind": "cinn",
         "description": f"sbi's {kind} (build defaults, untrained), D = {D}, observation {cw}; "
                        "written by bench/sbi_bench.py",
         "source": dict(source, exporter="bench/sbi_bench.py"),
         "dims": {"x": D, "y": cw},
         "standardize": {"x": {"mean": "std.x.mean", "std": "std.x.std"},
                         "y": {"mean": "std.y.mean", "std": "std.y.std"}},
         "prior": {"type": "box", "low": [float(v) for v in low],
                   "high": [float(v) for v in high]},
         "conditions": [{"net": None}], "blocks": blocks,
         "tests": {"x": S.add("test.x", x, "F64"), "y": S.add("test.y", y, "F64"),
                   "z": S.add("test.z", z, "F64"), "log_det": S.add("test.log_det", ld, "F64"),
                   "rtol": gf.EMBED_RTOL, "atol": gf.EMBED_ATOL}}
    header, data = S.serialize({"format": "innserve",
                                "manifest": json.dumps(m, separators=(",", ":"))})
    return gf.st_serialize(header, data)


def build(kind, D, cw, bound, seed):
    """sbi's estimator of `kind` for D parameters and an observation of cw, its
    DirectPosterior under BoxUniform(-bound, bound), and the checkpoint bytes."""
    import torch
    from sbi.inference import DirectPosterior
    from sbi.neural_nets.net_builders import flow as fb
    from sbi.utils import BoxUniform
    torch.manual_seed(seed)
    # z-scoring batches: theta around 0 with spread 1 (a posterior well inside the box)
    bx, by = torch.randn(500, D), torch.randn(500, cw) * 2.0 + 1.0
    builder = {"maf": fb.build_maf, "nsf": fb.build_nsf, "maf_rqs": fb.build_maf_rqs,
               "zuko_maf": fb.build_zuko_maf, "zuko_nsf": fb.build_zuko_nsf}[kind]
    kw = {"num_bins": 10} if kind == "zuko_nsf" else {}
    est = builder(bx, by, **kw)
    est.eval()
    low, high = -bound * torch.ones(D), bound * torch.ones(D)
    data = checkpoint(kind, est, low, high, D, cw, torch.Generator().manual_seed(seed + 1))
    post = DirectPosterior(posterior_estimator=est, prior=BoxUniform(low, high))
    n_params = sum(p.numel() for p in est.parameters())
    return est, post, data, n_params


# ---- timing --------------------------------------------------------------------------------

def per_call(fn, secs):
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= secs:
            return el / n


def sbi_times(est, post, x0, X, rows, N, secs):
    import torch
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "sample": per_call(lambda: post.sample((N,), x=x0, show_progress_bars=False), secs),
            "sample_batched": per_call(lambda: post.sample_batched(
                (N,), x=X, show_progress_bars=False), secs),
            "log_prob": per_call(lambda: est.log_prob(rows[:, None, :], x0), secs),
        }


def acceptance(est, post, x0, X, N, D):
    """Fraction of the estimator's draws inside the prior box (what sbi's rejection keeps)."""
    import torch
    from sbi.utils.sbiutils import within_support
    with torch.no_grad():
        a = within_support(post.prior, est.sample((20 * N,), x0).reshape(-1, D))
        b = within_support(post.prior, est.sample((N,), X).reshape(-1, D))
    return float(a.float().mean()), float(b.float().mean())


def fmt_ms(s):
    return f"{s * 1e3:,.2f}" if s < 1 else f"{s * 1e3:,.0f}"


def fmt_rate(r):
    return f"{r:,.0f}"


def table(res, meta):
    targets = {"sample": 30, "sample_batched": 30, "log_prob": 10}
    lines = [
        f"Machine: {meta['cpu']}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"best of {meta['rounds']} alternating rounds of at least {meta['seconds']:g} s per point "
        f"(at least one call), 1 thread each; load average {meta['load'][0]:.1f} before the run, "
        f"{meta['load'][1]:.1f} after.",
        "",
        f"- **sbi**: sbi {meta['versions']['sbi']}, nflows {meta['versions']['nflows']}, zuko "
        f"{meta['versions']['zuko']}, PyTorch {meta['versions']['torch']} "
        "(torch.set_num_threads(1), OPENBLAS_NUM_THREADS=1). Each estimator is built by sbi's own "
        f"builder with its defaults (5 transforms, hidden 50; zuko: [50] × 5; z-scoring of θ and "
        f"x), D = {meta['D']} parameters, observation of {meta['cw']}, prior "
        f"BoxUniform(−{meta['bound']:g}, {meta['bound']:g}); **untrained** (the builders' initial "
        "weights: the work per sample does not depend on training, the acceptance does). "
        "`DirectPosterior.sample((1000,), x)` and `.sample_batched((1000,), X)` with rejection "
        "outside the prior (sbi's default); `estimator.log_prob` of 1000 posterior samples "
        "under one x.",
        f"- **innserve**: the engine ({meta['kernels']} kernels) on the same estimator written "
        "as a checkpoint (z-scoring as `standardize`, the box as `prior`), checked against the "
        "estimator's own float64 outputs when loaded: `eng_sample_prior` (rejection outside the "
        "box) for 1 × 1000 and for each of 100 observations × 1000, `eng_log_prob` of the "
        "same 1000 rows (one observation, broadcast).",
        "",
        "| estimator | params | operation | sbi ms | innserve ms | sbi samples/s | "
        "innserve samples/s | × sbi | acceptance sbi / innserve | log_prob max abs diff | target |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    met = total = 0
    for kind in KINDS:
        if kind not in res:
            continue
        r = res[kind]
        for op, rows in (("sample", meta["N"]), ("sample_batched", meta["B"] * meta["N"]),
                         ("log_prob", meta["M"])):
            s, e = r["sbi"][op], r["eng"][op]
            ratio = s / e
            ok = ratio >= targets[op]
            met += ok
            total += 1
            label = {"sample": f"sample 1 × {meta['N']}",
                     "sample_batched": f"sample_batched {meta['B']} × {meta['N']}",
                     "log_prob": f"log_prob {meta['M']} rows"}[op]
            accs = {"sample": f"{r['acc_sbi'][0]:.3f} / {r['acc_eng'][0]:.3f}",
                    "sample_batched": f"{r['acc_sbi'][1]:.3f} / {r['acc_eng'][1]:.3f}",
                    "log_prob": "—"}[op]
            diff = f"{r['lp_diff']:.1e}" if op == "log_prob" else ""
            lines.append(f"| {kind} | {r['params']:,} | {label} | {fmt_ms(s)} | {fmt_ms(e)} | "
                         f"{fmt_rate(rows / s)} | {fmt_rate(rows / e)} | {ratio:,.1f}× | {accs} | "
                         f"{diff} | ≥ {targets[op]}× {'✓' if ok else '✗'} |")
    lines += ["", f"Targets met: **{met} of {total}** (sampling ≥ 30× sbi, log_prob ≥ 10×)."]
    return "\n".join(lines)


def measure(a, models, N):
    """Alternating rounds: sbi, then the engine, per estimator; the best of each."""
    res, kernels = {}, "?"
    for rnd in range(a.rounds):
        for kind, mo in models.items():
            s = sbi_times(mo["est"], mo["post"], mo["x0"], mo["X"], mo["rows"], N, a.seconds)
            out = subprocess.run([a.bin, mo["path"], mo["inp"], str(a.seconds)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"sbi_bench: {kind}: {out.stderr.strip()}")
            e = json.loads(out.stdout)
            kernels = e["kernels"]
            eng = {"sample": e["sample_s"], "sample_batched": e["batched_s"],
                   "log_prob": e["log_prob_s"]}
            r = res.setdefault(kind, {"sbi": s, "eng": eng, "params": mo["params"],
                                      "acc_sbi": mo["acc_sbi"],
                                      "acc_eng": (e["sample_acceptance"], e["batched_acceptance"]),
                                      "lp_diff": e["log_prob_max_abs_diff"]})
            for op in s:
                r["sbi"][op] = min(r["sbi"][op], s[op])
                r["eng"][op] = min(r["eng"][op], eng[op])
            print(f"round {rnd + 1} {kind}: sbi " +
                  " ".join(f"{k} {v * 1e3:.2f} ms" for k, v in s.items()) + " | innserve " +
                  " ".join(f"{k} {v * 1e3:.3f} ms" for k, v in eng.items()), file=sys.stderr)
    return res, kernels


def cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    return "AMD EPYC" if "EPYC" in name else name
    except OSError:
        pass
    return platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bench_sbi_engine"))
    ap.add_argument("--src", default=os.environ.get("SBI_SRC"),
                    help="folder with sbi/, nflows/, zuko/, UMNN/ (default: $SBI_SRC)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--bound", type=float, default=50.0, help="prior box half-width")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--write", action="store_true", help="update docs/performance.md")
    a = ap.parse_args()
    setup_sources(a.src)
    if not os.path.exists(a.bin):
        sys.exit(f"sbi_bench: {a.bin} is missing (make build/bench_sbi_engine)")
    import torch
    import nflows
    import sbi
    import zuko
    torch.set_num_threads(1)
    D, cw, N, B, M = 5, 3, 1000, 100, 1000
    load0 = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="sbi-bench-")
    models = {}
    for i, kind in enumerate(a.kinds.split(",")):
        est, post, data, n_params = build(kind, D, cw, a.bound, 1000 + 10 * i)
        g = torch.Generator().manual_seed(7 + i)
        x0 = torch.randn(1, cw, generator=g) * 2.0 + 1.0
        X = torch.randn(B, cw, generator=g) * 2.0 + 1.0
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = post.sample((M,), x=x0, show_progress_bars=False)
            lp = est.log_prob(rows[:, None, :], x0)[:, 0].double()
        path = os.path.join(tmp, kind + ".safetensors")
        with open(path, "wb") as fh:
            fh.write(data)
        inp = os.path.join(tmp, kind + ".bin")
        with open(inp, "wb") as fh:
            fh.write(struct.pack("<5i", N, B, M, cw, D))
            for t in (x0, X, rows):
                fh.write(t.numpy().astype("<f4").tobytes())
            fh.write(lp.numpy().astype("<f8").tobytes())
        models[kind] = dict(est=est, post=post, path=path, inp=inp, x0=x0, X=X, rows=rows,
                            params=n_params, acc_sbi=acceptance(est, post, x0, X, N, D))
        print(f"{kind}: built, {n_params:,} parameters, acceptance {models[kind]['acc_sbi']}",
              file=sys.stderr)
    try:
        res, kernels = measure(a, models, N)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    src = a.src
    meta = {"cpu": cpu_name(), "rounds": a.rounds, "seconds": a.seconds,
            "load": [load0, os.getloadavg()[0]], "D": D, "cw": cw, "N": N, "B": B, "M": M,
            "bound": a.bound, "kernels": kernels,
            "versions": {"sbi": version(sbi, src, "sbi"), "nflows": version(nflows, src, "nflows"),
                         "zuko": version(zuko, src, "zuko"),
                         "torch": torch.__version__}}
    t = table(res, meta)
    print(t)
    if a.write:
        with open(DOC) as fh:
            doc = fh.read()
        if BEGIN in doc and END in doc:
            pre, rest = doc.split(BEGIN, 1)
            _, post_ = rest.split(END, 1)
            doc = pre + BEGIN + "\n" + t + "\n" + END + post_
        else:
            doc = doc.rstrip("\n") + "\n\n## sbi posteriors\n\n" + BEGIN + "\n" + t + "\n" + END + "\n"
        with open(DOC, "w") as fh:
            fh.write(doc)
        print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
