"""innserve.export.inn: :func:`export`, the entry point for PyTorch / FrEIA models: a
chain of invertible modules (kind flow, cinn or inn) or a plain MLP (kind mlp), converted,
cross-checked, given its test vectors and written."""

import copy
import math

import torch
import torch.nn as nn

from .. import _reference as ref
from .._version import __version__
from .checks import _check_block, _check_conditions
from .common import F64, ExportError, _Ctx, _close
from .freia import FREIA_VERSIONS, _convert, _freia_info, _resolve_clamp_formula
from .graph import _chain, _infer_width, _on_cpu
from .manifest import (_add_names, _add_standardize, _finish, _manifest_head, _test_inputs,
                       _test_vectors)
from .subnets import _net_out_width, _plain_mlp, _subnet, _subnet_widths

def _prod(shape):
    p = 1
    for v in shape:
        p *= int(v)
    return p


def _bcast(broadcast_conditions, k):
    if broadcast_conditions is True:
        return True
    return k in (broadcast_conditions or ())


def export(model, path, kind=None, *, conditions=None, cond_net=None, dims=None, layout=None,
           x_names=None, y_names=None, standardize=None, description="",
           freia_version="auto", test_inputs=None, n_tests=8, seed=0, rtol=1e-4, atol=1e-4,
           inn_sigma=None, spectral_sigma="stored", spectral_coeff=None, residual_blocks=None,
           iresnet_logdet="exact", iresnet_series_terms=10, source=None, check=True,
           check_tol=1e-5, allow_non_contractive=False, broadcast_conditions=None,
           shape=None, image=None):
    """Write ``model`` to ``path`` as an innserve checkpoint; returns an :class:`ExportResult`.

    model
        FrEIA ``SequenceINN`` / ``GraphINN`` (a chain is written as "blocks", anything else
        as a "graph" with Split / Concat nodes and several outputs); a list of invertible
        modules (items may
        be ``(module, cond_index)``); Residual Flows ``SequentialFlow``; or, with
        ``kind="mlp"``, an ``nn.Sequential`` of Linear layers and activations.
    kind
        ``"flow"``, ``"cinn"``, ``"inn"`` or ``"mlp"``; default: ``mlp`` for an
        ``nn.Sequential`` of Linear/activation layers, ``cinn`` when a block reads a
        condition, else ``flow``.  ``inn`` must be asked for.
    conditions
        cinn: one entry per condition index k (SequenceINN ``cond=k``, GraphINN ConditionNode
        order): ``None`` (c_k is the standardized y) or an ``nn.Sequential`` conditioning
        network applied to the standardized y.  Default: every condition is y.
        ``cond_net=net`` is short for ``conditions=[net]``.
    dims
        ``{"y": n}`` for a cinn whose y width cannot be inferred; for ``inn`` the Ardizzone
        slices ``{"x", "y", "z", "pad_x", "pad_y"}`` with x + pad_x = z + pad_y + y = width
        (missing pads are derived).  ``layout`` gives the segment order, default
        ``{"input": ["x", "pad"], "output": ["z", "pad", "y"]}``.
    x_names, y_names, description
        Shown in the metadata and CSV headers.
    standardize
        ``{"x": (mean, std), "y": (mean, std)}`` (either may be left out): the model was
        trained on (x - mean) / std; the engine works in physical units.
    freia_version
        AllInOneBlock clamp formula: ``"head"`` (FrEIA >= 2023-08, s = a*tanh(x/a)),
        ``"0.2"`` (PyPI 0.2, s = a*tanh(x)) or ``"auto"`` (default: run each block both ways
        and keep the formula that reproduces it; if that cannot decide, read the module's
        source; else HEAD with a warning).
    test_inputs
        x rows (or ``(x, y)`` / ``{"x": .., "y": ..}``) for the embedded test vectors;
        default ``n_tests`` rows drawn with ``seed`` around the standardization.
    rtol, atol
        Tolerances written into the manifest for the engine's self-test at load.
    inn_sigma
        inn: ``{"sigma_y": .., "sigma_pad": ..}`` for log_prob.
    spectral_sigma
        i-ResNet spectral norms: ``"stored"`` (default) uses sigma = u^T W v from the stored
        u, v as the model's eval forward does; ``"exact"`` recomputes sigma by SVD (use it
        for Residual Flows EMA checkpoints, whose u, v belong to the non-EMA weights; the
        module cross-check is then skipped for those blocks).
    spectral_coeff
        Override the coefficient c of soft spectral normalisation W / max(1, sigma/c).
    residual_blocks
        ``{class name: attribute}`` for your own residual block classes computing
        x + getattr(block, attribute)(x).
    iresnet_logdet, iresnet_series_terms
        i-ResNet log-determinant the engine reports: ``"exact"`` (default; the true
        log|det(I + J_g)|) or ``"series"`` (the truncated power series with
        ``iresnet_series_terms`` terms and exact traces, to reproduce the densities of a
        model trained with that estimator; needs Lip(g) < 1).
    check
        Run the model's own modules and refuse a file that does not reproduce them.
    broadcast_conditions
        Image models (input shape (C, H, W) or (C, L)): FrEIA concatenates an image block's
        condition with the image along channels, so it is an image of the block's H, W.  By
        default each condition is that image itself (y has C_c * H * W values, the manifest's
        ``conditions[k].shape``).  List the condition indices k (or ``True`` for all) whose
        image is a vector repeated at every position, fed to the model as
        ``y[:, :, None, None].expand(-1, -1, H, W)``: y is then the vector (the manifest's
        ``conditions[k].broadcast``).
    shape
        The per-row input shape ``(C, H, W)`` or ``(C, L)`` of a model that does not record
        it (a list of modules, Residual Flows), e.g. convolutional i-ResNet blocks
        ``Residual(g)``; FrEIA models carry their own.
    allow_non_contractive
        A FrEIA ``IResNetLayer`` is invertible only while its residual branch g is a
        contraction (Lip(g) < 1), which FrEIA enforces only when ``lipschitz_correction()``
        is called.  By default a block whose Lipschitz bound (the product of its layers'
        exact spectral norms and its activations' bounds, as the daemon's certificate
        computes it) is not below 1 is refused, naming the block and the bound; with
        ``True`` it is exported with a warning (``warnings.warn``) and the daemon certifies
        it "invertible: NO".
    image
        For an image model (input shape (C, H, W)): ``{"low": 0.0, "high": 1.0, "levels":
        256}``, the value range of the pixels in x's units and their number of quantization
        levels (the manifest's ``image``): the server draws [low, high] as 0..255 in PNG
        sample grids and reports bits per dimension with the bin width (high - low) /
        levels.
    """
    image_range = image  # the name image is the "model takes images" flag below
    if freia_version not in FREIA_VERSIONS:
        raise ExportError("freia_version must be one of %s" % (FREIA_VERSIONS,))
    if spectral_sigma not in ("stored", "exact"):
        raise ExportError("spectral_sigma must be 'stored' or 'exact'")
    if iresnet_logdet not in ("exact", "series") or not 1 <= int(iresnet_series_terms) <= 1000:
        raise ExportError("iresnet_logdet must be 'exact' or 'series' with 1 to 1000 terms")
    if kind not in (None, "flow", "cinn", "inn", "mlp"):
        raise ExportError("kind must be flow, cinn, inn or mlp (got %r)" % (kind,))
    ctx = _Ctx({"freia_version": freia_version, "spectral_sigma": spectral_sigma,
                "spectral_coeff": spectral_coeff, "residual_blocks": residual_blocks,
                "iresnet_logdet": iresnet_logdet, "iresnet_series_terms": iresnet_series_terms,
                "check_tol": check_tol, "allow_non_contractive": bool(allow_non_contractive)})
    if cond_net is not None:
        if conditions is not None:
            raise ExportError("give either conditions or cond_net, not both")
        conditions = [cond_net]
    dims = dict(dims or {})

    model = _on_cpu(model)
    if conditions is not None:
        conditions = [_on_cpu(c) for c in conditions]
    if kind is None and isinstance(model, (nn.Sequential, nn.Linear)) and _plain_mlp(model):
        kind = "mlp"
    if kind == "mlp":
        return _export_mlp(ctx, model, path, dims, x_names, y_names, standardize, description,
                           test_inputs, n_tests, seed, rtol, atol, source, check)

    row_shape = shape
    links, shape, framework, topo = _chain(model)
    if not links and topo is None:
        raise ExportError("the model has no blocks")
    if row_shape is not None:
        if shape is not None and tuple(shape) != tuple(row_shape):
            raise ExportError("shape=%s, but the model's input has shape %s"
                              % (tuple(row_shape), tuple(shape)))
        shape = tuple(int(v) for v in row_shape)
    if shape is not None and len(shape) > 3:
        raise ExportError("the model's input has shape %s: only vectors, (C, L) and (C, H, W) "
                          "rows are supported" % (shape,))
    width = (int(torch.tensor(shape).prod()) if shape else
             _infer_width(links[0].module, residual_blocks))
    image = shape is not None and len(shape) > 1
    if width is None:
        if "x" in dims and kind != "inn":
            width = int(dims["x"])
        elif "x" in dims and kind == "inn":
            width = int(dims["x"]) + int(dims.get("pad_x", 0))
        else:
            raise ExportError("cannot tell the width of the model's input: pass dims={'x': n}")
    uses_cond = any(l.conds for l in links)
    if kind is None:
        kind = "cinn" if uses_cond else "flow"
    if kind in ("flow", "inn") and uses_cond:
        bad = next(l for l in links if l.conds)
        raise ExportError("%s reads a condition but kind is %s (use kind='cinn')" % (bad.label, kind))
    if kind == "cinn" and not uses_cond:
        raise ExportError("kind cinn but no block reads a condition")

    # ---- blocks ----
    blocks = []
    for l in links:
        b = _convert(ctx, l)
        l.block = b
        blocks.append(b)

    # ---- conditions (cinn) ----
    man_conds, cond_keys = [], {}
    dy = None
    if kind == "cinn":
        conditions = list(conditions or [])
        uses = [(l, cd) for l in links for cd in l.conds]   # every condition a block reads
        kmax = max(cd[-1] if cd[0] == "ff" else cd[1] for _, cd in uses)
        while len(conditions) <= kmax:
            conditions.append(None)
        dy = dims.get("y")
        for l, cd in uses:          # infer y width
            if dy is not None:
                break
            k = cd[1] if cd[0] == "c" else cd[2]
            if conditions[k] is None and cd[0] == "c":
                dc = getattr(l.module, "dims_c", None)
                if dc and len(dc) == len(l.conds):
                    dcj = dc[l.conds.index(cd)]
                    img = image and len(dcj) > 1 and not _bcast(broadcast_conditions, k)
                    dy = int(_prod(dcj) if img else dcj[0])
            elif conditions[k] is not None:
                dy = _subnet_widths(conditions[k])[0]
        if dy is None:
            for l, cd in uses:
                if cd[0] == "ff":
                    dy = _subnet_widths(cd[1].module)[0]
        if dy is None:
            raise ExportError("cannot tell the width of y: pass dims={'y': n}")
        dy = int(dy)
        for l in links:
            if not l.conds:
                continue
            idx = []
            for cd in l.conds:
                key = (cd[0], cd[-1] if cd[0] == "c" else id(cd[1]))
                if key not in cond_keys:
                    k = cd[1] if cd[0] == "c" else cd[2]
                    layers = []
                    if conditions[k] is not None:
                        layers += _subnet(ctx, conditions[k], "cond.%d." % k,
                                          "conditions[%d]" % k)["layers"]
                    if cd[0] == "ff":
                        ff = cd[1]
                        layers += _subnet(ctx, ff.module, "cond_ff.%s." % ff.name,
                                          "FeedForwardNode %r" % ff.name)["layers"]
                    cond_keys[key] = len(man_conds)
                    entry = {"net": {"layers": layers} if layers else None,
                             "_src": (cd, conditions[k])}
                    dcs = getattr(l.module, "dims_c", None)
                    j = len(idx)
                    if image and dcs and len(dcs) == len(l.conds) and len(dcs[j]) > 1:
                        if _bcast(broadcast_conditions, k):   # a vector at every position
                            entry["broadcast"] = [int(v) for v in dcs[j][1:]]
                        else:                                   # an image
                            entry["shape"] = [int(v) for v in dcs[j]]
                    man_conds.append(entry)
                idx.append(cond_keys[key])
            l.block["cond"] = idx[0] if len(idx) == 1 else idx
            # width check, per condition
            want = getattr(l.module, "dims_c", None)
            for j, ck in enumerate(idx):
                entry = man_conds[ck]
                have = dy if entry["net"] is None else _net_out_width(ctx, entry["net"])
                if want and len(want) == len(idx):
                    w = _prod(want[j]) if "shape" in entry else int(want[j][0])
                    if w != have:
                        raise ExportError("%s expects a condition of width %d but condition %d "
                                          "has width %d" % (l.label, w, ck, have))

    # ---- dims / layout ----
    D = int(width)
    if kind == "flow":
        man_dims = {"x": D}
        dx = D
    elif kind == "cinn":
        man_dims = {"x": D, "y": dy}
        dx = D
    else:
        try:
            dx, dyy, dz = int(dims["x"]), int(dims["y"]), int(dims["z"])
        except KeyError as e:
            raise ExportError("kind inn needs dims with x, y and z (missing %s)" % e)
        px = int(dims.get("pad_x", D - dx))
        py = int(dims.get("pad_y", D - dz - dyy))
        if dx + px != D or dz + py + dyy != D or min(dx, px, dz, py, dyy) < 0:
            raise ExportError("inn dims x %d + pad_x %d and z %d + pad_y %d + y %d must both "
                              "equal the network width %d" % (dx, px, dz, py, dyy, D))
        man_dims = {"x": dx, "y": dyy, "z": dz, "pad_x": px, "pad_y": py}
        dy = dyy

    src = {"framework": framework, "exporter": "innserve %s" % __version__,
           "torch": torch.__version__}
    fi = _freia_info(links)
    if fi:
        src.update(fi)
    manifest = _manifest_head(kind, str(description or ""), src, source, man_dims)
    if shape is not None and len(shape) > 1:
        if kind not in ("flow", "cinn"):
            raise ExportError("the model's input has shape %s: kind %s takes flat rows only"
                              % (shape, kind))
        manifest["shape"] = {"x": [int(v) for v in shape]}
    ir = image_range
    if ir is not None:
        if shape is None or len(shape) != 3:
            raise ExportError("image= needs a model whose input has shape (C, H, W), got %s"
                              % (shape,))
        extra = set(ir) - {"low", "high", "levels"}
        if extra or "low" not in ir or "high" not in ir:
            raise ExportError("image must be {'low': ..., 'high': ..., 'levels': ...} (levels "
                              "optional, default 256)")
        lo, hi, lv = float(ir["low"]), float(ir["high"]), int(ir.get("levels", 256))
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and 2 <= lv <= 65536):
            raise ExportError("image needs finite low < high and 2 <= levels <= 65536")
        manifest["image"] = {"low": lo, "high": hi, "levels": lv}
    _add_names(manifest, x_names, y_names, dx, dy or 0)
    std = _add_standardize(ctx, manifest, standardize, dx, dy)
    if kind == "cinn":
        manifest["conditions"] = [{k: v for k, v in c.items() if k != "_src"} for c in man_conds]
    if kind == "inn":
        lay = dict(layout or {})
        manifest["layout"] = {"input": list(lay.get("input", ["x", "pad"])),
                              "output": list(lay.get("output", ["z", "pad", "y"]))}
        if inn_sigma:
            manifest["inn"] = {k: float(v) for k, v in dict(inn_sigma).items()}
    if topo is None:
        manifest["blocks"] = blocks
    else:
        manifest["graph"] = {"nodes": [{"name": n.name, "inputs": n.inputs,
                                        "block": n.link.block if n.kind == "block" else n.block}
                                       for n in topo.nodes],
                             "outputs": topo.outputs}

    # ---- test vectors (and the cross-check) ----
    x, y = _test_inputs(test_inputs, n_tests, seed, dx, dy if kind == "cinn" else 0, std)
    S = ref.Store(ctx.tensors)
    M = ref.Model(manifest, ctx.tensors)
    with torch.no_grad():
        xs, _ = M.std_x(x)
    if kind == "inn":
        h = M.assemble("input", {"x": xs}, x.shape[0])
        conds_ref = []
    else:
        h = xs
        conds_ref = M.conditions(y) if kind == "cinn" else []
        if kind == "cinn" and check:
            _check_conditions(ctx, man_conds, conds_ref, M.std_y(y))
    def visit(l, b, h, c, shp):
        if b["type"] == "AllInOneBlock":
            _resolve_clamp_formula(ctx, l, b, S, h, c, shp)
        out, ld = ref.block(S, b, h, c, False, shp)
        if check and not (b["type"] == "IResNetBlock" and spectral_sigma == "exact"):
            _check_block(ctx, l, b, h, c, out, ld, shp)
        return out.detach(), ld

    if topo is None:
        shapes = M.shapes() if kind != "inn" else [None] * len(blocks)
        for l, b, shp in zip(links, blocks, shapes):
            h, _ = visit(l, b, h, ref.block_cond(conds_ref, b), shp)
    else:
        link_of = {n.name: n.link for n in topo.nodes if n.kind == "block"}
        with torch.no_grad():
            ref.graph(S, manifest["graph"], h, conds_ref, False,
                      (h.shape[1],) if kind == "inn" else tuple(shape or (D,)),
                      visit=lambda nd, b, hh, c, shp: visit(link_of[nd["name"]], b, hh, c, shp))
    for c in man_conds:
        c.pop("_src", None)
    tests = _test_vectors(ctx, manifest, M, x, y, rtol, atol)
    return _finish(path, ctx, manifest, tests)


def _export_mlp(ctx, model, path, dims, x_names, y_names, standardize, description,
                test_inputs, n_tests, seed, rtol, atol, source, check):
    net = _subnet(ctx, model, "network.", "network")
    dx = int(ctx.tensors[net["layers"][0]["weight"]].shape[1])
    dy = _net_out_width(ctx, net)
    src = {"framework": "torch", "exporter": "innserve %s" % __version__, "torch": torch.__version__}
    manifest = _manifest_head("mlp", str(description or ""), src, source, {"x": dx, "y": dy})
    _add_names(manifest, x_names, y_names, dx, dy)
    std = _add_standardize(ctx, manifest, standardize, dx, dy)
    manifest["network"] = net
    x, _ = _test_inputs(test_inputs, n_tests, seed, dx, 0, std)
    M = ref.Model(manifest, ctx.tensors)
    if check:
        xs, _ = M.std_x(x)
        want = ref.subnet(ref.Store(ctx.tensors), net, xs)
        with torch.no_grad():
            got = copy.deepcopy(model).to(F64).eval()(xs)
        if not _close(want, got.to(F64), ctx.opts["check_tol"]):
            raise ExportError("network: the exported layers do not reproduce the module's output")
    tests = _test_vectors(ctx, manifest, M, x, None, rtol, atol)
    return _finish(path, ctx, manifest, tests)
