#!/usr/bin/env python3
"""Train digits_cinn: a class-conditional multi-scale (Glow-style) cINN on scikit-learn's 8 x 8
digits, and export it.

    /usr/bin/python3 models/train/train_digits_cinn.py --freia-path DIR [--out models/digits_cinn.safetensors]

Data: sklearn.datasets.load_digits (1797 gray 8 x 8 images with values 0..16, bundled with
Debian's python3-sklearn: no download).  Dequantization: x = (v + u) / 17 with u ~ U(0, 1),
so x lies in [0, 1] and one intensity level is a bin of width 1/17; bits per dimension are
-(log p(x) - 64 log 17) / (64 ln 2) (docs/models.md).  The condition y is the one-hot digit
class (10 values), fed to each scale as y broadcast over that scale's positions.

Model (FrEIA GraphINN):
  x (1, 8, 8) -> HaarDownsampling -> (4, 4, 4)
    -> 4 x [GLOWCouplingBlock (conv 3x3 subnets, condition (10, 4, 4)), PermuteRandom]
    -> Split channels (2, 2): 2 channels leave (Flatten, 32 values)
    -> HaarDownsampling -> (8, 2, 2)
    -> 4 x [GLOWCouplingBlock (conv 3x3 subnets, condition (10, 2, 2)), PermuteRandom]
    -> Flatten (32) -> Concat with the early latents -> z (64)
AdamW (weight decay 1e-4: with 1500 training images a larger or longer-trained model
overfits, held-out bits/dim rising while the training loss falls), deterministic from --seed
on one thread.  Needs the real FrEIA (a checkout of
vislearn/FrEIA on --freia-path; never commit it).
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


def build(Ff, Fm, hidden, blocks, seed):
    def conv_subnet(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                             nn.Conv2d(hidden, c_out, 3, padding=1))

    x_in = Ff.InputNode(1, 8, 8, name="x")
    c4 = Ff.ConditionNode(10, 4, 4, name="c4")
    c2 = Ff.ConditionNode(10, 2, 2, name="c2")
    nodes = [x_in, c4, c2]
    h = Ff.Node(x_in, Fm.HaarDownsampling, {}, name="haar1")
    nodes.append(h)
    for k in range(blocks):
        h = Ff.Node(h, Fm.GLOWCouplingBlock, {"subnet_constructor": conv_subnet, "clamp": 2.0},
                    conditions=c4, name="s1_glow%d" % k)
        nodes.append(h)
        h = Ff.Node(h, Fm.PermuteRandom, {"seed": seed + k}, name="s1_perm%d" % k)
        nodes.append(h)
    sp = Ff.Node(h, Fm.Split, {"section_sizes": [2, 2], "dim": 0}, name="split")
    nodes.append(sp)
    early = Ff.Node(sp.out1, Fm.Flatten, {}, name="flat1")
    nodes.append(early)
    h = Ff.Node(sp.out0, Fm.HaarDownsampling, {}, name="haar2")
    nodes.append(h)
    for k in range(blocks):
        h = Ff.Node(h, Fm.GLOWCouplingBlock, {"subnet_constructor": conv_subnet, "clamp": 2.0},
                    conditions=c2, name="s2_glow%d" % k)
        nodes.append(h)
        h = Ff.Node(h, Fm.PermuteRandom, {"seed": seed + 100 + k}, name="s2_perm%d" % k)
        nodes.append(h)
    late = Ff.Node(h, Fm.Flatten, {}, name="flat2")
    nodes.append(late)
    cat = Ff.Node([late.out0, early.out0], Fm.Concat, {"dim": 0}, name="cat")
    nodes.append(cat)
    nodes.append(Ff.OutputNode(cat, name="z"))
    return Ff.GraphINN(nodes)


def conditions(y_onehot):
    return [y_onehot[:, :, None, None].expand(-1, -1, 4, 4),
            y_onehot[:, :, None, None].expand(-1, -1, 2, 2)]


def test_bpd(inn, V, Y, test_idx, mean, std):
    """Mean bits/dim of the held-out images (one fixed dequantization draw)."""
    with torch.no_grad():
        te = torch.tensor(test_idx)
        x = dequantize(V[te], torch.Generator().manual_seed(7))
        z, log_det = inn((x - mean) / std, c=conditions(Y[te]))
        lp = -0.5 * (z ** 2).sum(1) - 0.5 * D * math.log(2 * math.pi) + log_det - D * math.log(std)
        return ((-lp + D * math.log(LEVELS)) / (D * math.log(2))).mean().item()


def main():
    p = arg_parser(__doc__, "digits_cinn", blocks=4, hidden=24, steps=3000, batch=128, lr=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    a = p.parse_args()
    Ff, Fm = import_freia(a.freia_path, "train_digits_cinn.py")

    seed_all(a.seed, a.threads)
    V, labels, test_idx, train_idx = load_split(a.seed)        # V: (n, 1, 8, 8), 0..16
    Y = torch.nn.functional.one_hot(torch.tensor(labels), 10).float()
    mean, std = 0.5, 0.25                                      # x_s = (x - mean) / std

    inn = build(Ff, Fm, a.hidden, a.blocks, a.seed)
    params = [q for q in inn.parameters() if q.requires_grad]
    print("digits_cinn: %d blocks per scale, hidden %d, %d parameters"
          % (a.blocks, a.hidden, sum(q.numel() for q in params)))
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
    t0 = time.time()
    tr = torch.tensor(train_idx)
    for it in range(a.steps):
        idx = tr[torch.randint(0, len(tr), (a.batch,))]
        x = dequantize(V[idx])
        xs = (x - mean) / std
        z, log_det = inn(xs, c=conditions(Y[idx]))
        nll = 0.5 * (z ** 2).sum(1) - log_det + D * math.log(std)
        loss = nll.mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        sched.step()
        if it % 500 == 0 or it == a.steps - 1:
            bpd = train_bits_per_dim(loss.item())
            print("step %5d  nll %.3f  bits/dim %.3f  test %.3f  (%.0f s)"
                  % (it, loss.item(), bpd, test_bpd(inn, V, Y, test_idx, mean, std),
                     time.time() - t0), flush=True)
    print("trained in %.0f s" % (time.time() - t0))
    inn.eval()
    print("test bits/dim %.4f (held-out %d images)" % (test_bpd(inn, V, Y, test_idx, mean, std),
                                                       len(test_idx)))
    if a.save_torch:
        torch.save(inn.state_dict(), a.save_torch)
    export_model(inn, a, V, Y, test_idx, mean, std)


def export_model(inn, a, V, Y, test_idx, mean, std):
    """Write the checkpoint: x standardized with (mean, std), y the one-hot class broadcast
    over each scale's positions, test vectors from held-out images (one per class)."""
    from innserve.export import export
    te = np.asarray(test_idx)
    labels = Y[te].argmax(1).numpy()
    pick = [int(te[np.flatnonzero(labels == k)[0]]) for k in range(8)]
    x = dequantize(V[pick], torch.Generator().manual_seed(11)).reshape(len(pick), D)
    export(inn, a.out, kind="cinn", broadcast_conditions=True,
           standardize={"x": (np.full(64, mean), np.full(64, std))},
           x_names=X_NAMES,
           y_names=["digit%d" % k for k in range(10)],
           image={"low": 0.0, "high": 1.0, "levels": LEVELS},
           test_inputs=(x.double().numpy(), Y[pick].double().numpy()),
           description="class-conditional multi-scale cINN on the 8 x 8 digits (scikit-learn): "
                       "Haar downsampling, %d conv GLOW couplings per scale, hidden %d; y = one-hot "
                       "class; x = (v + u) / 17" % (a.blocks, a.hidden),
           source={"framework": "PyTorch %s + FrEIA" % torch.__version__,
                   "script": "models/train/train_digits_cinn.py", "seed": a.seed,
                   "steps": a.steps})
    print("wrote %s (%d bytes)" % (a.out, os.path.getsize(a.out)))


if __name__ == "__main__":
    main()
