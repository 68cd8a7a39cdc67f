"""innserve.export.manifest: the parts of a manifest every exporter writes the same way
(names, standardize, a box prior, test inputs and the embedded test vectors computed by the
reference math) and the writer of the checkpoint (docs/checkpoint-format.md) with its
ExportResult."""

import collections
import json
import math

import torch

from .. import _safetensors
from .common import F64, ExportError, ExportResult, _close, _tensor

def _std_pair(v, n, what):
    if v is None:
        return None
    if isinstance(v, dict):
        mean, std = v.get("mean"), v.get("std")
    else:
        mean, std = v
    mean = _tensor(mean, what + " mean").reshape(-1)
    std = _tensor(std, what + " std").reshape(-1)
    if mean.numel() == 1 and n > 1:
        mean = mean.expand(n)
    if std.numel() == 1 and n > 1:
        std = std.expand(n)
    if mean.numel() != n or std.numel() != n:
        raise ExportError("standardize %s: mean and std need %d values (got %d and %d)"
                          % (what, n, mean.numel(), std.numel()))
    if not bool((std.float() > 0).all()) or not bool(torch.isfinite(mean).all()):
        raise ExportError("standardize %s: std must be > 0 and mean finite" % what)
    return mean, std


def _names(v, n, what):
    if v is None:
        return None
    v = [str(s) for s in v]
    if len(v) != n:
        raise ExportError("%s: %d names for %d columns" % (what, len(v), n))
    return v


def _add_names(manifest, x_names, y_names, dx, dy):
    """Checks x_names / y_names against the widths and writes manifest["names"] when any."""
    names = {}
    xn, yn = _names(x_names, dx, "x_names"), _names(y_names, dy, "y_names")
    if xn:
        names["x"] = xn
    if yn:
        names["y"] = yn
    if names:
        manifest["names"] = names


def _add_prior_box(manifest, prior, dx):
    """Checks a (low, high) box prior over the dx parameters and writes manifest["prior"]."""
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


def _given_box(prior, low, high):
    """The box prior of an export: ``prior`` (the posterior's, or None), or the ``low`` and
    ``high`` arguments (both or neither; not with a posterior's prior) as float64 vectors."""
    if low is None and high is None:
        return prior
    if low is None or high is None:
        raise ExportError("low and high: give both prior bounds, or neither")
    if prior is not None:
        raise ExportError("low and high: the posterior carries its prior already")
    return (_tensor(low, "low").reshape(-1), _tensor(high, "high").reshape(-1))


def _mask_prior(manifest, x, lp):
    """lp with -inf where a row of x lies outside the manifest's box prior (lp when none)."""
    pr = manifest.get("prior")
    if pr:
        lo, hi = torch.tensor(pr["low"], dtype=F64), torch.tensor(pr["high"], dtype=F64)
        inside = ((x >= lo) & (x <= hi)).all(1)
        lp = torch.where(inside, lp, torch.full_like(lp, -math.inf))
    return lp


def _check_log_prob(manifest, x, mine, want, tol):
    """Raises unless the exported log_prob (mine) is the estimator's (want, the box prior
    applied here): -inf at the same rows, the finite ones within tol."""
    want = _mask_prior(manifest, x, want)
    fin = torch.isfinite(want)
    if not torch.equal(fin, torch.isfinite(mine)) or \
            not _close(mine[fin], want[fin].reshape(mine[fin].shape), tol):
        raise ExportError("log_prob: the exported model does not reproduce the estimator "
                          "(max difference %.3g)" % float((mine - want)[fin].abs().max()))


def _box_test_inputs(prior, n, seed, dx, dy, std):
    """Test inputs drawn from a box prior: x uniform in the box, y (when dy) standard normal
    mapped through the y standardization; a dict {"x", "y"} (y None without dy)."""
    gen = torch.Generator().manual_seed(int(seed))
    lo, hi = prior
    xt = lo + (hi - lo) * torch.rand(n, dx, generator=gen, dtype=F64)
    yt = None
    if dy:
        yt = torch.randn(n, dy, generator=gen, dtype=F64)
        if "y" in std:
            yt = std["y"][0] + std["y"][1] * yt
    return {"x": xt, "y": yt}


def _add_standardize(ctx, manifest, standardize, dx, dy):
    std = {}
    standardize = dict(standardize or {})
    unknown = set(standardize) - {"x", "y"}
    if unknown:
        raise ExportError("standardize: unknown keys %s (use 'x' and 'y')" % sorted(unknown))
    out = {}
    for which, n in (("x", dx), ("y", dy)):
        if standardize.get(which) is None:
            continue
        if not n:
            raise ExportError("standardize: this model has no %s" % which)
        mean, sd = _std_pair(standardize[which], n, which)
        out[which] = {"mean": ctx.add("std.%s.mean" % which, mean, torch.float32),
                      "std": ctx.add("std.%s.std" % which, sd, torch.float32)}
        std[which] = (ctx.tensors[out[which]["mean"]].to(F64), ctx.tensors[out[which]["std"]].to(F64))
    if out:
        manifest["standardize"] = out
    return std


def _test_inputs(test_inputs, n, seed, dx, dy, std):
    gen = torch.Generator().manual_seed(int(seed))
    x = y = None
    if test_inputs is not None:
        if isinstance(test_inputs, dict):
            x, y = test_inputs.get("x"), test_inputs.get("y")
        elif isinstance(test_inputs, (tuple, list)) and len(test_inputs) == 2 and dy and \
                not isinstance(test_inputs[0], (int, float)):
            x, y = test_inputs
        else:
            x = test_inputs
        x = _tensor(x, "test_inputs x").reshape(-1, dx)
        n = x.shape[0]
        if y is not None:
            y = _tensor(y, "test_inputs y").reshape(-1, dy)
            if y.shape[0] == 1 and n > 1:
                y = y.expand(n, dy)
            if y.shape[0] != n:
                raise ExportError("test_inputs: %d x rows but %d y rows" % (n, y.shape[0]))
    if x is None:
        x = torch.randn(n, dx, generator=gen, dtype=F64)
        if "x" in std:
            x = std["x"][0] + std["x"][1] * x
    if dy and y is None:
        y = torch.randn(n, dy, generator=gen, dtype=F64)
        if "y" in std:
            y = std["y"][0] + std["y"][1] * y
    if n < 1 or n > 4096:
        raise ExportError("test_inputs: 1 to 4096 rows needed")
    # the engine receives float32 inputs: expectations are computed from the rounded values
    x = x.to(torch.float32).to(F64)
    if y is not None:
        y = y.to(torch.float32).to(F64)
    return x, y


def _test_vectors(ctx, manifest, M, x, y, rtol, atol):
    kind = manifest["kind"]
    f = M.forward(x, y)
    tests = {"x": x}
    man = {"x": ctx.add("test.x", x, F64)}
    if kind == "cinn":
        tests["y"] = y
        man["y"] = ctx.add("test.y", y, F64)
    for k in ("z", "y_out", "log_det"):
        if k in f:
            v = f[k].detach()
            if not bool(torch.isfinite(v).all()):
                raise ExportError("the model gives non-finite %s on the test inputs" % k)
            tests[k] = v
            man[k] = ctx.add("test." + k, v, F64)
    if kind in ("flow", "cinn"):
        # a block whose inverse is inexact by design (InvAutoFC's transpose): the engine
        # then checks the inverse against what this inverse gives
        with torch.no_grad():
            xi, _ = M.inverse(f["z"], y if kind == "cinn" else None)
        if bool(torch.isfinite(xi).all()) and \
                float(((xi - x).abs() / (1 + x.abs())).max()) > 1e-6:
            tests["x_inv"] = xi.detach()
            man["x_inv"] = ctx.add("test.x_inv", xi, F64)
    if kind == "inn":
        with torch.no_grad():
            xi, _ = M.inverse(f["z"], f["y_out"])
        if bool(torch.isfinite(xi).all()):
            tests["x_inv"] = xi.detach()
            man["x_inv"] = ctx.add("test.x_inv", xi, F64)
    man["rtol"] = float(rtol)
    man["atol"] = float(atol)
    manifest["tests"] = man
    return tests


def _mixture_tests(ctx, manifest, x, y, lp, rtol, atol):
    """The test vectors of a mixture density model (x, y, log_prob) into manifest["tests"]."""
    manifest["tests"] = {"x": ctx.add("test.x", x, torch.float64),
                         "y": ctx.add("test.y", y, torch.float64),
                         "log_prob": ctx.add("test.log_prob", lp, torch.float64),
                         "rtol": rtol, "atol": atol}
    return {"x": x, "y": y, "log_prob": lp}


def _manifest_head(kind, description, src, source, dims):
    """The head every manifest starts with, in this key order: format, version, kind,
    description, source (``src`` updated with the caller's ``source``) and dims."""
    manifest = collections.OrderedDict()
    manifest["format"] = "innserve-manifest"
    manifest["version"] = 1
    manifest["kind"] = kind
    manifest["description"] = description
    if source:
        src.update(source)
    manifest["source"] = src
    manifest["dims"] = dims
    return manifest


def _mixture_standardize(ctx, manifest, stdm, prior_box, dx):
    """manifest["standardize"] from ``stdm`` (side -> {"mean", "std"} tensor names; left out
    when empty), then the box prior (None: none); returns each standardized side's
    float64 (mean, std)."""
    stdv = {}
    if stdm:
        manifest["standardize"] = stdm
        for k, v in stdm.items():
            stdv[k] = (ctx.tensors[v["mean"]].to(F64), ctx.tensors[v["std"]].to(F64))
    if prior_box is not None:
        _add_prior_box(manifest, prior_box, dx)
    return stdv


def _mixture_finish(path, ctx, manifest, log_prob, check, prior_box, stdv, test_inputs, n_tests,
                    seed, rtol, atol):
    """The end of a mixture export: the test inputs (drawn in the box prior when none are
    given), ``check(x, y)`` at them (None: no check), the test vectors from the reference
    ``log_prob(manifest, tensors, x, y)``, and the written checkpoint's ExportResult."""
    dx, dy = manifest["dims"]["x"], manifest["dims"]["y"]
    if test_inputs is None and prior_box is not None:
        test_inputs = _box_test_inputs(prior_box, n_tests, seed, dx, dy, stdv)
    x, y = _test_inputs(test_inputs, n_tests, seed, dx, dy, stdv)
    if check is not None:
        check(x, y)
    lp = log_prob(manifest, ctx.tensors, x, y)
    tests = _mixture_tests(ctx, manifest, x, y, lp, rtol, atol)
    return _finish(path, ctx, manifest, tests)


def _finish(path, ctx, manifest, tests):
    """Writes the checkpoint and returns its ExportResult (with the export's notes)."""
    _write(path, manifest, ctx.tensors)
    res = ExportResult(path, json.loads(json.dumps(manifest)), dict(ctx.tensors), tests)
    res.notes = list(ctx.notes)
    return res


def _write(path, manifest, tensors):
    text = json.dumps(manifest, separators=(",", ":"), allow_nan=False)
    _safetensors.write(path, tensors, {"format": "innserve", "manifest": text})
