#!/usr/bin/env python3
"""Train ik_mdn: sbi's mixture density network (NPE, density_estimator "mdn") on the
inverse-kinematics benchmark, and export it with innserve.export.export_sbi.

    SBI_SRC=/path/to/sources /usr/bin/python3 models/train/train_ik_mdn.py \
        [--out models/ik_mdn.safetensors]

Needs sbi (checked with HEAD 900821d) and nflows on PYTHONPATH or under SBI_SRC (sbi, nflows,
zuko, pyroot as in tests/fixtures/sbi/gen_sbi.py; never copied into this repository).

Task: kinematics.py (Kruse et al. 2021).  Model: sbi's posterior_nn("mdn") — a
MultivariateGaussianMDN (two hidden ReLU layers of --hidden units, --components full-covariance
Gaussian components) on the standardized y (sbi's Standardize), with sbi's z-scoring of x,
both computed by sbi from the training pairs.
Training: NPE's loss, the estimator's own -log q(x | y) (sbi's MixtureDensityEstimator.loss),
with Adam and a cosine learning-rate decay over --steps batches drawn from --sims pairs (x
from the prior, y = f(x) + u with u uniform in a disk of radius EPS = 0.02, as for ik_cinn:
the target is then exactly the posterior that rejection sampling with tolerance EPS defines,
models/evaluate.py's ground truth), gradient norm clipped at 5 as sbi does; the trained
estimator becomes an sbi DirectPosterior (NPE.build_posterior) with the Gaussian prior.
Deterministic from --seed on one thread.
"""

import argparse
import math
import os
import sys
import time
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import kinematics as K  # noqa: E402


def import_sbi():
    src = os.environ.get("SBI_SRC")
    if src:
        for p in ("sbi", "nflows", "zuko", "pyroot"):
            if os.path.isdir(os.path.join(src, p)) and os.path.join(src, p) not in sys.path:
                sys.path.insert(0, os.path.join(src, p))
    tb = types.ModuleType("torch.utils.tensorboard")

    class _Writer:
        def __init__(self, *a, **k):
            pass

        def __getattr__(self, name):
            return lambda *a, **k: None

    tb.SummaryWriter = _Writer
    sys.modules.setdefault("torch.utils.tensorboard", tb)
    sys.modules.setdefault("torch.utils.tensorboard.writer", tb)
    import sbi  # noqa: F401
    return sbi


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "models", "ik_mdn.safetensors"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--components", type=int, default=20)
    p.add_argument("--sims", type=int, default=1_000_000)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eps", type=float, default=0.02, help="radius of the y noise disk")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=None,
                   help="save the trained posterior here (torch.save) and, when it exists, "
                        "load it instead of training (export only)")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    sbi = import_sbi()
    from sbi.inference import NPE
    from sbi.neural_nets import posterior_nn

    sigma = torch.tensor(K.SIGMA, dtype=torch.float32)
    prior = torch.distributions.MultivariateNormal(torch.zeros(4), torch.diag(sigma ** 2))

    if a.cache and os.path.exists(a.cache):
        post = torch.load(a.cache)
        print("loaded %s" % a.cache)
    else:
        x = K.prior(a.sims, rng)
        y = K.forward(x)
        r = a.eps * np.sqrt(rng.random(a.sims))
        th = 2 * math.pi * rng.random(a.sims)
        y = y + np.stack([r * np.cos(th), r * np.sin(th)], 1)
        theta = torch.tensor(x, dtype=torch.float32)
        obs = torch.tensor(y, dtype=torch.float32)
        de = posterior_nn(model="mdn", hidden_features=a.hidden, num_components=a.components)
        est = de(theta, obs)     # sbi's build_mdn: z-scoring of x and y from these pairs
        opt = torch.optim.Adam(est.parameters(), lr=a.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
        t0, c0 = time.time(), time.process_time()
        for it in range(a.steps):
            idx = torch.randint(0, a.sims, (a.batch,))
            loss = est.loss(theta[idx], obs[idx]).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(est.parameters(), 5.0)
            opt.step()
            sched.step()
            if it % 500 == 0 or it == a.steps - 1:
                print("step %5d  loss %.4f  (%.0f s CPU)" % (it, loss.item(),
                                                           time.process_time() - c0), flush=True)
        print("trained in %.0f s CPU (%.0f s wall)" % (time.process_time() - c0,
                                                      time.time() - t0))
        est.eval()
        inf = NPE(prior=prior, show_progress_bars=False)
        post = inf.build_posterior(est)
        if a.cache:
            torch.save(post, a.cache)

    from innserve.export import export_sbi
    est = post.posterior_estimator
    nparams = sum(q.numel() for q in est.parameters())
    # test vectors: simulated pairs (x from the prior, y = f(x)), so the observations the
    # daemon offers come with their ground truth
    xt = K.prior(8, np.random.default_rng(a.seed + 100))
    tests = {"x": torch.tensor(xt, dtype=torch.float64),
             "y": torch.tensor(K.forward(xt), dtype=torch.float64)}
    res = export_sbi(post, a.out, x_names=K.X_NAMES, y_names=K.Y_NAMES, seed=a.seed,
                     test_inputs=tests,
                     description="sbi %s mixture density network for 4-DOF inverse kinematics "
                                 "(Kruse et al.): %d full-covariance components, 2 x %d ReLU, "
                                 "trained on y + U(disk %.2g)"
                                 % (sbi.__version__, a.components, a.hidden, a.eps),
                     source={"script": "models/train/train_ik_mdn.py", "seed": a.seed,
                             "sbi_commit": "900821d"})
    print("wrote %s (%d bytes, %d parameters, kind %s)" % (
        a.out, os.path.getsize(a.out), nparams, res.manifest["kind"]))


if __name__ == "__main__":
    main()
