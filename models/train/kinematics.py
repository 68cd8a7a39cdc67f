"""The inverse-kinematics benchmark (Kruse et al., arXiv 2101.10763), shared by the training
scripts and models/evaluate.py.

Task (the paper above, section "Inverse kinematics"): a planar arm whose base slides on a
vertical rail, then three rotating segments.  x = (rail height, angle 1, angle 2, angle 3),
prior x ~ N(0, diag(0.25, 0.5, 0.5, 0.5)^2), segment lengths (0.5, 0.5, 1.0); the
observation y is the end point, deterministic (no noise).

Also: ground truth p(x | y*) by rejection sampling (§2.1) and the MMD with the inverse
multiquadric kernel of Ardizzone et al. (§3), biased and unbiased estimators.
"""

import numpy as np

SIGMA = np.array([0.25, 0.5, 0.5, 0.5])
LENGTHS = np.array([0.5, 0.5, 1.0])
X_NAMES = ["rail", "angle1", "angle2", "angle3"]
Y_NAMES = ["end_x", "end_y"]

# Named targets: the reference code's demonstration target (1.5, 0), the second reported
# example (0, 1.5), and points used by third-party reimplementations.
NAMED_TARGETS = [(1.5, 0.0), (0.0, 1.5), (1.2, 0.3), (1.7, 0.0)]


def prior(n, rng):
    return rng.standard_normal((n, 4)) * SIGMA


def forward(x):
    """y = f(x) for an (n, 4) array (numpy or torch); returns (n, 2)."""
    l1, l2, l3 = LENGTHS
    if isinstance(x, np.ndarray):
        cos, sin, stack = np.cos, np.sin, (lambda a: np.stack(a, 1))
    else:  # torch
        import torch
        cos, sin, stack = torch.cos, torch.sin, (lambda a: torch.stack(a, 1))
    a1 = x[:, 1]
    a2 = a1 + x[:, 2]
    a3 = a2 + x[:, 3]
    y1 = l1 * cos(a1) + l2 * cos(a2) + l3 * cos(a3)
    y2 = x[:, 0] + l1 * sin(a1) + l2 * sin(a2) + l3 * sin(a3)
    return stack([y1, y2])


def rejection_sample(targets, eps, want, rng, chunk=2_000_000, max_draws=400_000_000):
    """Ground truth p(x | y*) for each target: prior draws with ||f(x) - y*|| < eps.

    Returns (list of (k_i, 4) arrays, total draws).  Stops when every target has `want`
    accepted samples or after max_draws prior draws (then some lists are shorter)."""
    targets = np.asarray(targets, dtype=np.float64)
    acc = [[] for _ in targets]
    have = np.zeros(len(targets), dtype=np.int64)
    draws = 0
    while (have < want).any() and draws < max_draws:
        x = prior(chunk, rng)
        y = forward(x)
        draws += chunk
        for i, t in enumerate(targets):
            if have[i] >= want:
                continue
            d2 = (y[:, 0] - t[0]) ** 2 + (y[:, 1] - t[1]) ** 2
            sel = x[d2 < eps * eps]
            acc[i].append(sel)
            have[i] += len(sel)
    out = [np.concatenate(a)[:want] if a else np.zeros((0, 4)) for a in acc]
    return out, draws


IMQ_SCALES = (0.05, 0.2, 0.9)


def _imq(a, b, scales=IMQ_SCALES):
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return sum(h * h / (h * h + d2) for h in scales)


def mmd(a, b, biased=True, scales=IMQ_SCALES):
    """Squared MMD between sample sets a (n, d) and b (m, d), inverse multiquadric kernel
    sum over h of h^2 / (h^2 + |a - b|^2).  biased=True keeps the diagonal terms (the
    Ardizzone toy code); biased=False is the unbiased U-statistic."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    kaa, kbb, kab = _imq(a, a, scales), _imq(b, b, scales), _imq(a, b, scales)
    n, m = len(a), len(b)
    if biased:
        return kaa.mean() + kbb.mean() - 2.0 * kab.mean()
    saa = (kaa.sum() - np.trace(kaa)) / (n * (n - 1))
    sbb = (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
    return saa + sbb - 2.0 * kab.mean()


def elbow_share(x):
    """Share of samples with the last joint bent one way (x4 > 0): the two elbow modes."""
    return float((np.asarray(x)[:, 3] > 0).mean()) if len(x) else float("nan")
