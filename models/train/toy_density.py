"""The 2-D toy density of iresnet_toy ("banana"), with its exact log-density.

    x1 ~ N(0, S1^2),   x2 | x1 ~ N(A x1^2 + B, S2^2)

log p(x) = log N(x1; 0, S1^2) + log N(x2; A x1^2 + B, S2^2); the differential entropy is
H = log(2 pi e S1 S2) (the shift of x2 has unit Jacobian), the best achievable mean negative
log-likelihood.
"""

import math

import numpy as np

S1, S2, A, B = 1.0, 0.4, 0.5, -1.0
ENTROPY = math.log(2 * math.pi * math.e * S1 * S2)


def sample(n, rng):
    x1 = rng.standard_normal(n) * S1
    x2 = A * x1 ** 2 + B + rng.standard_normal(n) * S2
    return np.stack([x1, x2], 1)


def log_prob(x):
    x = np.asarray(x, dtype=np.float64)
    x1, x2 = x[:, 0], x[:, 1]
    r = (x2 - A * x1 ** 2 - B) / S2
    return (-0.5 * (x1 / S1) ** 2 - 0.5 * r ** 2 - math.log(2 * math.pi * S1 * S2))
