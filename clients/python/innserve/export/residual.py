"""innserve.export.residual: invertible residual blocks x + g(x) (i-ResNet, Residual Flows,
FrEIA IResNetLayer, innserve's own Residual) -> ``IResNetBlock`` (engine/blocks/iresnet.c),
with the contraction check of FrEIA's IResNetLayer."""

import inspect
import os
import warnings

import torch
import torch.nn as nn

from .common import F64, ExportError, _cls, _mro
from .subnets import _lipschitz_bound, _subnet

_RESIDUAL_CLASSES = {"IResNetLayer": "residual", "iResBlock": "nnet", "Residual": "g"}


class Residual(nn.Module):
    """An invertible residual block x -> x + g(x) (i-ResNet), for models you build yourself.

    ``g`` is an ``nn.Sequential`` of Linear layers (plain, or with i-ResNet's
    ``spectral_norm_fc`` hook, PyTorch's spectral norm, or Residual Flows' induced-norm
    linears) and activations.  It is invertible when Lip(g) < 1; the engine certifies that
    from the exported weights (GET /v1/models/{m}/certificate).
    """

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, x):
        return x + self.g(x)


def _is_residual(ctx, m):
    names = _mro(m)
    res = dict(_RESIDUAL_CLASSES)
    res.update(ctx.opts["residual_blocks"] or {})
    return any(n in names for n in res)


def _caller_stacklevel():
    """The warnings.warn stacklevel, for its caller in this module, that names the first
    frame outside this package (the user's export() call)."""
    here = os.path.dirname(os.path.abspath(__file__))
    f, level = inspect.currentframe().f_back, 1
    while f is not None and os.path.dirname(os.path.abspath(f.f_code.co_filename)) == here:
        f, level = f.f_back, level + 1
    return level


def _check_contraction(ctx, net, link, shape=None):
    """FrEIA IResNetLayer: refuse (or, with allow_non_contractive, warn about) a residual
    branch that is not a contraction."""
    L = _lipschitz_bound(ctx, net, shape)
    if L < 1.0:
        return
    norms = ", ".join("%.3g" % float(torch.linalg.matrix_norm(ctx.tensors[l["weight"]].to(F64), 2))
                      for l in net["layers"] if l["type"] == "linear")
    if not norms:
        norms = "(convolutions: the norms of their operators on the block's rows)"
    what = ("%s: the residual branch is not a contraction: its Lipschitz bound is %.4g >= 1 "
            "(spectral norms of its Linear layers %s), so x + g(x) is not certified invertible "
            "and the daemon's certificate says \"invertible: NO\"" % (link.label, L, norms))
    if ctx.opts["allow_non_contractive"]:
        warnings.warn(what + " (exported anyway: allow_non_contractive=True)",
                      stacklevel=_caller_stacklevel())
        ctx.notes.append(what)
        return
    raise ExportError(what + ". FrEIA's IResNetLayer rescales its weights only when "
                      "lipschitz_correction() is called: call it on every IResNetLayer after "
                      "each optimizer step (and before exporting), or pass "
                      "allow_non_contractive=True to export the block anyway")


def _blk_residual(ctx, m, link, attr):
    shape = None
    if _cls(m) == "IResNetLayer" or "IResNetLayer" in _mro(m):
        dims = getattr(m, "dims_in", None)     # IResNetLayer keeps dims_in[0]: (C, H, W)
        if dims is not None and len(dims) > 1:
            shape = tuple(int(v) for v in dims)
    g = getattr(m, attr, None)
    if g is None:
        raise ExportError("%s: residual block without its residual branch %r" % (link.label, attr))
    net = _subnet(ctx, g, link.prefix + attr + ".", "%s.%s" % (link.label, attr),
                  allow_preact=True)
    if _cls(m) == "IResNetLayer" or "IResNetLayer" in _mro(m):
        _check_contraction(ctx, net, link, shape)
    b = {"type": "IResNetBlock", "subnet": net}
    if ctx.opts["iresnet_logdet"] == "series":
        b["logdet"] = "series"
        b["series_terms"] = int(ctx.opts["iresnet_series_terms"])
    return b
