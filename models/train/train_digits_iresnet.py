#!/usr/bin/env python3
"""Train digits_iresnet: a small convolutional i-ResNet flow on scikit-learn's 8 x 8 digits,
and export it.

    /usr/bin/python3 models/train/train_digits_iresnet.py --freia-path DIR [--out models/digits_iresnet.safetensors]

Data and dequantization as train_digits_cinn.py: x = (v + u) / 17, v in 0..16, u ~ U(0, 1);
bits per dimension -(log p(x) - 64 log 17) / (64 ln 2).  No condition (a flow).

Model (FrEIA SequenceINN on (1, 8, 8)):
  IRevNetDownsampling -> (4, 4, 4)
  -> BLOCKS x [ActNorm, IResNetLayer (Conv3x3 4->H, ELU, Conv3x3 H->H, ELU, Conv3x3 H->4)]
z has shape (4, 4, 4).  After every optimizer step each convolution is scaled to a spectral
norm of at most --spectral-norm-max (0.95), estimated by power iteration on the operator the
block really applies (padding 1, warm-started vectors), so the residual branches are
contractions; the exported checkpoint's certificate computes the exact bound.  FrEIA's own
lipschitz_correction() is not used: its power iteration runs conv2d without the layer's
padding and conv_transpose2d back, the operator of a 'valid' convolution, whose norm is
smaller than the padded convolution's, so it lets the residual branch reach Lip >= 1.  FrEIA's own log-det estimate is detached from the parameters (torch.autograd.grad
without create_graph), so training uses the i-ResNet paper's power series with a Hutchinson
estimate computed here with create_graph=True; evaluation uses the exact log-det
(the Jacobian of each block, 64 x 64).  Needs the real FrEIA (--freia-path).
"""

import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

from digits import (D, LEVELS, X_NAMES, arg_parser, dequantize, import_freia,  # noqa: E402
                    load_split, seed_all, train_bits_per_dim)


class SpectralControl:
    """Power iteration on each convolution of the IResNetLayers as applied (stride 1,
    padding 1), with one persistent vector per layer; scale() shrinks a weight whose estimate
    exceeds the limit."""

    def __init__(self, inn, Fm, shape, limit):
        self.layers = [l for m in inn.module_list if isinstance(m, Fm.IResNetLayer)
                       for l in m.layers]
        g = torch.Generator().manual_seed(5)
        self.u = [torch.randn(1, l.weight.shape[1], *shape, generator=g) for l in self.layers]
        self.limit = limit

    def scale(self, iters):
        F = torch.nn.functional
        with torch.no_grad():
            for i, l in enumerate(self.layers):
                W, u = l.weight, self.u[i]
                for _ in range(iters):
                    u = F.conv_transpose2d(F.conv2d(u, W, padding=1), W, padding=1)
                    u = u / u.norm()
                self.u[i] = u
                sigma = F.conv2d(u, W, padding=1).norm()
                if sigma > self.limit:
                    W.mul_(self.limit / sigma)


def series_logdet(residual, h, terms):
    """i-ResNet power series log det(I + J_g) ~ sum_k (-1)^(k+1) tr(J^k) / k, one Rademacher
    vector, differentiable in the parameters (create_graph)."""
    v = torch.randint(0, 2, h.shape, dtype=h.dtype).mul_(2).sub_(1)
    w = v
    out = residual(h)
    ld = h.new_zeros(h.shape[0])
    for k in range(1, terms + 1):
        w = torch.autograd.grad(out, h, w, create_graph=True)[0]
        ld = ld + (-1) ** (k + 1) * (w * v).flatten(1).sum(1) / k
    return out, ld


def exact_logdet(residual, h):
    """log|det(I + J_g)| per row from the full Jacobian (rows one at a time)."""
    lds = []
    for i in range(h.shape[0]):
        hi = h[i:i + 1]
        J = torch.autograd.functional.jacobian(lambda t: residual(t).flatten(), hi).reshape(D, D)
        lds.append(torch.linalg.slogdet(torch.eye(D, dtype=J.dtype) + J)[1])
    return torch.stack(lds)


def run(inn, Fm, x, exact=False, terms=6):
    h = x
    ld = x.new_zeros(x.shape[0])
    for m in inn.module_list:
        if isinstance(m, Fm.IResNetLayer):
            if exact:
                with torch.enable_grad():
                    hh = h.detach().requires_grad_(True)
                    ld = ld + exact_logdet(m.residual, hh).detach()
                h = h + m.residual(h)
            else:
                if not h.requires_grad:
                    h = h.requires_grad_(True)
                r, l = series_logdet(m.residual, h, terms)
                h, ld = h + r, ld + l
        else:
            (h,), l = m([h])
            ld = ld + l
    return h, ld


def main():
    p = arg_parser(__doc__, "digits_iresnet", blocks=8, hidden=32, steps=2500, batch=64, lr=3e-3)
    p.add_argument("--spectral-norm-max", type=float, default=0.95)
    a = p.parse_args()
    Ff, Fm = import_freia(a.freia_path, "train_digits_iresnet.py")

    seed_all(a.seed, a.threads)
    V, _, test_idx, train_idx = load_split(a.seed)
    mean, std = 0.5, 0.25

    inn = Ff.SequenceINN(1, 8, 8)
    inn.append(Fm.IRevNetDownsampling)
    for _ in range(a.blocks):
        inn.append(Fm.ActNorm)
        inn.append(Fm.IResNetLayer, internal_size=a.hidden, n_internal_layers=1,
                   spectral_norm_max=a.spectral_norm_max)
    tr = torch.tensor(train_idx)
    # data-dependent ActNorm initialisation on one batch, then contractive convolutions
    with torch.no_grad():
        h = (dequantize(V[tr[:256]]) - mean) / std
        for m in inn.module_list:
            h = h + m.residual(h) if isinstance(m, Fm.IResNetLayer) else m([h])[0][0]
    control = SpectralControl(inn, Fm, (4, 4), a.spectral_norm_max)
    control.scale(50)
    params = [q for q in inn.parameters() if q.requires_grad]
    print("digits_iresnet: %d blocks, hidden %d, %d parameters"
          % (a.blocks, a.hidden, sum(q.numel() for q in params)))
    opt = torch.optim.Adam(params, lr=a.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
    t0 = time.time()
    for it in range(a.steps):
        idx = tr[torch.randint(0, len(tr), (a.batch,))]
        x = dequantize(V[idx])
        z, log_det = run(inn, Fm, (x - mean) / std)
        nll = 0.5 * (z ** 2).flatten(1).sum(1) - log_det + D * math.log(std)
        loss = nll.mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        sched.step()
        control.scale(2)
        if it % 250 == 0 or it == a.steps - 1:
            bpd = train_bits_per_dim(loss.item())
            print("step %5d  nll %.3f  bits/dim %.3f  (%.0f s)" % (it, loss.item(), bpd,
                                                                   time.time() - t0), flush=True)
    print("trained in %.0f s" % (time.time() - t0))
    control.scale(500)
    inn.eval()
    te = torch.tensor(test_idx)
    x = dequantize(V[te], torch.Generator().manual_seed(7))
    with torch.no_grad():
        z, log_det = run(inn, Fm, (x - mean) / std, exact=True)
    lp = -0.5 * (z ** 2).flatten(1).sum(1) - 0.5 * D * math.log(2 * math.pi) + log_det - D * math.log(std)
    bpd = (-lp + D * math.log(LEVELS)) / (D * math.log(2))
    print("test bits/dim %.4f (held-out %d images, exact log-det)" % (bpd.mean().item(), len(te)))
    if a.save_torch:
        torch.save(inn.state_dict(), a.save_torch)
    export_model(inn, a, V, test_idx, mean, std)


def export_model(inn, a, V, test_idx, mean, std):
    """Write the checkpoint: x standardized with (mean, std), test vectors from held-out
    images, the exact log-det (the engine computes log|det(I + J_g)| of each block)."""
    from innserve.export import export
    g = torch.Generator().manual_seed(11)
    pick = [int(i) for i in test_idx[:8]]
    x = dequantize(V[pick], g).reshape(len(pick), D)
    export(inn, a.out, kind="flow",
           standardize={"x": (np.full(D, mean), np.full(D, std))},
           x_names=X_NAMES,
           image={"low": 0.0, "high": 1.0, "levels": LEVELS},
           test_inputs=x.double().numpy(),
           description="convolutional i-ResNet flow on the 8 x 8 digits (scikit-learn): i-RevNet "
                       "downsampling, %d x [ActNorm, IResNetLayer (3 conv 3x3, ELU, hidden %d)], "
                       "spectral norm <= %g per convolution; x = (v + u) / 17"
                       % (a.blocks, a.hidden, a.spectral_norm_max),
           source={"framework": "PyTorch %s + FrEIA" % torch.__version__,
                   "script": "models/train/train_digits_iresnet.py", "seed": a.seed,
                   "steps": a.steps})
    print("wrote %s (%d bytes)" % (a.out, os.path.getsize(a.out)))


if __name__ == "__main__":
    main()
