"""innserve.export.freia_fixed: FrEIA's modules beyond the coupling family -> manifest
blocks: the shape-aware fixed blocks (Fixed1x1Conv, HaarDownsampling / HaarUpsampling,
IRevNetDownsampling / IRevNetUpsampling), the invertible-autoencoder layers (InvAutoFC,
InvAutoConv2D, InvAutoAct, InvAutoActTwoSided), ElementwiseRationalQuadraticSpline,
LinearSpline, GaussianMixtureModel and Inverse.  Modules are recognised by class name
(never by importing FrEIA); the field meanings are in docs/checkpoint-format.md."""

import torch

from .common import ExportError, _mro
from .subnets import _subnet


def _shape_in(m):
    d = getattr(m, "dims_in", None)
    if not d:
        return None
    first = d[0] if isinstance(d[0], (tuple, list)) else d
    return tuple(int(v) for v in first)


def _blk_conv1x1(ctx, m, link):
    return {"type": "Fixed1x1Conv", "M": ctx.add(link.prefix + "M", m.M)}


def _blk_haar(ctx, m, link):
    ty = "HaarUpsampling" if "HaarUpsampling" in _mro(m) else "HaarDownsampling"
    return {"type": ty, "order_by_wavelet": bool(m.permute),
            "rebalance": float(2.0 * m.fac_fwd)}


def _blk_irevnet(ctx, m, link):
    ty = "IRevNetUpsampling" if "IRevNetUpsampling" in _mro(m) else "IRevNetDownsampling"
    return {"type": ty, "legacy_backend": bool(m.legacy_backend)}


def _note_invauto(ctx, link):
    ctx.notes.append("%s: an invertible-autoencoder layer inverts by its transpose (exact only "
                     "for an orthogonal W) and reports a log-det of 0, as FrEIA does"
                     % link.label)


def _blk_invautofc(ctx, m, link):
    W = m.weights.detach()
    if W.shape[0] != W.shape[1]:
        raise ExportError("%s: InvAutoFC with dims_out = %d != %d inputs is not a bijection"
                          % (link.label, W.shape[0], W.shape[1]))
    _note_invauto(ctx, link)
    p = link.prefix
    return {"type": "InvAutoFC", "weights": ctx.add(p + "weights", W),
            "bias": ctx.add(p + "bias", m.bias)}


def _blk_invautoconv(ctx, m, link):
    conv = m.conv2d
    if tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) or conv.groups != 1:
        raise ExportError("%s: InvAutoConv2D with stride, dilation or groups other than 1 is "
                          "not supported" % link.label)
    pad = m.padding
    pad = list(pad) if isinstance(pad, (tuple, list)) else int(pad)
    _note_invauto(ctx, link)
    p = link.prefix
    return {"type": "InvAutoConv2D", "padding": pad,
            "weight": ctx.add(p + "conv2d.weight", conv.weight),
            "bias": ctx.add(p + "bias", m.bias)}


def _blk_invautoact(ctx, m, link):
    p = link.prefix
    if "InvAutoActTwoSided" in _mro(m):
        return {"type": "InvAutoActTwoSided", "alpha_pos": ctx.add(p + "alpha_pos", m.alpha_pos),
                "alpha_neg": ctx.add(p + "alpha_neg", m.alpha_neg)}
    return {"type": "InvAutoAct", "alpha": ctx.add(p + "alpha", m.alpha)}


def _spline_fields(sb, link, rq):
    tails = "identity" if bool(sb.identity_tails) else "affine"
    keys = set(getattr(sb, "parameter_counts", {}).keys())
    want = {"widths", "heights"} | ({"total_width"} if tails == "identity" else
                                    {"bottom", "left"}) | ({"deltas"} if rq else set())
    if keys and keys != want:
        raise ExportError("%s: spline parameters %s are not those of FrEIA's %s spline"
                          % (link.label, sorted(keys), "rational-quadratic" if rq else "linear"))
    dc = getattr(sb, "domain_clamping", None)
    return {"bins": int(sb.bins), "tails": tails,
            "default_domain": [float(v) for v in sb.default_domain.reshape(-1)],
            "min_bin_sizes": [float(v) for v in sb.min_bin_sizes.reshape(-1)],
            "domain_clamping": None if dc is None else float(dc)}


def _blk_erqs(ctx, m, link):
    b = {"type": "ElementwiseRationalQuadraticSpline"}
    b.update(_spline_fields(m, link, True))
    if bool(getattr(m, "conditional", False)):
        b["subnet"] = _subnet(ctx, m.subnet, link.prefix + "subnet.", link.label + ".subnet")
    else:
        b["spline_parameters"] = ctx.add(link.prefix + "spline_parameters",
                                         m.spline_parameters)
    return b


def _blk_linspline(ctx, m, link):
    shape = _shape_in(m) or (None,)
    S = 1
    for v in shape[1:]:
        S *= v
    b = {"type": "LinearSpline", "split": int(m.split_len1) * S}
    b.update(_spline_fields(m.spline_base, link, False))
    b["subnet1"] = _subnet(ctx, m.subnet1, link.prefix + "subnet1.", link.label + ".subnet1")
    b["subnet2"] = _subnet(ctx, m.subnet2, link.prefix + "subnet2.", link.label + ".subnet2")
    return b


def _blk_gmm(ctx, m, link):
    """The engine serves FrEIA's GaussianMixtureModel with one condition row w | mu | U | i
    (docs/checkpoint-format.md), but the exporter derives every condition from the whole
    observation y, so the module's four conditions of different widths cannot be written:
    refused with that reason (the manifest can be written by hand)."""
    dc = getattr(m, "dims_c", None) or []
    widths = ", ".join(str(int(torch.tensor(s).prod())) for s in dc) or "none"
    raise ExportError("%s: GaussianMixtureModel takes four conditions [w, mu, U, i] (widths "
                      "%s), and the exporter derives every condition from the whole "
                      "observation y; write its manifest by hand: one condition row w | mu | "
                      "U | i (docs/checkpoint-format.md, GaussianMixtureModel)"
                      % (link.label, widths))


def _blk_inverse(ctx, m, link):
    from .freia import _convert          # the wrapped module is any convertible block
    from .graph import _Link
    inner = m.module
    il = _Link(inner, link.prefix + "module.", "%s.module (%s)" % (link.label, type(inner).__name__))
    b = {"type": "Inverse", "block": _convert(ctx, il)}
    shape = _shape_in(inner)
    if shape is not None:
        b["block_shape"] = list(shape)
    return b


CONVERTERS = [
    ("Fixed1x1Conv", _blk_conv1x1),
    ("HaarUpsampling", _blk_haar), ("HaarDownsampling", _blk_haar),
    ("IRevNetUpsampling", _blk_irevnet), ("IRevNetDownsampling", _blk_irevnet),
    ("InvAutoFC", _blk_invautofc), ("InvAutoConv2D", _blk_invautoconv),
    ("InvAutoActTwoSided", _blk_invautoact), ("InvAutoAct", _blk_invautoact),
    ("ElementwiseRationalQuadraticSpline", _blk_erqs),
    ("LinearSpline", _blk_linspline),
    ("GaussianMixtureModel", _blk_gmm),
    ("Inverse", _blk_inverse),
]


def run_special(m, hh, cc, jac):
    """Run the modules whose call convention is not FrEIA's usual one on float64 input;
    -> the module's output tuple, or None for the others.  GaussianMixtureModel takes the
    condition row split into [w, mu, U, i]; ElementwiseRationalQuadraticSpline casts its
    condition to float32 (`.float()`), so its float64 subnet gets it back as float64."""
    names = _mro(m)
    if "GaussianMixtureModel" in names and cc is not None:
        D = int(m.x_dims)
        K = (cc.shape[1] - 1) // (1 + D + D * (D + 1) // 2)
        nu = D * (D + 1) // 2
        parts = [cc[:, :K], cc[:, K:K + K * D].reshape(-1, K, D),
                 cc[:, K + K * D:K + K * D + K * nu].reshape(-1, K, nu),
                 cc[:, -1].round().long()]
        return m([hh], c=parts, rev=False, jac=jac)
    if "ElementwiseRationalQuadraticSpline" in names and getattr(m, "conditional", False):
        h = m.subnet.register_forward_pre_hook(lambda mod, inp: tuple(t.to(hh.dtype) for t in inp))
        try:
            return m([hh], c=[cc], rev=False, jac=jac)
        finally:
            h.remove()
    return None
