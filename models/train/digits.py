"""What the two digits training scripts (train_digits_cinn.py, train_digits_iresnet.py) share:
scikit-learn's 8 x 8 digits, the held-out split, the dequantization x = (v + u) / 17, bits per
dimension, the pixel names, the options both take and the FrEIA import."""

import argparse
import math
import os
import sys

import numpy as np
import torch

LEVELS = 17      # intensity levels 0..16: one level is a bin of width 1/17 in [0, 1]
D = 64           # values per image
N_TEST = 297     # held-out images: the first N_TEST of the seeded permutation
X_NAMES = ["c0_h%d_w%d" % (h, w) for h in range(8) for w in range(8)]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def arg_parser(doc, model, *, blocks, hidden, steps, batch, lr):
    """The options both scripts take (--out defaults to models/MODEL.safetensors); a script
    adds its own before parse_args()."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "models", model + ".safetensors"))
    p.add_argument("--freia-path", default=os.environ.get("INNSERVE_FREIA_PATH"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--blocks", type=int, default=blocks)
    p.add_argument("--hidden", type=int, default=hidden)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-torch", help="also save the trained state_dict here")
    return p


def load_digits():
    from sklearn.datasets import load_digits as ld
    d = ld()
    return d.images.astype(np.float64), d.target.astype(np.int64)


def load_split(seed):
    """(V, labels, test_idx, train_idx): V the images as a float32 (n, 1, 8, 8) tensor of
    levels 0..16, the split a permutation by numpy's default_rng(seed)."""
    imgs, labels = load_digits()
    perm = np.random.default_rng(seed).permutation(len(imgs))
    V = torch.tensor(imgs, dtype=torch.float32)[:, None]
    return V, labels, perm[:N_TEST], perm[N_TEST:]


def dequantize(v, generator=None):
    """x = (v + u) / LEVELS with u ~ U(0, 1) drawn per value (from generator when given)."""
    return (v + torch.rand(v.shape, generator=generator)) / LEVELS


def train_bits_per_dim(nll):
    """Bits per dimension of a mean negative log-likelihood (standard normal z, the Gaussian
    constant left out of nll) of the dequantized images."""
    return (nll + 0.5 * D * math.log(2 * math.pi) + D * math.log(LEVELS)) / (D * math.log(2))


def seed_all(seed, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)


def import_freia(freia_path, script):
    """(FrEIA.framework, FrEIA.modules), from freia_path when given; exits naming script
    when FrEIA is not importable."""
    if freia_path:
        sys.path.insert(0, freia_path)
    try:
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm
    except ImportError:
        sys.exit("%s needs FrEIA: pass --freia-path DIR (a vislearn/FrEIA checkout)" % script)
    return Ff, Fm
