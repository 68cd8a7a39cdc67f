"""innserve.export.sbi: export an sbi posterior (or its nflows or zuko density estimator)
as an innserve checkpoint.

    from innserve.export import export_sbi
    export_sbi(posterior, "npe.safetensors", x_names=[...], y_names=[...])

What is supported today: sbi's ``maf`` (the NPE default), ``nsf``, ``maf_rqs``, ``zuko_maf``
and ``zuko_nsf`` estimators, i.e. an ``NFlowsFlow`` (or a bare nflows ``Flow``) whose transform
is a CompositeTransform of

* an optional first ``PointwiseAffineTransform`` (sbi's z-scoring of theta) -> the manifest's
  ``standardize.x`` (mean = -shift/scale, std = 1/scale; its log-det -sum log std is the
  engine's);
* ``MaskedAffineAutoregressiveTransform`` (MADE with sequential degrees, tanh or relu,
  feed-forward or residual blocks, no batch norm) -> ``MaskedAffineAutoregressive``;
  ``InverseTransform`` of one -> the same with ``inverse: true`` (IAF);
* ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform`` (linear tails) ->
  ``MaskedRQSAutoregressive``;
* ``PiecewiseRationalQuadraticCouplingTransform`` (linear tails, a ``ResidualNet`` or sbi's
  ``ContextSplineMap`` conditioner) -> ``RQSCoupling``; ``LULinear`` -> ``LULinear``;
* ``RandomPermutation`` / ``ReversePermutation`` -> ``PermuteRandom``;

with a ``StandardNormal`` base; or a ``ZukoFlow`` (or a bare zuko ``Flow``) whose transforms
are an optional first ``UnconditionalTransform`` of an ``AffineTransform`` (sbi's z-scoring)
and zuko ``MaskedAutoregressiveTransform`` / ``ElementWiseTransform`` with
``MonotonicAffineTransform`` (MAF) or ``MonotonicRQSTransform`` (NSF) ->
``ZukoMaskedAutoregressive``, over a standard normal base.  zuko does not store its ``slope``:
it is the univariate constructor's ``slope=`` keyword when one was given, else zuko's
default for the installed version (:func:`default_slope`).  The embedding net is ``Identity``,
sbi's ``Standardize`` (-> ``standardize.y``), an ``nn.Sequential`` of Linear layers and
activations or sbi's ``FCEmbedding`` (-> the cinn's condition network), or ``Standardize``
followed by one of those.  The prior is a ``BoxUniform`` (a DirectPosterior carries it) or
bounds given as ``low=`` and ``high=`` -> the manifest's ``prior`` box.

sbi's mixture density networks (``mdn``: a MixtureDensityEstimator, or a posterior holding
one) are exported by innserve.export.mdn as the ``mdn`` kind, and sbi's ``made`` (an
NFlowsFlow over a MADEMoGWrapper) by innserve.export.mogmade as the ``mdn`` kind with a
mixture of type ``made``.

Everything else (other zuko flows or univariate maps, other nflows layers, other
embedding nets, other priors) is refused with an :class:`~innserve.export.ExportError` naming
the module: "not supported yet".

Before writing, every block is run through innserve's float64 reference math
(innserve._reference) on the stored (float32-rounded) tensors and compared with the real
nflows or zuko module run in float64 on the same input; the whole chain's log_prob and inverse are
compared with the estimator's too.  The embedded test vectors are the reference math's, and
the library versions (sbi, nflows or zuko, torch) are recorded in ``source``.
"""


import torch
import torch.nn as nn

from .. import _reference as ref
from .._version import __version__
from .checks import _check_flow
from .common import F64, ExportError, _Ctx, _cls, _names_mro, _refuse, _version
from .manifest import (_add_names, _add_prior_box, _box_test_inputs, _finish, _given_box,
                       _manifest_head, _test_inputs, _test_vectors)
from .nflows import _SUPPORTED, _chain, _context_width, _features
from .subnets import _subnet
from .zuko import _ZukoEst, _zuko_chain

def _box(prior):
    """(low, high) float64 of a BoxUniform-like prior, or an ExportError."""
    base = getattr(prior, "base_dist", None)
    lo = getattr(base, "low", None)
    hi = getattr(base, "high", None)
    if lo is None or hi is None or _cls(base) != "Uniform":
        raise ExportError("prior: %s is not supported yet (a box prior, sbi's BoxUniform, is; "
                          "or export the estimator with low= and high=)" % _cls(prior))
    return lo.detach().cpu().to(F64).reshape(-1), hi.detach().cpu().to(F64).reshape(-1)


def _resolve(obj):
    """-> (nflows Flow, prior box or None, what it was)."""
    prior = None
    what = _cls(obj)
    if hasattr(obj, "posterior_estimator") and hasattr(obj, "prior"):
        if _cls(obj) != "DirectPosterior":
            raise ExportError("%s is not supported yet: export a DirectPosterior (sbi's NPE "
                              "posterior) or its density estimator" % _cls(obj))
        prior = _box(obj.prior)
        obj = obj.posterior_estimator
    names = _names_mro(obj)
    if "ZukoUnconditionalFlow" in names:
        _refuse("density estimator", obj)
    if "ZukoFlow" in names:
        return _ZukoEst(obj.net, obj._embedding_net), prior, what
    if type(obj).__module__.startswith("zuko"):
        if "Flow" not in names:
            _refuse("density estimator", obj)
        return _ZukoEst(obj, None), prior, what
    if "MixtureDensityEstimator" in names or "MultivariateGaussianMDN" in names or \
            "MDN" in _cls(obj):
        _refuse("density estimator", obj)
    if "NFlowsFlow" in names:
        obj = obj.net
    if not (hasattr(obj, "_transform") and hasattr(obj, "_distribution")):
        _refuse("density estimator", obj)
    return obj, prior, what


def _embedding(ctx, flow, dy):
    """-> (standardize.y pair or None, condition net (manifest subnet) or None, modules)."""
    emb = getattr(flow, "_embedding_net", None)
    parts = list(emb) if isinstance(emb, nn.Sequential) and len(emb) and \
        _cls(emb[0]) == "Standardize" else [emb]
    std_y, net = None, None
    if parts and _cls(parts[0]) == "Standardize":
        s = parts.pop(0)
        mean = s._mean.detach().cpu().to(F64).reshape(-1).expand(dy).clone()
        sd = s._std.detach().cpu().to(F64).reshape(-1).expand(dy).clone()
        std_y = (mean, sd)
    rest = [p for p in parts if p is not None and not isinstance(p, nn.Identity)]
    if len(rest) > 1:
        rest = [nn.Sequential(*rest)]
    if rest:
        e = rest[0]
        if _cls(e) == "FCEmbedding":
            e = e.net
        if not isinstance(e, (nn.Sequential, nn.Linear)):
            raise ExportError("embedding net: %s is not supported yet (an MLP: nn.Sequential of "
                              "Linear layers and activations, or sbi's FCEmbedding)" % _cls(e))
        net = _subnet(ctx, e, "net._embedding_net.", "embedding net")
    return std_y, net, rest[0] if rest else None


def export_sbi(obj, path, *, low=None, high=None, x_names=None, y_names=None,
               description=None, test_inputs=None, n_tests=8, seed=0, rtol=1e-4, atol=1e-5,
               check=True, check_tol=1e-9, source=None):
    """Write an sbi posterior (DirectPosterior with a BoxUniform prior) or density estimator
    (NFlowsFlow, or an nflows Flow; prior bounds as ``low``/``high``, optional) as an innserve
    checkpoint at ``path``.  innserve's x is sbi's theta, its y sbi's observation x.

    Returns an :class:`~innserve.export.ExportResult`.  Raises ExportError for what innserve
    cannot serve (naming the module) or when a check fails."""
    from . import mdn, mogmade
    if mogmade.is_mogmade(getattr(obj, "posterior_estimator", obj)):
        return mogmade.export_mogmade(obj, path, low=low, high=high, x_names=x_names,
                                      y_names=y_names, description=description,
                                      test_inputs=test_inputs, n_tests=n_tests, seed=seed,
                                      rtol=rtol, atol=atol, check=check, check_tol=check_tol,
                                      source=source)
    if mdn.is_mdn(getattr(obj, "posterior_estimator", obj)):
        return mdn.export_mdn(obj, path, low=low, high=high, x_names=x_names,
                              y_names=y_names, description=description,
                              test_inputs=test_inputs, n_tests=n_tests, seed=seed,
                              rtol=rtol, atol=atol, check=check, check_tol=check_tol,
                              source=source)
    flow, prior, what = _resolve(obj)
    prior = _given_box(prior, low, high)
    zuko = isinstance(flow, _ZukoEst)
    versions = {"sbi": _version("sbi")}
    versions["zuko" if zuko else "nflows"] = _version("zuko" if zuko else "nflows")
    return _export_flow(flow, prior, what, path, versions, _check_flow, x_names=x_names,
                        y_names=y_names, description=description, test_inputs=test_inputs,
                        n_tests=n_tests, seed=seed, rtol=rtol, atol=atol, check=check,
                        check_tol=check_tol, source=source)


def _export_flow(flow, prior, what, path, versions, checker, *, x_names, y_names, description,
                 test_inputs, n_tests, seed, rtol, atol, check, check_tol, source):
    """The part of :func:`export_sbi` after the object is resolved, shared with
    export_sbi_state_dict (innserve.export.statedict): ``flow`` is an nflows Flow or a
    _ZukoEst (real modules, or the stand-ins statedict builds from a state_dict), ``prior``
    (low, high) or None, ``versions`` the library versions for ``source`` (zuko's also
    decides its default slope), ``checker`` the cross-check run when ``check``."""
    ctx = _Ctx.sbi(check_tol)
    zuko = isinstance(flow, _ZukoEst)
    if zuko:
        std_x, blocks, mods, dx, cond, dy = _zuko_chain(ctx, flow.net, versions.get("zuko"))
    else:
        dist = getattr(flow, "_distribution", None)
        if _cls(dist) != "StandardNormal":
            _refuse("base distribution", dist)
        # refuse what is not supported first, naming the module (an NSF's spline, LU layers)
        tr = flow._transform
        ts = list(tr._transforms) if _cls(tr) == "CompositeTransform" else [tr]
        for i, t in enumerate(ts):
            inner = t._transform if _cls(t) == "InverseTransform" else t
            if _cls(inner) not in _SUPPORTED:
                _refuse("_transform._transforms.%d (%s)" % (i, _cls(t)), inner)
        # theta's width and the condition's from the transforms, then the embedding's input
        dx = next((w for w in map(_features, ts) if w is not None), None)
        if dx is None:
            raise ExportError("the flow has no transform to read theta's width from")
        cw = next((c for c in map(_context_width, ts) if c is not None), (False, 0))
        cond, dy = cw
    std_y = net = emb_mod = None
    if cond:
        # the embedding may change the width: read dy from its first layer or Standardize
        emb = getattr(flow, "_embedding_net", None)
        for mod in (emb.modules() if emb is not None else []):
            if _cls(mod) == "Standardize":
                if mod._mean.numel() > 1:
                    dy = int(mod._mean.numel())
                    break
            elif isinstance(mod, nn.Linear):
                dy = int(mod.weight.shape[1])
                break
        std_y, net, emb_mod = _embedding(ctx, flow, dy)
    if not zuko:    # after the embedding: its tensors come first in the file
        std_x, blocks, mods = _chain(ctx, flow._transform, cond)

    src = {"framework": "sbi", "exporter": "innserve %s" % __version__,
           "torch": torch.__version__, "sbi": versions.get("sbi")}
    if zuko:
        src["zuko"] = versions.get("zuko")
    else:
        src["nflows"] = versions.get("nflows")
    src["object"] = what
    manifest = _manifest_head("cinn" if cond else "flow",
                              str(description or "sbi %s exported by innserve" % what), src,
                              source, {"x": dx, "y": dy} if cond else {"x": dx})
    _add_names(manifest, x_names, y_names, dx, dy)
    std = {}
    if std_x is not None or std_y is not None:
        manifest["standardize"] = {}
    if std_x is not None:
        manifest["standardize"]["x"] = {"mean": ctx.add("std.x.mean", std_x[0], torch.float32),
                                        "std": ctx.add("std.x.std", std_x[1], torch.float32)}
        std["x"] = (ctx.tensors["std.x.mean"].to(F64), ctx.tensors["std.x.std"].to(F64))
    if std_y is not None:
        manifest["standardize"]["y"] = {"mean": ctx.add("std.y.mean", std_y[0], torch.float32),
                                        "std": ctx.add("std.y.std", std_y[1], torch.float32)}
        std["y"] = (ctx.tensors["std.y.mean"].to(F64), ctx.tensors["std.y.std"].to(F64))
    if prior is not None:
        _add_prior_box(manifest, prior, dx)
    if cond:
        manifest["conditions"] = [{"net": net}]
    manifest["blocks"] = blocks

    if test_inputs is None and prior is not None:
        test_inputs = _box_test_inputs(prior, n_tests, seed, dx, dy if cond else 0, std)
        if not cond:
            test_inputs = test_inputs["x"]
    x, y = _test_inputs(test_inputs, n_tests, seed, dx, dy, std)
    if check:
        checker(ctx, manifest, mods, flow, emb_mod, x, y, max(check_tol, 1e-6))
    M = ref.Model(manifest, ctx.tensors)
    tests = _test_vectors(ctx, manifest, M, x, y, rtol, atol)
    return _finish(path, ctx, manifest, tests)
