#!/usr/bin/env python3
"""Train ik_sbi_nsf (or ik_sbi_maf): an sbi neural posterior estimate (NPE) for the
inverse-kinematics benchmark, trained with sbi itself, and export it with
innserve.export.export_sbi.

    SBI_SRC=/path/to/sources /usr/bin/python3 models/train/train_ik_sbi_nsf.py \
        [--model nsf] [--out models/ik_sbi_nsf.safetensors]

Needs sbi (checked with HEAD 900821d) and nflows on PYTHONPATH or under SBI_SRC, read as
train_ik_mdn.py reads it.

Task: kinematics.py (Kruse et al. 2021, inverse kinematics); sbi's theta is innserve's x
(rail height and three angles), sbi's observation is innserve's y (the end point).
Prior: N(0, diag(0.25, 0.5, 0.5, 0.5)^2), given to sbi as a torch MultivariateNormal; its
support is all of R^4, so sbi's rejection outside the prior never rejects and the exported
file carries no prior box.  Simulator: y = f(x) + u with u uniform in a disk of radius EPS
(0.02), the same blur ik_cinn is trained with, so the target is exactly the posterior that
rejection sampling with tolerance EPS defines (what models/evaluate.py compares against).

Estimator: sbi's posterior_nn(model) (nsf: coupling rational-quadratic splines with
ResidualNet conditioners and LULinear layers; maf: MADE affine layers with random
permutations), z-scoring of theta and of the observation ("independent"), trained by
sbi's NPE.train (Adam, fixed learning rate, gradient norm clipped at 5, 10% validation
split) for a fixed number of epochs, keeping the weights of the epoch with the best
validation loss (sbi's train does).  Deterministic from --seed on one thread.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import kinematics as K  # noqa: E402


def simulate(theta, eps, gen):
    """y = f(theta) + u, u uniform in the disk of radius eps (torch, float32)."""
    y = K.forward(theta.double()).float()
    n = len(theta)
    r = eps * torch.sqrt(torch.rand(n, generator=gen))
    a = 2 * math.pi * torch.rand(n, generator=gen)
    return y + torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="nsf", choices=["nsf", "maf"])
    p.add_argument("--out", default=None, help="default models/ik_sbi_MODEL.safetensors")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sims", type=int, default=100_000, help="number of simulations")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--transforms", type=int, default=5)
    p.add_argument("--bins", type=int, default=10, help="spline bins (nsf)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eps", type=float, default=0.02, help="radius of the y noise disk")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    out = a.out or os.path.join(ROOT, "models", "ik_sbi_%s.safetensors" % a.model)

    from train_ik_mdn import import_sbi
    try:
        sbi = import_sbi()
        from sbi.inference import NPE
        from sbi.neural_nets import posterior_nn
    except ImportError as e:
        raise SystemExit("train_ik_sbi_nsf.py needs sbi and nflows (installed, or their "
                         "sources under SBI_SRC): %s" % e)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    sigma = torch.tensor(K.SIGMA, dtype=torch.float32)
    prior = torch.distributions.MultivariateNormal(torch.zeros(4), torch.diag(sigma ** 2))

    theta = torch.randn(a.sims, 4, generator=gen) * sigma
    y = simulate(theta, a.eps, gen)

    kw = {"hidden_features": a.hidden, "num_transforms": a.transforms}
    if a.model == "nsf":
        kw["num_bins"] = a.bins
    build = posterior_nn(model=a.model, z_score_theta="independent", z_score_x="independent",
                         **kw)
    inference = NPE(prior=prior, density_estimator=build, device="cpu",
                    show_progress_bars=False)
    t0 = time.process_time()
    w0 = time.time()
    est = inference.append_simulations(theta, y).train(
        training_batch_size=a.batch, learning_rate=a.lr, max_num_epochs=a.epochs,
        stop_after_epochs=a.epochs)
    cpu = time.process_time() - t0
    s = inference._summary
    print("ik_sbi_%s: sbi %s, %d parameters, %d epochs, best validation loss (-log q) %.4f, "
          "%.0f s CPU (%.0f s wall)" % (a.model, sbi.__version__,
                                        sum(q.numel() for q in est.parameters()),
                                        a.epochs, s["best_validation_loss"][-1],
                                        cpu, time.time() - w0), flush=True)
    posterior = inference.build_posterior(est)

    from innserve.export import export_sbi
    est.eval()
    # Test vectors: pairs of the simulator (x from the prior, its blurred end point), drawn
    # from a generator of their own.  Independent random x and y (the exporter's default)
    # are pairs the posterior never sees: there this concentrated flow is so ill-conditioned
    # (inverse Jacobians up to ~5e3) that float32 cannot reproduce the float64 inverse.
    tgen = torch.Generator().manual_seed(a.seed + 1000)
    tx = torch.randn(8, 4, generator=tgen, dtype=torch.float64) * sigma.double()
    ty = simulate(tx.float(), a.eps, tgen).double()
    # The prior is a Gaussian (support R^4): no box to record, so the estimator is exported.
    # The tolerance of the test vectors: the flow expands the thin direction of the posterior
    # (forward Jacobians reach singular values ~250 at these pairs), so the daemon's float32
    # z differs from the exporter's float64 one by up to ~2e-5 at z ~ 0: atol 5e-4.
    res = export_sbi(posterior.posterior_estimator, out, x_names=K.X_NAMES, y_names=K.Y_NAMES,
                     test_inputs={"x": tx, "y": ty}, rtol=1e-4, atol=5e-4,
                     description="sbi %s NPE (%s, %d transforms, %d hidden) for 4-DOF inverse "
                                 "kinematics (Kruse et al.), prior N(0, diag(0.25, 0.5, 0.5, "
                                 "0.5)^2), trained on y + U(disk %.2g)"
                                 % (sbi.__version__, a.model.upper(), a.transforms, a.hidden,
                                    a.eps),
                     source={"script": "models/train/train_ik_sbi_nsf.py", "seed": a.seed,
                             "simulations": a.sims, "epochs": a.epochs})
    for n in getattr(res, "notes", []):
        print("note:", n)
    print("wrote %s (%d bytes)" % (out, os.path.getsize(out)))


if __name__ == "__main__":
    main()
