#!/usr/bin/env python3
"""Quality of the demo models, measured THROUGH THE SERVED API (docs/models.md).

    /usr/bin/python3 models/evaluate.py                       # starts build/innserve on models/
    /usr/bin/python3 models/evaluate.py --url http://127.0.0.1:8080   # a running daemon
    /usr/bin/python3 models/evaluate.py --update-docs         # rewrite the tables in docs/models.md

Every model number below comes from HTTP answers of the daemon (innserve.Client); only the
references (the true forward process, rejection-sampled posteriors, the true toy density)
are computed here.

ik_cinn, ik_inn (inverse kinematics, models/train/kinematics.py):
  * posterior error: for each target y*, 1000 served samples (POST .../sample) against
    1000 ground-truth samples from rejection sampling with tolerance EPS (2000 are drawn;
    the other 1000 give the noise floor: the MMD of two independent ground-truth sets);
    squared MMD with the inverse multiquadric kernel sum_h h^2/(h^2 + d^2),
    h in {0.05, 0.2, 0.9} (Ardizzone et al.), biased and unbiased estimators;
    targets: five named points (inverse-kinematics.md §1) and N_RANDOM from the prior
    predictive (the benchmark's protocol, test observations drawn like the training data);
  * re-simulation error Err_resim = mean ||f(x_hat) - y*||^2 with the true f;
  * the share of the elbow mode x4 > 0, served vs ground truth;
  * density consistency: log_prob returned with the samples vs POST .../log_prob;
  * ik_inn also: forward prediction y_hat vs f(x) at prior draws;
  * the same for every other posterior estimator of the task that the daemon serves (a cinn
    named ik_* with 4 parameters and a 2-D observation, e.g. ik_sbi_nsf, an sbi NPE);
  * calibration of every posterior estimator (POST .../calibration): N_CALIB pairs
    (x*, y = f(x*) + u), x* from the prior and u uniform in the disk of radius EPS (the
    joint distribution the estimators are trained on), 200 samples per pair: the smallest
    SBC KS p-value over the 4 dimensions, the HPD expected coverage at 20/40/60/80 %
    (calibrated: equal to the level), TARP's ATC, and the mean of -log q(x* | y) (nltp,
    lower is better).
iresnet_toy: served log_prob vs the true log density at true samples (mean |error|, and
  KL(p || q) = E_p[log p - log q]); the numeric inverse: x -> forward -> z -> inverse -> x,
  its error, iterations and certified bounds; served samples vs true samples (MMD).
ik_mlp: surrogate error at prior draws; preimage search (POST .../preimage) for the targets:
  the surrogate's residual and the true ||f(x) - y*|| of the solutions.
ik_mdn (sbi's mixture density network, kind mdn): the posterior error and re-simulation
  error of ik_cinn's protocol (same targets, ground truth and seeds), written to its own
  block of docs/models.md; --only ik_mdn measures just that block.
"""

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "train"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import kinematics as K  # noqa: E402
import toy_density  # noqa: E402
from innserve import Client  # noqa: E402

EPS = 0.02
N_RANDOM = 16
N_SAMPLES = 1000
N_CALIB = 300
BEGIN, END = "<!-- BEGIN model-quality -->", "<!-- END model-quality -->"
MDN_BEGIN, MDN_END = "<!-- BEGIN model-quality ik_mdn -->", "<!-- END model-quality ik_mdn -->"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_daemon(binary, models):
    port = free_port()
    # a generous deadline: the measurement must not fail on a busy machine
    proc = subprocess.Popen([binary, "--models", models, "--host", "127.0.0.1", "--port", str(port),
                             "--access-log", "off", "--deadline-ms", "600000"],
                            stderr=subprocess.PIPE)
    c = Client("http://127.0.0.1:%d" % port, timeout=300)
    if not c.wait_ready(60):
        proc.kill()
        raise SystemExit("the daemon did not become ready: %s" % proc.stderr.read().decode())
    return proc, c


# ---------------------------------------------------------------------------------------

def targets(seed):
    rng = np.random.default_rng(seed)
    named = np.array(K.NAMED_TARGETS[:2] + [(1.7, 0.0), (1.8, 0.0), (1.5, 0.5)])
    rand = K.forward(K.prior(N_RANDOM, rng))
    return named, rand


def ground_truth(T, seed):
    t0 = time.time()
    gt, draws = K.rejection_sample(T, EPS, 2 * N_SAMPLES, np.random.default_rng(seed))
    short = [i for i, g in enumerate(gt) if len(g) < 2 * N_SAMPLES]
    if short:
        raise SystemExit("rejection sampling did not reach %d samples for targets %s"
                         % (2 * N_SAMPLES, short))
    print("ground truth: %d targets, eps %.3g, %d prior draws, %.0f s"
          % (len(T), EPS, draws, time.time() - t0), file=sys.stderr)
    return gt, draws


def eval_posterior(c, model, T, gt, n_named, seed):
    t0 = time.time()
    ans = c.sample(model, y=T, num_samples=N_SAMPLES, seed=seed, outputs=["samples", "log_prob"])
    ms = (time.time() - t0) * 1e3
    S = np.asarray(ans["samples"], dtype=np.float64)
    LP = np.asarray(ans["log_prob"], dtype=np.float64)
    rows = []
    for i, t in enumerate(T):
        x, g = S[i], gt[i]
        d2 = ((K.forward(x) - t) ** 2).sum(1)
        rows.append({"target": [round(float(v), 4) for v in t],
                     "mmd": K.mmd(x, g[:N_SAMPLES]),
                     "mmd_unbiased": K.mmd(x, g[:N_SAMPLES], biased=False),
                     "floor": K.mmd(g[N_SAMPLES:], g[:N_SAMPLES]),
                     "prior_mmd": None,
                     "resim": float(d2.mean()), "resim_median_dist": float(np.median(np.sqrt(d2))),
                     "elbow": K.elbow_share(x), "elbow_gt": K.elbow_share(g)})
    # density consistency: the log_prob that came with the samples vs the log_prob endpoint
    k = 0
    lp = np.asarray(c.log_prob(model, S[k, :200], y=T[k]), dtype=np.float64)
    dens = float(np.max(np.abs(lp - LP[k, :200])))

    def agg(sel):
        keys = ("mmd", "mmd_unbiased", "floor", "resim", "resim_median_dist")
        return {key: float(np.mean([r[key] for r in sel])) for key in keys}
    return {"model": model, "rows": rows, "named": agg(rows[:n_named]),
            "random": agg(rows[n_named:]), "all": agg(rows), "sample_ms": ms,
            "n_obs": len(T), "num_samples": N_SAMPLES, "log_prob_consistency": dens,
            "version": ans["version"], "sha256": ans["sha256"]}


def prior_baseline(T, gt, seed):
    """MMD of prior draws (an estimator that ignores y) against each ground truth."""
    rng = np.random.default_rng(seed)
    return [K.mmd(K.prior(N_SAMPLES, rng), g[:N_SAMPLES]) for g in gt]


def extra_posteriors(c):
    """The other posterior estimators of the task served: cinn models named ik_* with x in
    R^4 and y in R^2 (ik_cinn has its own columns)."""
    return [m["name"] for m in c.models()
            if m["name"].startswith("ik_") and m["name"] != "ik_cinn" and m["kind"] == "cinn"
            and m["dims"]["x"] == 4 and m["dims"]["y"] == 2 and m.get("state") == "READY"]


def eval_calibration(c, model, seed):
    """Calibration on N_CALIB pairs from the training joint (prior, y + U(disk EPS))."""
    rng = np.random.default_rng(seed)
    x = K.prior(N_CALIB, rng)
    r = EPS * np.sqrt(rng.random(N_CALIB))
    a = 2 * np.pi * rng.random(N_CALIB)
    y = K.forward(x) + np.stack([r * np.cos(a), r * np.sin(a)], 1)
    ans = c.calibration(model, x, y=y, num_samples=200, seed=seed, progress=False)
    cov = ans["coverage"]
    levels = [0.2, 0.4, 0.6, 0.8]
    idx = [int(round(v * (len(cov["levels"]) - 1))) for v in levels]
    return {"sbc_ks_pvalue_min": float(min(ans["sbc"]["ks_pvalue"])),
            "hpd_levels": levels, "hpd": [float(cov["hpd"]["empirical"][i]) for i in idx],
            "tarp_atc": float(ans["tarp"]["atc"]),
            "nltp_mean": float(np.mean(ans["nltp"]))}


def eval_inn_forward(c, seed):
    x = K.prior(2000, np.random.default_rng(seed))
    ans = c.forward("ik_inn", x)
    y = np.asarray(ans["y"], dtype=np.float64)
    e = np.sqrt(((y - K.forward(x)) ** 2).sum(1))
    return {"rmse": float(np.sqrt((e ** 2).mean())), "median": float(np.median(e)),
            "max": float(e.max())}


def eval_iresnet(c, seed):
    rng = np.random.default_rng(seed)
    x = toy_density.sample(2000, rng)
    lp_true = toy_density.log_prob(x)
    lp = np.asarray(c.log_prob("iresnet_toy", x), dtype=np.float64)
    diff = lp_true - lp
    out = {"log_prob_mae": float(np.abs(diff).mean()),
           "log_prob_median_ae": float(np.median(np.abs(diff))),
           "kl": float(diff.mean()), "kl_se": float(diff.std() / math.sqrt(len(diff))),
           "nll_model": float(-lp.mean()), "nll_true": float(-lp_true.mean()),
           "entropy": toy_density.ENTROPY}
    # numeric inverse: x -> z (analytic forward) -> x (fixed point / Newton in the engine)
    f = c.forward("iresnet_toy", x[:500])
    z = np.asarray(f["z"], dtype=np.float64)
    t0 = time.time()
    inv = c.inverse("iresnet_toy", z)
    out["inverse_ms"] = (time.time() - t0) * 1e3
    xr = np.asarray(inv["x"], dtype=np.float64)
    err = np.sqrt(((xr - x[:500]) ** 2).sum(1))
    sol = inv.get("solver", {})
    out.update({"inverse_err_max": float(err.max()), "inverse_err_median": float(np.median(err)),
                "solver_method": sol.get("method"),
                "iterations_median": float(np.median(sol.get("iterations", [np.nan]))),
                "iterations_max": float(np.max(sol.get("iterations", [np.nan]))),
                "error_bound_max": float(np.max(sol.get("error_bound", [np.nan]))),
                "converged": float(np.mean(sol.get("converged", [0]))),
                "certified": bool(sol.get("certified", False))})
    inv4 = c.inverse("iresnet_toy", z, tol=1e-4)
    out["converged_tol_1e-4"] = float(np.mean(inv4["solver"]["converged"]))
    out["inverse_err_max_tol_1e-4"] = float(np.sqrt(((np.asarray(inv4["x"], dtype=np.float64)
                                                       - x[:500]) ** 2).sum(1)).max())
    # samples
    s = c.sample("iresnet_toy", num_samples=2000, seed=seed)
    xs = np.asarray(s["samples"], dtype=np.float64).reshape(-1, 2)
    ref = toy_density.sample(4000, rng)
    out["sample_mmd"] = K.mmd(xs[:1000], ref[:1000])
    out["sample_mmd_floor"] = K.mmd(ref[1000:2000], ref[:1000])
    out["sample_true_nll"] = float(-toy_density.log_prob(xs).mean())
    cert = c.certificate("iresnet_toy")
    out["certificate"] = {"invertible": cert.get("invertible"), "guarantee": cert.get("guarantee"),
                          "lipschitz_max": max(b.get("lipschitz", 0) for b in cert["blocks"])}
    return out


def eval_mlp(c, T, seed):
    rng = np.random.default_rng(seed)
    x = K.prior(2000, rng)
    y = np.asarray(c.forward("ik_mlp", x)["y"], dtype=np.float64)
    e = np.sqrt(((y - K.forward(x)) ** 2).sum(1))
    out = {"surrogate_rmse": float(np.sqrt((e ** 2).mean())), "surrogate_median": float(np.median(e)),
           "surrogate_p99": float(np.quantile(e, 0.99))}
    res = []
    t0 = time.time()
    for method in ("gradient", "evolutionary"):
        ans = c.preimage("ik_mlp", T, method=method, num_solutions=32, max_steps=500, seed=seed)
        sur, true, best = [], [], []
        for t, sols in zip(T, ans["solutions"]):
            xs = np.array([np.asarray(s["x"], dtype=np.float64) for s in sols])
            r_true = np.sqrt(((K.forward(xs) - t) ** 2).sum(1))
            sur += [s["residual"] for s in sols]
            true += list(r_true)
            best.append(float(r_true[0]))
        res.append({"method": method, "solutions": len(sur),
                    "surrogate_residual_median": float(np.median(sur)),
                    "true_residual_median": float(np.median(true)),
                    "true_residual_best_median": float(np.median(best)),
                    "within_0.05": float(np.mean(np.array(true) < 0.05))})
    out["preimage"] = res
    out["preimage_ms"] = (time.time() - t0) * 1e3
    return out


# ---------------------------------------------------------------------------------------

def fmt(v, p=4):
    if v is None:
        return "–"
    if v == 0:
        return "0"
    if isinstance(v, float) and (abs(v) < 1e-3 or abs(v) >= 1e4) and v != 0:
        return "%.2e" % v
    return ("%." + str(p) + "f") % v


def markdown(R):
    L = []
    meta = R["meta"]
    L.append("Measured by `models/evaluate.py` through the served API (%s, innserve %s), %s."
             % (meta["how"], meta["server"], meta["date"]))
    L.append("Ground truth: rejection sampling, tolerance ε = %.2g, %d samples per target "
             "(%d prior draws in all); 1000 served samples per target."
             % (EPS, 2 * N_SAMPLES, meta["gt_draws"]))
    L.append("")
    L.append("**Posterior error** (squared MMD, inverse multiquadric kernel, h ∈ {0.05, 0.2, "
             "0.9}, biased estimator; unbiased in brackets) and **re-simulation error** "
             "(mean ‖f(x̂) − y*‖²):")
    L.append("")
    L.append("| target y* | ik_cinn MMD | ik_inn MMD | noise floor | prior (no y) | "
             "ik_cinn Err_resim | ik_inn Err_resim | elbow share x4>0: cinn / inn / truth |")
    L.append("|---|---|---|---|---|---|---|---|")
    pc, pi = R["ik_cinn"], R["ik_inn"]
    n_named = meta["n_named"]
    for i, (rc, ri) in enumerate(zip(pc["rows"], pi["rows"])):
        if i >= n_named:
            break
        L.append("| (%g, %g) | %s (%s) | %s (%s) | %s | %s | %s | %s | %.2f / %.2f / %.2f |" % (
            rc["target"][0], rc["target"][1], fmt(rc["mmd"]), fmt(rc["mmd_unbiased"]),
            fmt(ri["mmd"]), fmt(ri["mmd_unbiased"]), fmt(rc["floor"]),
            fmt(R["prior_mmd"][i]), fmt(rc["resim"]), fmt(ri["resim"]),
            rc["elbow"], ri["elbow"], rc["elbow_gt"]))
    for key, label in (("named", "mean of the %d named targets" % n_named),
                       ("random", "mean of %d prior-predictive targets" % (len(pc["rows"]) - n_named)),
                       ("all", "mean of all %d" % len(pc["rows"]))):
        sl = slice(0, n_named) if key == "named" else (slice(n_named, None) if key == "random" else slice(None))
        L.append("| **%s** | **%s** (%s) | **%s** (%s) | %s | %s | **%s** | **%s** | |" % (
            label, fmt(pc[key]["mmd"]), fmt(pc[key]["mmd_unbiased"]), fmt(pi[key]["mmd"]),
            fmt(pi[key]["mmd_unbiased"]), fmt(pc[key]["floor"]),
            fmt(float(np.mean(R["prior_mmd"][sl]))), fmt(pc[key]["resim"]), fmt(pi[key]["resim"])))
    L.append("")
    L.append("- Median end-point distance ‖f(x̂) − y*‖ over all targets: ik_cinn %s, ik_inn %s "
             "(the cINN is trained on y + U(disk 0.02), so ≈ 0.01–0.02 is its design floor)."
             % (fmt(pc["all"]["resim_median_dist"]), fmt(pi["all"]["resim_median_dist"])))
    L.append("- Density consistency (log_prob returned with samples vs POST …/log_prob, max "
             "|Δ|): ik_cinn %s, ik_inn %s." % (fmt(pc["log_prob_consistency"]),
                                               fmt(pi["log_prob_consistency"])))
    L.append("- ik_inn forward prediction ŷ vs f(x) at 2000 prior draws: RMSE %s, median %s, "
             "max %s." % (fmt(R["ik_inn_forward"]["rmse"]), fmt(R["ik_inn_forward"]["median"]),
                          fmt(R["ik_inn_forward"]["max"])))
    L.append("- One request for all %d targets × 1000 samples: ik_cinn %.0f ms, ik_inn %.0f ms."
             % (pc["n_obs"], pc["sample_ms"], pi["sample_ms"]))
    L.append("")
    if R["extra"]:
        L.append("**Other posterior estimators** on the same targets and ground truth (means "
                 "over the targets; squared MMD, biased, unbiased in brackets):")
        L.append("")
        L.append("| model | MMD named 5 | MMD 16 prior-predictive | MMD all 21 | Err_resim all | "
                 "median ‖f(x̂) − y*‖ | elbow share x4>0 at (1.5, 0) (truth %.2f) | "
                 "density consistency | 21 × 1000 samples |" % pc["rows"][0]["elbow_gt"])
        L.append("|---|---|---|---|---|---|---|---|---|")
        for name, e in R["extra"].items():
            L.append("| %s | %s (%s) | %s (%s) | **%s** (%s) | %s | %s | %.2f | %s | %.0f ms |" % (
                name, fmt(e["named"]["mmd"]), fmt(e["named"]["mmd_unbiased"]),
                fmt(e["random"]["mmd"]), fmt(e["random"]["mmd_unbiased"]),
                fmt(e["all"]["mmd"]), fmt(e["all"]["mmd_unbiased"]), fmt(e["all"]["resim"]),
                fmt(e["all"]["resim_median_dist"]), e["rows"][0]["elbow"],
                fmt(e["log_prob_consistency"]), e["sample_ms"]))
        L.append("")
    L.append("**Calibration** (`POST …/calibration`, %d pairs x* ~ prior, y = f(x*) + U(disk "
             "%.2g), 200 samples per pair; a calibrated estimator has HPD coverage equal to "
             "the level, SBC p-values not small, ATC ≈ 0; nltp = mean −log q(x* | y), lower "
             "is better):" % (N_CALIB, EPS))
    L.append("")
    L.append("| model | smallest SBC KS p-value | HPD coverage at 20 / 40 / 60 / 80 % | "
             "TARP ATC | nltp |")
    L.append("|---|---|---|---|---|")
    for name, k in R["calibration"].items():
        L.append("| %s | %s | %s | %s | %s |" % (
            name, fmt(k["sbc_ks_pvalue_min"]), " / ".join("%.2f" % v for v in k["hpd"]),
            fmt(k["tarp_atc"]), fmt(k["nltp_mean"])))
    L.append("")
    r = R["iresnet_toy"]
    L.append("**iresnet_toy** (2000 true samples of the banana density):")
    L.append("")
    L.append("| quantity | value |")
    L.append("|---|---|")
    L.append("| mean \\|log q(x) − log p(x)\\| (served log_prob vs true) | %s (median %s) |"
             % (fmt(r["log_prob_mae"]), fmt(r["log_prob_median_ae"])))
    L.append("| KL(p ‖ q) = E_p[log p − log q] | %s ± %s nats |" % (fmt(r["kl"]), fmt(r["kl_se"])))
    L.append("| NLL: model / true (entropy %s) | %s / %s |" % (fmt(r["entropy"]), fmt(r["nll_model"]),
                                                            fmt(r["nll_true"])))
    L.append("| inverse x → z → x: max / median ‖x̂ − x‖ (500 rows) | %s / %s |"
             % (fmt(r["inverse_err_max"]), fmt(r["inverse_err_median"])))
    L.append("| solver (default tol 1e-6): method, iterations median / max, rows flagged "
             "converged, certified | %s, %g / %g, %.0f%%, %s |"
             % (r["solver_method"], r["iterations_median"], r["iterations_max"],
                100 * r["converged"], "yes" if r["certified"] else "no"))
    L.append("| largest certified error bound (default tol) | %s |" % fmt(r["error_bound_max"]))
    L.append("| with tol 1e-4: rows flagged converged, max ‖x̂ − x‖ | %.0f%%, %s |"
             % (100 * r["converged_tol_1e-4"], fmt(r["inverse_err_max_tol_1e-4"])))
    L.append("| certificate | %s, %s, max block Lip(g) %s |" % (
        "invertible" if r["certificate"]["invertible"] else "NOT invertible",
        r["certificate"]["guarantee"], fmt(r["certificate"]["lipschitz_max"])))
    L.append("| served samples vs true samples: MMD (floor) | %s (%s) |"
             % (fmt(r["sample_mmd"]), fmt(r["sample_mmd_floor"])))
    L.append("| true NLL of served samples | %s |" % fmt(r["sample_true_nll"]))
    L.append("")
    m = R["ik_mlp"]
    L.append("**ik_mlp** (surrogate at 2000 prior draws; preimages for the %d targets, 32 "
             "solutions each, 500 steps):" % len(pc["rows"]))
    L.append("")
    L.append("- surrogate error ‖ŷ − f(x)‖: RMSE %s, median %s, 99th percentile %s."
             % (fmt(m["surrogate_rmse"]), fmt(m["surrogate_median"]), fmt(m["surrogate_p99"])))
    L.append("")
    L.append("| preimage method | surrogate residual (median) | true ‖f(x) − y*‖ (median) | "
             "best solution's true residual (median over targets) | solutions within 0.05 |")
    L.append("|---|---|---|---|---|")
    for p in m["preimage"]:
        L.append("| %s | %s | %s | %s | %.0f%% |" % (
            p["method"], fmt(p["surrogate_residual_median"]), fmt(p["true_residual_median"]),
            fmt(p["true_residual_best_median"]), 100 * p["within_0.05"]))
    return "\n".join(L) + "\n"


def markdown_mdn(R):
    """The ik_mdn block: ik_cinn's protocol, with the benchmark's published MDN beside it."""
    m, meta = R["ik_mdn"], R["meta"]
    n_named = meta["n_named"]
    L = ["Measured by `models/evaluate.py --only ik_mdn` through the served API (%s, innserve "
         "%s), %s, with the targets, ground truth (ε = %.2g, %d prior draws) and seeds of the "
         "table above." % (meta["how"], meta["server"], meta["date"], EPS, meta["gt_draws"]), "",
         "| targets | ik_mdn Err_post = MMD (unbiased) | noise floor | ik_mdn Err_resim | "
         "median ‖f(x̂) − y*‖ |", "|---|---|---|---|---|"]
    for i, r in enumerate(m["rows"][:n_named]):
        L.append("| (%g, %g) | %s (%s) | %s | %s | %s |" % (
            r["target"][0], r["target"][1], fmt(r["mmd"]), fmt(r["mmd_unbiased"]),
            fmt(r["floor"]), fmt(r["resim"]), fmt(r["resim_median_dist"])))
    for key, label in (("named", "mean of the %d named targets" % n_named),
                       ("random", "mean of %d prior-predictive targets"
                        % (len(m["rows"]) - n_named)),
                       ("all", "mean of all %d" % len(m["rows"]))):
        L.append("| **%s** | **%s** (%s) | %s | **%s** | %s |" % (
            label, fmt(m[key]["mmd"]), fmt(m[key]["mmd_unbiased"]), fmt(m[key]["floor"]),
            fmt(m[key]["resim"]), fmt(m[key]["resim_median_dist"])))
    L.append("")
    L.append("- Density consistency (log_prob returned with samples vs POST …/log_prob, max "
             "|Δ|): %s. One request for all %d targets × 1000 samples: %.0f ms."
             % (fmt(m["log_prob_consistency"]), m["n_obs"], m["sample_ms"]))
    elb = ", ".join("%.2f / %.2f" % (r["elbow"], r["elbow_gt"]) for r in m["rows"][:n_named])
    L.append("- Elbow share x4 > 0, ik_mdn / truth, named targets: %s." % elb)
    return "\n".join(L) + "\n"


def update_docs(md, begin=BEGIN, end=END):
    path = os.path.join(ROOT, "docs", "models.md")
    text = open(path).read()
    a, b = text.index(begin) + len(begin), text.index(end)
    open(path, "w").write(text[:a] + "\n" + md + text[b:])
    print("updated %s" % path, file=sys.stderr)


class _Only(Exception):
    """--only: the named model's block is measured; skip the others."""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running daemon serving the demo models (default: start "
                   "build/innserve on models/)")
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "innserve"))
    p.add_argument("--models", default=HERE)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--update-docs", action="store_true", help="rewrite the block between "
                   "%s and %s in docs/models.md" % (BEGIN, END))
    p.add_argument("--only", choices=["ik_mdn"], help="measure only this model (and rewrite "
                   "only its block with --update-docs)")
    a = p.parse_args()

    proc = None
    if a.url:
        c = Client(a.url, timeout=300)
        how = a.url
    else:
        proc, c = start_daemon(a.bin, a.models)
        how = "build/innserve on models/, loopback"
    try:
        named, rand = targets(a.seed)
        T = np.concatenate([named, rand])
        gt, draws = ground_truth(T, a.seed + 1)
        R = {"meta": {"how": how, "date": time.strftime("%Y-%m-%d"), "gt_draws": draws,
                      "n_named": len(named), "eps": EPS,
                      "server": c.request("GET", "/v2").get("version", "?")}}
        if a.only == "ik_mdn" or "ik_mdn" in [m["name"] for m in c.models()]:
            R["ik_mdn"] = eval_posterior(c, "ik_mdn", T, gt, len(named), a.seed + 3)
            print("ik_mdn: MMD named %.4f random %.4f (floor %.4f), Err_resim %.2e"
                  % (R["ik_mdn"]["named"]["mmd"], R["ik_mdn"]["random"]["mmd"],
                     R["ik_mdn"]["all"]["floor"], R["ik_mdn"]["all"]["resim"]), file=sys.stderr)
        if a.only:
            raise _Only()
        R["prior_mmd"] = prior_baseline(T, gt, a.seed + 2)
        for model in ("ik_cinn", "ik_inn"):
            R[model] = eval_posterior(c, model, T, gt, len(named), a.seed + 3)
            print("%s: MMD named %.4f random %.4f (floor %.4f), Err_resim %.2e"
                  % (model, R[model]["named"]["mmd"], R[model]["random"]["mmd"],
                     R[model]["all"]["floor"], R[model]["all"]["resim"]), file=sys.stderr)
        R["extra"] = {}
        for model in extra_posteriors(c):
            R["extra"][model] = eval_posterior(c, model, T, gt, len(named), a.seed + 3)
            print("%s: MMD named %.4f random %.4f, Err_resim %.2e"
                  % (model, R["extra"][model]["named"]["mmd"],
                     R["extra"][model]["random"]["mmd"], R["extra"][model]["all"]["resim"]),
                  file=sys.stderr)
        R["calibration"] = {m: eval_calibration(c, m, a.seed + 7)
                            for m in ["ik_cinn", "ik_inn"] + list(R["extra"])}
        R["ik_inn_forward"] = eval_inn_forward(c, a.seed + 4)
        R["iresnet_toy"] = eval_iresnet(c, a.seed + 5)
        R["ik_mlp"] = eval_mlp(c, T, a.seed + 6)
    except _Only:
        pass
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(R, f, indent=1, default=float)
    if "ik_mdn" in R:
        md = markdown_mdn(R)
        print(md)
        if a.update_docs:
            update_docs(md, MDN_BEGIN, MDN_END)
    if a.only:
        return
    md = markdown(R)
    print(md)
    if a.update_docs:
        update_docs(md)


if __name__ == "__main__":
    main()
