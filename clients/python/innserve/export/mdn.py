"""innserve.export.mdn: export sbi's mixture density network (``posterior_nn("mdn")``)
as an innserve ``mdn`` checkpoint; :func:`innserve.export.export_sbi` hands
MixtureDensityEstimators here.

sbi's MixtureDensityEstimator wraps a MultivariateGaussianMDN: its ``_embedding_net``
(sbi's Standardize -> ``standardize.y``, then an optional MLP embedding), the MDN's
``_hidden_net`` (Linear + ReLU layers; with the embedding's layers before it this is the
manifest's ``mixture.net``), the heads ``_logits_layer``, ``_means_layer``,
``_unconstrained_diagonal_layer`` and ``_upper_layer``, ``_epsilon`` (added to the
precision's diagonal in the quadratic form) and the z-scoring of theta
(``_transform_shift`` / ``_transform_scale`` -> ``standardize.x``).  A
``transform_to_unconstrained`` estimator (``_prior_transform``) is refused.

Before writing, the exported network is evaluated with this module's float64 math (the
manifest's, docs/checkpoint-format.md, on the stored float32-rounded tensors) and compared
with the real modules run in float64: the hidden features, every head (logits, means and the
precision factors sbi builds), the log_prob of the estimator (and of the posterior, with its
prior box), and a draw given the component and the normals (mean + A^-1 e, against torch's
triangular solve).  The test vectors are x, y and log_prob.
"""

import collections
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import constraints

from .. import _reference as ref
from .._version import __version__
from .common import F64, ExportError, _Ctx, _cls
from .common import _close as _close_flat
from .manifest import (_add_names, _check_log_prob, _given_box, _mask_prior, _mixture_finish,
                       _manifest_head, _mixture_standardize)
from .subnets import _subnet

LOG2PI = math.log(2.0 * math.pi)


def is_mdn(obj):
    names = [k.__name__ for k in type(obj).__mro__]
    return "MixtureDensityEstimator" in names or "MultivariateGaussianMDN" in names


# ---------------------------------------------------------------------------------------
# the manifest's math in float64 (docs/checkpoint-format.md, "Mixture (mdn)")
# ---------------------------------------------------------------------------------------

def mixture(manifest, tensors, y):
    """-> (log weights (n, K), means (n, K, d), precision factors A (n, K, d, d)) in
    standardized x units, for physical y (n, dy)."""
    S = ref.Store(tensors)
    mx = manifest["mixture"]
    K, d = mx["components"], manifest["dims"]["x"]
    s = manifest.get("standardize", {}).get("y")
    ys = y if not s else (y - S.T(s["mean"]).reshape(-1)) / S.T(s["std"]).reshape(-1)
    h = ref.subnet(S, mx["net"], ys)

    def head(name):
        L = mx[name]
        o = h @ S.T(L["weight"]).T
        return o + S.T(L["bias"]).reshape(-1) if L.get("bias") else o
    n = y.shape[0]
    logits = head("logits")
    logw = logits - torch.logsumexp(logits, 1, keepdim=True)
    mu = head("means").reshape(n, K, d)
    A = torch.zeros(n, K, d, d, dtype=F64)
    idx = torch.arange(d)
    A[:, :, idx, idx] = F.softplus(head("diagonal").reshape(n, K, d))
    if d > 1:
        r, c = torch.triu_indices(d, d, 1)
        A[:, :, r, c] = head("upper").reshape(n, K, -1)
    return logw, mu, A


def log_prob(manifest, tensors, x, y):
    """log q(x | y) (n,) in physical units; -inf outside the manifest's prior box."""
    S = ref.Store(tensors)
    logw, mu, A = mixture(manifest, tensors, y)
    s = manifest.get("standardize", {}).get("x")
    xs, ld = x, 0.0
    if s:
        m, sd = S.T(s["mean"]).reshape(-1), S.T(s["std"]).reshape(-1)
        xs, ld = (x - m) / sd, -torch.log(sd).sum()
    eps = manifest["mixture"].get("epsilon", 1e-4)
    d = xs.shape[1]
    diff = xs[:, None, :] - mu                                  # (n, K, d)
    P = A.transpose(-1, -2) @ A + eps * torch.eye(d, dtype=F64)
    quad = (diff[..., None, :] @ P @ diff[..., :, None])[..., 0, 0]
    logdet = torch.log(torch.diagonal(A, dim1=-2, dim2=-1)).sum(-1)
    lp = torch.logsumexp(logw - 0.5 * d * LOG2PI + logdet - 0.5 * quad, 1) + ld
    return _mask_prior(manifest, x, lp)


def draw(manifest, tensors, y, k, e):
    """x (n, d) physical of component k (n,) with normals e (n, d): mean + A^-1 e (back
    substitution), unstandardized."""
    S = ref.Store(tensors)
    _, mu, A = mixture(manifest, tensors, y)
    n, _, d = mu.shape
    rows = torch.arange(n)
    Ak, mk = A[rows, k], mu[rows, k]
    v = torch.zeros(n, d, dtype=F64)
    for r in range(d - 1, -1, -1):
        acc = e[:, r] - (Ak[:, r, r + 1:] * v[:, r + 1:]).sum(1)
        v[:, r] = acc / Ak[:, r, r]
    xs = mk + v
    s = manifest.get("standardize", {}).get("x")
    if s:
        xs = xs * S.T(s["std"]).reshape(-1) + S.T(s["mean"]).reshape(-1)
    return xs


# ---------------------------------------------------------------------------------------
# the export
# ---------------------------------------------------------------------------------------

def _unbounded(prior):
    """The prior's support is all of R^d (a Gaussian prior): no box to record."""
    sup = getattr(prior, "support", None)
    while isinstance(sup, constraints.independent):
        sup = sup.base_constraint
    return sup is constraints.real


def _posterior(obj):
    """-> (estimator, posterior or None, box prior or None): a DirectPosterior gives its
    estimator and its prior's box (none for a prior on all of R^d; other priors refused);
    anything else is the estimator itself."""
    what = _cls(obj)
    if not (hasattr(obj, "posterior_estimator") and hasattr(obj, "prior")):
        return obj, None, None
    if what != "DirectPosterior":
        raise ExportError("%s is not supported yet: export a DirectPosterior (sbi's NPE "
                          "posterior) or its density estimator" % what)
    pr, prior_box = obj.prior, None
    base = getattr(pr, "base_dist", None)
    if _cls(base) == "Uniform":
        prior_box = (base.low.detach().cpu().to(F64).reshape(-1),
                     base.high.detach().cpu().to(F64).reshape(-1))
    elif not _unbounded(pr):
        raise ExportError("prior: %s is not supported yet (a box prior, sbi's BoxUniform, "
                          "or one whose support is all of R^d, is; or export the estimator "
                          "with low= and high=)" % _cls(pr))
    return obj.posterior_estimator, obj, prior_box


def _lin(ctx, mod, name):
    o = {"weight": ctx.add(name + ".weight", mod.weight.detach().float(), torch.float32)}
    if getattr(mod, "bias", None) is not None:
        o["bias"] = ctx.add(name + ".bias", mod.bias.detach().float(), torch.float32)
    return o


def _parts(est):
    """-> (MultivariateGaussianMDN, embedding modules after Standardize, Standardize or None,
    theta shift, theta scale)."""
    if hasattr(est, "get_uncorrected_mog"):        # MixtureDensityEstimator
        if getattr(est, "_prior_transform_module", None) is not None:
            raise ExportError("density estimator: a MixtureDensityEstimator with a prior "
                              "transform (z_score_x=\"transform_to_unconstrained\") is not "
                              "supported yet; build the mdn with z_score_x=\"independent\"")
        net, emb = est.net, est._embedding_net
        shift, scale = est._transform_shift, est._transform_scale
    else:                                           # a bare MultivariateGaussianMDN
        net, emb, shift, scale = est, None, None, None
    parts = list(emb) if isinstance(emb, nn.Sequential) else [emb]
    parts = [p for p in parts if p is not None and not isinstance(p, nn.Identity)]
    std = parts.pop(0) if parts and _cls(parts[0]) == "Standardize" else None
    for p in parts:
        if _cls(p) == "Standardize":
            raise ExportError("embedding net: a Standardize after other layers is not "
                              "supported yet")
    return net, parts, std, shift, scale


def _flat(mods):
    out = []
    for m in mods:
        if _cls(m) == "FCEmbedding":
            m = m.net
        if isinstance(m, nn.Sequential):
            out.extend(_flat(list(m)))
        elif isinstance(m, nn.Identity):
            continue
        else:
            out.append(m)
    return out


def export_mdn(obj, path, *, low=None, high=None, x_names=None, y_names=None,
               description=None, test_inputs=None, n_tests=8, seed=0, rtol=1e-5, atol=1e-5,
               check=True, check_tol=1e-9, source=None):
    """Write an sbi MDN posterior (DirectPosterior) or estimator (MixtureDensityEstimator,
    MultivariateGaussianMDN) as an innserve ``mdn`` checkpoint; see :func:`export_sbi`."""
    what = _cls(obj)
    obj, post, prior_box = _posterior(obj)
    if not is_mdn(obj):
        raise ExportError("density estimator: %s is not a mixture density network" % _cls(obj))
    prior_box = _given_box(prior_box, low, high)
    net, emb, std, shift, scale = _parts(obj)
    for a in ("_logits_layer", "_means_layer", "_unconstrained_diagonal_layer", "_hidden_net"):
        if not hasattr(net, a):
            raise ExportError("density estimator: %s has no %s (not sbi's "
                              "MultivariateGaussianMDN)" % (_cls(net), a))
    K, dx = int(net._num_components), int(net._features)
    emb_mods = _flat(emb)
    hid_mods = _flat([net._hidden_net])
    lins = [m for m in emb_mods + hid_mods if isinstance(m, nn.Linear)]
    if not lins:
        raise ExportError("the MDN's hidden net has no Linear layer")
    dy = int(lins[0].in_features) if std is None or std._mean.numel() <= 1 \
        else int(std._mean.numel())
    ctx = _Ctx.sbi(check_tol)
    layers = []
    for mods, pre, where in ((emb_mods, "_embedding_net.", "embedding net"),
                             (hid_mods, "net._hidden_net.", "the MDN's hidden net")):
        if mods:
            layers += _subnet(ctx, nn.Sequential(*mods), pre, where)["layers"]
    if layers[0]["type"] != "linear":
        raise ExportError("the embedding and hidden nets must start with a Linear layer")

    src = {"framework": "sbi", "exporter": "innserve %s" % __version__,
           "torch": torch.__version__, "sbi": _sbi_version(), "object": what}
    manifest = _manifest_head("mdn", str(description or "sbi %s (mixture density network) exported "
                                     "by innserve" % what), src, source,
                              {"x": dx, "y": dy})
    _add_names(manifest, x_names, y_names, dx, dy)
    stdm = {}
    if shift is not None:
        m = shift.detach().cpu().to(F64).reshape(-1).expand(dx).clone()
        sd = scale.detach().cpu().to(F64).reshape(-1).expand(dx).clone()
        stdm["x"] = {"mean": ctx.add("_transform_shift", m, torch.float32),
                     "std": ctx.add("_transform_scale", sd, torch.float32)}
    if std is not None:
        m = std._mean.detach().cpu().to(F64).reshape(-1).expand(dy).clone()
        sd = std._std.detach().cpu().to(F64).reshape(-1).expand(dy).clone()
        stdm["y"] = {"mean": ctx.add("_embedding_net.0._mean", m, torch.float32),
                     "std": ctx.add("_embedding_net.0._std", sd, torch.float32)}
    stdv = _mixture_standardize(ctx, manifest, stdm, prior_box, dx)
    mix = collections.OrderedDict()
    mix["components"] = K
    mix["epsilon"] = float(net._epsilon)
    mix["diagonal_map"] = "softplus"
    mix["net"] = {"layers": layers}
    mix["logits"] = _lin(ctx, net._logits_layer, "net._logits_layer")
    mix["means"] = _lin(ctx, net._means_layer, "net._means_layer")
    mix["diagonal"] = _lin(ctx, net._unconstrained_diagonal_layer,
                           "net._unconstrained_diagonal_layer")
    if dx > 1:
        mix["upper"] = _lin(ctx, net._upper_layer, "net._upper_layer")
    manifest["mixture"] = mix


    def checker(x, y):
        _check(manifest, ctx.tensors, obj, net, emb_mods, post, x, y, max(check_tol, 1e-6))
    return _mixture_finish(path, ctx, manifest, log_prob, checker if check else None, prior_box,
                           stdv, test_inputs, n_tests, seed, rtol, atol)


def _sbi_version():
    try:
        import sbi
        return str(getattr(sbi, "__version__", "unknown"))
    except Exception:  # noqa: BLE001 - any import failure means "unknown"
        return None


def _close(a, b, tol):
    return _close_flat(a, b.reshape(a.shape), tol)


def _check(manifest, tensors, est, net, emb_mods, post, x, y, tol):
    """The exported math against the real modules in float64, layer by layer."""
    tensors64 = {k: v for k, v in tensors.items()}
    S = ref.Store(tensors64)
    n64 = copy.deepcopy(net).to(F64).eval()
    e64 = nn.Sequential(*[copy.deepcopy(m) for m in emb_mods]).to(F64).eval()
    s = manifest.get("standardize", {}).get("y")
    ys = y if not s else (y - S.T(s["mean"]).reshape(-1)) / S.T(s["std"]).reshape(-1)
    with torch.no_grad():
        h_mod = n64._hidden_net(e64(ys) if emb_mods else ys)
        mog = n64.get_mixture_components(e64(ys) if emb_mods else ys)
    h_mine = ref.subnet(S, manifest["mixture"]["net"], ys)
    if not _close(h_mine, h_mod, tol):
        raise ExportError("mixture.net: the exported layers do not reproduce the embedding and "
                          "hidden nets (max difference %.3g)"
                          % float((h_mine - h_mod.reshape(h_mine.shape)).abs().max()))
    logw, mu, A = mixture(manifest, tensors64, y)
    want_logw = mog.logits - torch.logsumexp(mog.logits, -1, keepdim=True)
    for mine, want, what in ((logw, want_logw, "logits"), (mu, mog.means, "means"),
                             (A, mog.precision_factors, "precision factors")):
        if not _close(mine, want, tol):
            raise ExportError("mixture: the exported heads do not reproduce the MDN's %s (max "
                              "difference %.3g)" % (what, float((mine - want.reshape(mine.shape))
                                                                .abs().max())))
    # the whole density: the estimator's log_prob (and the posterior's, prior box included)
    mine = log_prob(manifest, tensors64, x, y)
    if hasattr(est, "get_uncorrected_mog"):
        est64 = copy.deepcopy(est).to(F64).eval()
        with torch.no_grad():
            want = est64.log_prob(x, condition=y)
        _check_log_prob(manifest, x, mine, want, tol)
    # a draw given its component and normals: mean + A^-1 e (sbi's solve_triangular)
    gen = torch.Generator().manual_seed(1)
    n, K, d = mu.shape
    k = torch.randint(0, K, (n,), generator=gen)
    e = torch.randn(n, d, generator=gen, dtype=F64)
    got = draw(manifest, tensors64, y, k, e)
    rows = torch.arange(n)
    with torch.no_grad():
        v = torch.linalg.solve_triangular(mog.precision_factors[rows, k], e[..., None],
                                          upper=True)[..., 0]
        want = mog.means[rows, k] + v
        if hasattr(est, "_inverse_transform_input"):
            want = est64._inverse_transform_input(want)
    if not _close(got, want, tol):
        raise ExportError("sample: mean + A^-1 e of the exported model does not reproduce "
                          "sbi's draw (max difference %.3g)" % float((got - want).abs().max()))
