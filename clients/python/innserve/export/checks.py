"""innserve.export.checks: the float64 cross-checks run before a file is written: each
user module (FrEIA block, conditioning network, nflows or zuko transform) is run in float64
on the same inputs as innserve's reference math (innserve._reference) on the stored tensors,
and a file whose blocks do not reproduce the modules is refused."""

import copy

import torch

from .. import _reference as ref
from .common import F64, ExportError, _close, _cls, _is
from .freia_fixed import run_special
from .residual import _is_residual
from .zuko import _ZukoEst

def _run_module(ctx, m, h, c, shape=None):
    """Run one user module forward on float64 input (flat rows h, given to the module in its
    per-row `shape` when that is not flat); -> (flat out, log_det or None, float32 used)."""
    try:
        mm = copy.deepcopy(m).to(device="cpu", dtype=F64).eval()
    except Exception:  # noqa: BLE001 - fall back on the module itself in float32
        mm = None
    hh = h if mm is not None else h.float()
    if shape is not None and len(shape) > 1:
        hh = hh.reshape(h.shape[0], *shape)
    cc = None if c is None else (c if mm is not None else c.float())
    dims_c = getattr(m, "dims_c", None)
    if cc is not None and dims_c and isinstance(dims_c[0], (tuple, list)) and len(dims_c[0]) > 1:
        cc = cc.reshape(c.shape[0], *dims_c[0])     # an image condition (flat rows here)
    target = mm if mm is not None else m
    with torch.no_grad():
        out = run_special(target, hh, cc, True)
    if out is not None:
        y, ld = out[0], out[1]
        y = y[0] if isinstance(y, (list, tuple)) else y
        ld = ld.to(F64).reshape(-1) if isinstance(ld, torch.Tensor) else \
            torch.full((h.shape[0],), float(ld), dtype=F64)
        return y.reshape(h.shape[0], -1).to(F64), ld, (mm is None)
    with torch.no_grad():
        if (_is_residual(ctx, m) and not _is(m, "IResNetLayer")) or _cls(m) == "ActNorm1d":
            y = target(hh)
            if isinstance(y, (tuple, list)):
                y = y[0]
            return y.reshape(h.shape[0], -1).to(F64), None, (mm is None)
        jac = not _is(m, "IResNetLayer")
        if cc is not None:
            out = target([hh], c=[cc], rev=False, jac=jac)
        else:
            out = target([hh], rev=False, jac=jac)
    y, ld = out[0], (out[1] if len(out) > 1 else None)
    if isinstance(y, (list, tuple)):
        y = y[0]
    if ld is not None and not isinstance(ld, torch.Tensor):
        ld = torch.full((h.shape[0],), float(ld), dtype=F64)
    elif ld is not None:
        ld = ld.to(F64).reshape(-1).expand(h.shape[0]) if ld.numel() == 1 else ld.to(F64).reshape(-1)
    if not jac:
        ld = None
    return y.reshape(h.shape[0], -1).to(F64), ld, (mm is None)


def _check_block(ctx, link, b, h, c, out, ld, shape=None):
    """Compare the reference block with the user's module on input h (per-row shape
    `shape`)."""
    try:
        y, mld, f32 = _run_module(ctx, link.module, h, c, shape)
    except Exception as e:  # noqa: BLE001
        raise ExportError("%s: running the module to check the export failed: %s: %s "
                          "(pass check=False to skip the check)" % (link.label, type(e).__name__, e))
    tol = 1e-4 if f32 else ctx.opts["check_tol"]
    if y.shape != out.shape:
        raise ExportError("%s: the module returned shape %s, the exported block %s"
                          % (link.label, tuple(y.shape), tuple(out.shape)))
    if not _close(out, y, tol):
        raise ExportError(
            "%s: the exported block does not reproduce the module's own forward (max |diff| "
            "%.3g): the module may be a modified subclass or use an option the engine does not "
            "implement (pass check=False to skip this check)" % (link.label, float((out - y).abs().max())))
    skip_ld = b["type"] in ("IResNetBlock", "LearnedElementwiseScaling") and mld is None
    if mld is not None and not skip_ld:
        if not _close(ld, mld, tol * max(1, h.shape[1])):
            raise ExportError("%s: the exported block's log-det differs from the module's (max "
                              "|diff| %.3g)" % (link.label, float((ld - mld).abs().max())))


def _check_conditions(ctx, man_conds, conds_ref, ys):
    for k, c in enumerate(man_conds):
        cond, user_net = c["_src"]
        v = ys
        with torch.no_grad():
            try:
                if user_net is not None:
                    v = copy.deepcopy(user_net).to(F64).eval()(v)
                if cond[0] == "ff":
                    v = copy.deepcopy(cond[1].module).to(F64).eval()(v)
            except Exception as e:  # noqa: BLE001
                raise ExportError("conditions[%d]: running the conditioning network failed: %s"
                                  % (k, e))
        if c.get("broadcast"):       # the vector repeated at every position
            P = 1
            for s in c["broadcast"]:
                P *= int(s)
            v = v[:, :, None].expand(-1, -1, P).reshape(v.shape[0], -1)
        if not _close(conds_ref[k], v.to(F64), ctx.opts["check_tol"]):
            raise ExportError("conditions[%d]: the exported conditioning network does not "
                              "reproduce the module's output" % k)


def _check_flow(ctx, manifest, mods, flow, emb_mod, x, y, tol):
    """Every block against its module in float64, then the whole log_prob and inverse."""
    M = ref.Model(manifest, ctx.tensors)
    S = ref.Store(ctx.tensors)
    conds = M.conditions(y) if y is not None else []
    c = conds[0] if conds else None
    if emb_mod is not None:
        e64 = copy.deepcopy(emb_mod).to(F64).eval()
        with torch.no_grad():
            got = e64(M.std_y(y))
        if not _close(c, got, tol):
            raise ExportError("embedding net: the exported layers do not reproduce the module")
    h, _ = M.std_x(x)
    for (where, t), b in zip(mods, manifest["blocks"]):
        t64 = copy.deepcopy(t).to(F64).eval()
        with torch.no_grad():
            if isinstance(flow, _ZukoEst):
                zt = t64(c if "cond" in b else None)
                out, ld = zt.call_and_ladj(h)
                back = zt.inv(out)
                ldb = -zt.call_and_ladj(back)[1]
            else:
                out, ld = t64(h, context=c) if "cond" in b else t64(h)
                back, ldb = t64.inverse(out, context=c) if "cond" in b else t64.inverse(out)
        mine, mld = ref.block(S, b, h, c, False)
        mback, mldb = ref.block(S, b, out, c, True)
        for a, w, what in ((mine, out, "output"), (mld, ld, "log-det"), (mback, back, "inverse"),
                           (mldb, ldb, "inverse log-det")):
            if not _close(a, w.reshape(a.shape), tol):
                raise ExportError("%s: the exported block does not reproduce the module's %s "
                                  "(max difference %.3g)" % (where, what,
                                                            float((a - w.reshape(a.shape)).abs().max())))
        h = out
    with torch.no_grad():
        if isinstance(flow, _ZukoEst):
            z64 = copy.deepcopy(flow.net).to(F64).eval()
            e = flow._embedding_net
            cz = None
            if y is not None:
                cz = y if e is None else copy.deepcopy(e).to(F64).eval()(y)
            want = z64(cz).log_prob(x)
        else:
            f64 = copy.deepcopy(flow).to(F64).eval()
            want = f64.log_prob(x, context=y) if y is not None else f64.log_prob(x)
    mine = M.log_prob(x, y)
    if not _close(mine, want, tol):
        raise ExportError("log_prob: the exported model does not reproduce the estimator "
                          "(max difference %.3g)" % float((mine - want).abs().max()))
