"""Export an sbi posterior (or its nflows density estimator) as an innserve checkpoint.

    from innserve.export import export_sbi
    export_sbi(posterior, "npe.safetensors", x_names=[...], y_names=[...])

What is supported today: sbi's ``maf`` estimator (the NPE default of sbi 0.22-0.27), i.e. an
``NFlowsFlow`` (or a bare nflows ``Flow``) whose transform is a CompositeTransform of

* an optional first ``PointwiseAffineTransform`` (sbi's z-scoring of theta) -> the manifest's
  ``standardize.x`` (mean = -shift/scale, std = 1/scale; its log-det -sum log std is the
  engine's);
* ``MaskedAffineAutoregressiveTransform`` (MADE with sequential degrees, tanh or relu,
  feed-forward or residual blocks, no batch norm) -> ``MaskedAffineAutoregressive``;
  ``InverseTransform`` of one -> the same with ``inverse: true`` (IAF);
* ``RandomPermutation`` / ``ReversePermutation`` -> ``PermuteRandom``;

with a ``StandardNormal`` base, and an embedding net that is ``Identity``, sbi's
``Standardize`` (-> ``standardize.y``), an ``nn.Sequential`` of Linear layers and activations
or sbi's ``FCEmbedding`` (-> the cinn's condition network), or ``Standardize`` followed by one
of those.  The prior is a ``BoxUniform`` (a DirectPosterior carries it) or bounds given as
``low=`` and ``high=`` -> the manifest's ``prior`` box.

Everything else (neural spline flows, MDNs, zuko flows, LU layers, other embedding nets,
other priors) is refused with an :class:`~innserve.export.ExportError` naming the module:
"not supported yet".

Before writing, every block is run through innserve's float64 reference math
(innserve._reference) on the stored (float32-rounded) tensors and compared with the real
nflows module run in float64 on the same input; the whole chain's log_prob and inverse are
compared with the estimator's too.  The embedded test vectors are the reference math's, and
the library versions (sbi, nflows, torch) are recorded in ``source``.
"""

import collections
import copy
import json

import torch
import torch.nn as nn

from . import _reference as ref
from . import export as _ex
from ._version import __version__

F64 = torch.float64
ExportError = _ex.ExportError
_SUPPORTED = ("PointwiseAffineTransform", "MaskedAffineAutoregressiveTransform",
              "RandomPermutation", "ReversePermutation", "Permutation")


def _cls(obj):
    return type(obj).__name__


def _names_mro(obj):
    return [k.__name__ for k in type(obj).__mro__]


def _refuse(what, obj):
    raise ExportError("%s: %s is not supported yet (innserve exports sbi's MAF: nflows "
                      "MaskedAffineAutoregressiveTransform + RandomPermutation with a "
                      "StandardNormal base)" % (what, _cls(obj)))


def _version(modname):
    try:
        mod = __import__(modname)
    except Exception:  # noqa: BLE001 - any import failure means "unknown"
        return None
    v = getattr(mod, "__version__", None)
    if v is None:   # nflows keeps it in nflows.version
        try:
            v = __import__(modname + ".version", fromlist=["__version__"]).__version__
        except Exception:  # noqa: BLE001
            v = "unknown"
    return str(v)


# ---------------------------------------------------------------------------------------
# the objects: posterior -> estimator -> nflows Flow
# ---------------------------------------------------------------------------------------

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
    if "ZukoFlow" in names or "ZukoUnconditionalFlow" in names or \
            type(obj).__module__.startswith("zuko"):
        _refuse("density estimator", obj)
    if "MixtureDensityEstimator" in names or "MultivariateGaussianMDN" in names or \
            "MDN" in _cls(obj):
        _refuse("density estimator", obj)
    if "NFlowsFlow" in names:
        obj = obj.net
    if not (hasattr(obj, "_transform") and hasattr(obj, "_distribution")):
        _refuse("density estimator", obj)
    return obj, prior, what


# ---------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------

def _lin(ctx, mod, name, masked=True):
    o = {"weight": ctx.add(name + ".weight", mod.weight.detach().float(), torch.float32)}
    if getattr(mod, "bias", None) is not None:
        o["bias"] = ctx.add(name + ".bias", mod.bias.detach().float(), torch.float32)
    if masked:
        o["mask"] = ctx.add(name + ".mask", mod.mask.detach().float(), torch.float32)
    return o


def _act_name(f, where):
    n = getattr(f, "__name__", _cls(f))
    if n in ("tanh", "relu"):
        return n
    raise ExportError("%s: MADE activation %s is not supported yet (tanh or relu)" % (where, n))


def _made(ctx, net, pre, cond, where):
    if _cls(net) != "MADE":
        _refuse(where + ".autoregressive_net", net)
    residual = bool(getattr(net, "use_residual_blocks", False))
    m = {"activation": _act_name(net.activation, where), "residual": residual,
         "initial": _lin(ctx, net.initial_layer, pre + "initial_layer")}
    has_ctx = getattr(net, "context_layer", None) is not None
    if cond != has_ctx:
        raise ExportError("%s: the MADE %s a context layer but the flow %s a condition" %
                          (where, "has" if has_ctx else "lacks", "has no" if has_ctx else "has"))
    if has_ctx:
        m["context"] = _lin(ctx, net.context_layer, pre + "context_layer", False)
    blocks = []
    for j, blk in enumerate(net.blocks):
        bp = "%sblocks.%d." % (pre, j)
        if getattr(blk, "batch_norm", None) is not None or \
                getattr(blk, "batch_norm_layers", None) is not None:
            raise ExportError("%s.blocks.%d: batch norm in a MADE is not supported yet" % (where, j))
        if residual:
            b = {"linear0": _lin(ctx, blk.linear_layers[0], bp + "linear_layers.0"),
                 "linear1": _lin(ctx, blk.linear_layers[1], bp + "linear_layers.1")}
            if getattr(blk, "context_layer", None) is not None:
                b["context"] = _lin(ctx, blk.context_layer, bp + "context_layer", False)
        else:
            b = {"linear": _lin(ctx, blk.linear, bp + "linear")}
        blocks.append(b)
    m["blocks"] = blocks
    m["final"] = _lin(ctx, net.final_layer, pre + "final_layer")
    return m


def _chain(ctx, flow, cond):
    """-> (standardize.x pair or None, manifest blocks, modules (for the checks))."""
    tr = flow._transform
    ts = list(tr._transforms) if _cls(tr) == "CompositeTransform" else [tr]
    std_x, blocks, mods = None, [], []
    for i, t in enumerate(ts):
        pre = "net._transform._transforms.%d." % i
        where = "_transform._transforms.%d (%s)" % (i, _cls(t))
        if _cls(t) == "PointwiseAffineTransform":
            if i != 0:
                raise ExportError("%s: a PointwiseAffineTransform is only supported as the "
                                  "first transform (sbi's z-scoring of theta)" % where)
            shift = t._shift.detach().cpu().to(F64).reshape(-1)
            scale = t._scale.detach().cpu().to(F64).reshape(-1)
            if bool((scale <= 0).any()):
                raise ExportError("%s: a scale <= 0 is not supported" % where)
            std_x = (-shift / scale, 1.0 / scale)
            continue
        inverse = _cls(t) == "InverseTransform"
        inner = t._transform if inverse else t
        if _cls(inner) == "MaskedAffineAutoregressiveTransform":
            ipre = pre + ("_transform." if inverse else "")
            b = {"type": "MaskedAffineAutoregressive"}
            if cond:
                b["cond"] = 0
            if inverse:
                b["inverse"] = True
            b["made"] = _made(ctx, inner.autoregressive_net, ipre + "autoregressive_net.",
                              cond, where)
            b["scale"] = {"type": "nflows", "min_scale": float(getattr(inner, "_epsilon", 1e-3))}
        elif not inverse and _cls(t) in ("RandomPermutation", "ReversePermutation",
                                         "Permutation"):
            b = {"type": "PermuteRandom",
                 "perm": ctx.add(pre + "_permutation", t._permutation.detach(), torch.int64)}
        else:
            _refuse(where, t)
        blocks.append(b)
        mods.append((where, t))
    if not blocks:
        raise ExportError("the flow has no transforms innserve could export")
    return std_x, blocks, mods


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
        net = _ex._subnet(ctx, e, "net._embedding_net.", "embedding net")
    return std_y, net, rest[0] if rest else None


# ---------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------

def _check(ctx, manifest, mods, flow, emb_mod, x, y, tol):
    """Every block against its module in float64, then the whole log_prob and inverse."""
    M = ref.Model(manifest, ctx.tensors)
    S = ref.Store(ctx.tensors)
    conds = M.conditions(y) if y is not None else []
    c = conds[0] if conds else None
    if emb_mod is not None:
        e64 = copy.deepcopy(emb_mod).to(F64).eval()
        with torch.no_grad():
            got = e64(M.std_y(y))
        if not _ex._close(c, got, tol):
            raise ExportError("embedding net: the exported layers do not reproduce the module")
    h, _ = M.std_x(x)
    for (where, t), b in zip(mods, manifest["blocks"]):
        t64 = copy.deepcopy(t).to(F64).eval()
        with torch.no_grad():
            out, ld = t64(h, context=c) if "cond" in b else t64(h)
            back, ldb = t64.inverse(out, context=c) if "cond" in b else t64.inverse(out)
        mine, mld = ref.block(S, b, h, c, False)
        mback, mldb = ref.block(S, b, out, c, True)
        for a, w, what in ((mine, out, "output"), (mld, ld, "log-det"), (mback, back, "inverse"),
                           (mldb, ldb, "inverse log-det")):
            if not _ex._close(a, w.reshape(a.shape), tol):
                raise ExportError("%s: the exported block does not reproduce the module's %s "
                                  "(max difference %.3g)" % (where, what,
                                                            float((a - w.reshape(a.shape)).abs().max())))
        h = out
    f64 = copy.deepcopy(flow).to(F64).eval()
    with torch.no_grad():
        want = f64.log_prob(x, context=y) if y is not None else f64.log_prob(x)
    mine = M.log_prob(x, y)
    if not _ex._close(mine, want, tol):
        raise ExportError("log_prob: the exported model does not reproduce the estimator "
                          "(max difference %.3g)" % float((mine - want).abs().max()))


# ---------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------

def export_sbi(obj, path, *, low=None, high=None, x_names=None, y_names=None,
               description=None, test_inputs=None, n_tests=8, seed=0, rtol=1e-4, atol=1e-5,
               check=True, check_tol=1e-9, source=None):
    """Write an sbi posterior (DirectPosterior with a BoxUniform prior) or density estimator
    (NFlowsFlow, or an nflows Flow; prior bounds as ``low``/``high``, optional) as an innserve
    checkpoint at ``path``.  innserve's x is sbi's theta, its y sbi's observation x.

    Returns an :class:`~innserve.export.ExportResult`.  Raises ExportError for what innserve
    cannot serve (naming the module) or when a check fails."""
    flow, prior, what = _resolve(obj)
    if low is not None or high is not None:
        if low is None or high is None:
            raise ExportError("low and high: give both prior bounds, or neither")
        if prior is not None:
            raise ExportError("low and high: the posterior carries its prior already")
        prior = (_ex._tensor(low, "low").reshape(-1), _ex._tensor(high, "high").reshape(-1))
    ctx = _ex._Ctx({"check_tol": check_tol, "allow_non_contractive": False,
                    "iresnet_logdet": "exact", "iresnet_series_terms": 10,
                    "residual_blocks": None, "freia_version": "auto"})
    dist = getattr(flow, "_distribution", None)
    if _cls(dist) != "StandardNormal":
        _refuse("base distribution", dist)
    # refuse what is not supported first, naming the module (an NSF's spline, LU layers)
    tr = flow._transform
    for i, t in enumerate(list(tr._transforms) if _cls(tr) == "CompositeTransform" else [tr]):
        inner = t._transform if _cls(t) == "InverseTransform" else t
        if _cls(inner) not in _SUPPORTED:
            _refuse("_transform._transforms.%d (%s)" % (i, _cls(t)), inner)
    # widths from the first MADE (or a permutation) and the embedding
    dx = None
    for t in flow._transform.modules():
        if _cls(t) == "MaskedAffineAutoregressiveTransform":
            dx = int(t.autoregressive_net.initial_layer.weight.shape[1])
            break
        if _cls(t) in ("RandomPermutation", "ReversePermutation"):
            dx = int(t._permutation.numel())
            break
    if dx is None:
        raise ExportError("the flow has no MaskedAffineAutoregressiveTransform or permutation "
                          "to read its width from")
    made0 = next((t.autoregressive_net for t in flow._transform.modules()
                  if _cls(t) == "MaskedAffineAutoregressiveTransform"), None)
    cond = made0 is not None and getattr(made0, "context_layer", None) is not None
    dy = 0
    std_y = net = emb_mod = None
    if cond:
        cw = int(made0.context_layer.weight.shape[1])
        dy = cw
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
    std_x, blocks, mods = _chain(ctx, flow, cond)

    manifest = collections.OrderedDict()
    manifest["format"] = "innserve-manifest"
    manifest["version"] = 1
    manifest["kind"] = "cinn" if cond else "flow"
    manifest["description"] = str(description or "sbi %s (MAF) exported by innserve" % what)
    src = {"framework": "sbi", "exporter": "innserve %s" % __version__,
           "torch": torch.__version__, "sbi": _version("sbi"), "nflows": _version("nflows"),
           "object": what}
    if source:
        src.update(source)
    manifest["source"] = src
    manifest["dims"] = {"x": dx, "y": dy} if cond else {"x": dx}
    names = {}
    xn, yn = _ex._names(x_names, dx, "x_names"), _ex._names(y_names, dy, "y_names")
    if xn:
        names["x"] = xn
    if yn:
        names["y"] = yn
    if names:
        manifest["names"] = names
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
        lo, hi = prior
        if lo.numel() != dx or hi.numel() != dx:
            raise ExportError("prior: %d lower and %d upper bounds for %d parameters" %
                              (lo.numel(), hi.numel(), dx))
        lo32, hi32 = lo.to(torch.float32), hi.to(torch.float32)
        if not bool(torch.isfinite(lo32).all() and torch.isfinite(hi32).all()) or \
                bool((lo32 >= hi32).any()):
            raise ExportError("prior: the bounds must be finite float32 values with low < high")
        manifest["prior"] = {"type": "box", "low": [float(v) for v in lo32],
                             "high": [float(v) for v in hi32]}
    if cond:
        manifest["conditions"] = [{"net": net}]
    manifest["blocks"] = blocks

    if test_inputs is None and prior is not None:
        gen = torch.Generator().manual_seed(int(seed))
        lo, hi = prior
        xt = lo + (hi - lo) * torch.rand(n_tests, dx, generator=gen, dtype=F64)
        yt = None
        if cond:
            yt = torch.randn(n_tests, dy, generator=gen, dtype=F64)
            if "y" in std:
                yt = std["y"][0] + std["y"][1] * yt
        test_inputs = {"x": xt, "y": yt} if cond else xt
    x, y = _ex._test_inputs(test_inputs, n_tests, seed, dx, dy, std)
    if check:
        _check(ctx, manifest, mods, flow, emb_mod, x, y, max(check_tol, 1e-6))
    M = ref.Model(manifest, ctx.tensors)
    tests = _ex._test_vectors(ctx, manifest, M, x, y, rtol, atol)
    _ex._write(path, manifest, ctx.tensors)
    res = _ex.ExportResult(path, json.loads(json.dumps(manifest)), dict(ctx.tensors), tests)
    res.notes = list(ctx.notes)
    return res
