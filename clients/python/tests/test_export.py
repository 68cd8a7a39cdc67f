"""Exporter tests: for every supported block and model kind, build a torch model, export
it, and check that the C engine reproduces forward, inverse and log-det within 1e-5
(relative, with an absolute floor of 1e-5; log-dets 1e-5 x width):

* `innctl verify FILE` runs the embedded test vectors (written with rtol = atol = 1e-5);
* a live daemon serving all exported files answers /forward and /inverse on fresh rows,
  compared with the model's own PyTorch forward/inverse in float64.

The models are built from the FrEIA look-alikes in freia_like.py (HEAD) and
freia_like_v02.py (PyPI 0.2 storage); with INNSERVE_FREIA_PATH (or an installed FrEIA) the
same cases also run against the real FrEIA modules (TestExportRealFrEIA).
"""

import copy
import json
import os
import unittest

import util  # noqa: F401 - sets sys.path
import torch
import torch.nn as nn

from innserve import Client
from innserve.export import ExportError, Residual, export

import iresnet_like as IR

F64 = torch.float64
TOL = 1e-5
N_FRESH = 12


def subnet(hidden=16, act=nn.ReLU, layers=1):
    def make(cin, cout):
        mods = [nn.Linear(cin, hidden), act()]
        for _ in range(layers - 1):
            mods += [nn.Linear(hidden, hidden), act()]
        mods.append(nn.Linear(hidden, cout))
        return nn.Sequential(*mods)
    return make


def perturb(model, scale=0.15, seed=0):
    """Make every trainable float parameter non-trivial (FrEIA initialises some to 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))


class Case:
    """A model to export, how to run it in torch, and the export arguments."""

    def __init__(self, name, model, kind, kwargs=None, cond=None, y_dim=0, own=True,
                 own_inverse=True, own_logdet=True, x_scale=1.0):
        self.name = name
        self.model = model
        self.kind = kind
        self.kwargs = dict(kwargs or {})
        self.cond = cond          # y_s -> list of condition tensors for model(x, c=...)
        self.y_dim = y_dim
        self.own = own            # model(x, c) gives (z, log_det) we can compare with
        self.own_inverse = own_inverse
        self.own_logdet = own_logdet       # False: the module's log-det is not exact
        self.x_scale = x_scale
        self.result = None


# ---------------------------------------------------------------------------------------
# the cases, for one FrEIA implementation F (look-alike or real) and its version
# ---------------------------------------------------------------------------------------

class _Missing(Exception):
    pass


class _Impl:
    """Attribute access to a FrEIA namespace; a class this version lacks raises _Missing."""

    def __init__(self, ns):
        self.ns = ns

    def __getattr__(self, k):
        try:
            return getattr(self.ns, k)
        except AttributeError:
            raise _Missing(k) from None


def build_cases(F, version):
    """The FrEIA cases; a case whose classes this FrEIA version lacks is left out."""
    F = _Impl(F)
    cases = []
    torch.manual_seed(1234)
    for builder in _CASE_BUILDERS:
        try:
            builder(F, version, cases)
        except _Missing:
            pass
    return cases


C = 3                        # condition width of the conditional cases


def c_y(ys):
    return [ys]


def _seq(F, d, *blocks, cond_shape=None):
    inn = F.SequenceINN(d)
    for cls, cond, kw in blocks:
        if cond is None:
            inn.append(cls, **kw)
        else:
            inn.append(cls, cond=cond, cond_shape=cond_shape or (C,), **kw)
    return inn


def _add(cases, name, model, kind, **kw):
    perturb(model, seed=len(cases) + 1)
    cases.append(Case(name, model, kind, **kw))


_CASE_BUILDERS = []


def case_builder(fn):
    _CASE_BUILDERS.append(fn)
    return fn


@case_builder
def _aio(F, version, cases):
    sn = subnet()
    _add(cases, "aio_hard_softplus",
         _seq(F, 5, (F.AllInOneBlock, 0, dict(subnet_constructor=sn, affine_clamping=1.5)),
              (F.AllInOneBlock, 0, dict(subnet_constructor=sn))), "cinn", cond=c_y, y_dim=C)
    _add(cases, "aio_soft_sigmoid_reverse",
         _seq(F, 6, (F.AllInOneBlock, 0, dict(subnet_constructor=sn, permute_soft=True,
                                              global_affine_type="SIGMOID",
                                              reverse_permutation=True))),
         "cinn", cond=c_y, y_dim=C)
    _add(cases, "aio_householder_exp",
         _seq(F, 6, (F.AllInOneBlock, None, dict(subnet_constructor=sn, permute_soft=True,
                                                 learned_householder_permutation=2,
                                                 global_affine_type="EXP", affine_clamping=2.5))),
         "flow")
    _add(cases, "aio_gin",
         _seq(F, 5, (F.AllInOneBlock, 0, dict(subnet_constructor=subnet(act=nn.Tanh),
                                              gin_block=True, affine_clamping=1.2))),
         "cinn", cond=c_y, y_dim=C)


@case_builder
def _couplings(F, version, cases):
    sn = subnet()
    _add(cases, "nice_cond", _seq(F, 6, (F.NICECouplingBlock, 0, dict(subnet_constructor=sn))),
         "cinn", cond=c_y, y_dim=C)
    _add(cases, "rnvp_tanh", _seq(F, 5, (F.RNVPCouplingBlock, None,
                                         dict(subnet_constructor=sn, clamp=1.5,
                                              clamp_activation="TANH"))), "flow")
    _add(cases, "glow_atan_cond",
         _seq(F, 7, (F.GLOWCouplingBlock, 0, dict(subnet_constructor=subnet(act=nn.LeakyReLU))),
              (F.PermuteRandom, None, dict(seed=3)),
              (F.GLOWCouplingBlock, 0, dict(subnet_constructor=sn, split_len=3))),
         "cinn", cond=c_y, y_dim=C)
    _add(cases, "gin_sigmoid", _seq(F, 5, (F.GINCouplingBlock, None,
                                           dict(subnet_constructor=sn,
                                                clamp_activation="SIGMOID"))), "flow")
    _add(cases, "onesided_cond",
         _seq(F, 6, (F.AffineCouplingOneSided, 0, dict(subnet_constructor=subnet(act=nn.ELU),
                                                       clamp=1.0, clamp_activation="TANH"))),
         "cinn", cond=c_y, y_dim=C)
    _add(cases, "condaffine", _seq(F, 5, (F.ConditionalAffineTransform, 0,
                                          dict(subnet_constructor=sn))), "cinn", cond=c_y, y_dim=C)


@case_builder
def _splines(F, version, cases):
    sn = subnet()
    _add(cases, "rqs_affine_cond",
         _seq(F, 6, (F.RationalQuadraticSpline, 0, dict(subnet_constructor=sn, bins=8,
                                                        default_domain=(-2.5, 2.5, -2.0, 3.0),
                                                        min_bin_sizes=(0.05, 0.08)))),
         "cinn", cond=c_y, y_dim=C, x_scale=1.8)
    _add(cases, "rqs_identity_clamp",
         _seq(F, 5, (F.RationalQuadraticSpline, None,
                     dict(subnet_constructor=sn, identity_tails=True, domain_clamping=4.0))),
         "flow", x_scale=2.0)


@case_builder
def _fixed(F, version, cases):
    # well conditioned M: a float32 engine loses ~cond(M) x 6e-8 of relative accuracy
    M = torch.eye(5) + 0.25 * torch.randn(5, 5)
    inn = _seq(F, 5, (F.PermuteRandom, None, dict(seed=1)),
               (F.FixedLinearTransform, None, dict(M=M, b=torch.randn(5))),
               (F.FixedLinearTransform, None, dict(M=M.t().contiguous())),
               (F.LearnedElementwiseScaling, None, {}),
               (F.OrthogonalTransform, None, {}),
               (F.HouseholderPerm, None, dict(n_reflections=3)),
               (F.ActNorm, None, {}))
    with torch.no_grad():
        inn(torch.randn(64, 5))                  # initialises ActNorm
    perturb(inn, seed=len(cases) + 1)
    with torch.no_grad():                        # FrEIA keeps OrthogonalTransform orthogonal
        for m in inn.module_list:
            if hasattr(m, "weights") and hasattr(m, "scaling"):
                q, r = torch.linalg.qr(m.weights.double())
                m.weights.copy_((q * torch.sign(torch.diagonal(r))).float())
    cases.append(Case("fixed_linear_actnorm", inn, "flow"))
    _add(cases, "sigmoid_last",
         _seq(F, 4, (F.GLOWCouplingBlock, None, dict(subnet_constructor=subnet(), clamp=1.0)),
              (F.InvertibleSigmoid, None, {})), "flow")


@case_builder
def _iresnet(F, version, cases):
    # FrEIA IResNetLayer, made contractive (what lipschitz_correction aims at)
    inn = _seq(F, 4, (F.IResNetLayer, None, dict(internal_size=24, n_internal_layers=1)),
               (F.PermuteRandom, None, dict(seed=2)),
               (F.IResNetLayer, None, dict(internal_size=16, n_internal_layers=2)))
    perturb(inn, seed=99)
    with torch.no_grad():
        for m in inn.module_list:
            for lin in getattr(m, "layers", []):
                lin.weight.mul_(0.7 / torch.linalg.matrix_norm(lin.weight, 2))
    cases.append(Case("iresnet_freia", inn, "flow", own_inverse=False, own_logdet=False))


@case_builder
def _graph(F, version, cases):
    sn = subnet()
    nodes = [F.InputNode(5, name="in")]
    cnode = F.ConditionNode(C, name="y")
    ff = F.FeedForwardNode(cnode, (4,), nn.Sequential(nn.Linear(C, 8), nn.Tanh(), nn.Linear(8, 4)),
                           name="condnet")
    nodes.append(F.Node(nodes[-1], F.GLOWCouplingBlock, dict(subnet_constructor=sn),
                        conditions=cnode, name="glow_y"))
    nodes.append(F.Node(nodes[-1], F.PermuteRandom, dict(seed=4), name="perm"))
    nodes.append(F.Node(nodes[-1], F.AllInOneBlock, dict(subnet_constructor=sn),
                        conditions=ff, name="aio_ff"))
    nodes.append(F.OutputNode(nodes[-1], name="out"))
    g = F.GraphINN(nodes + [cnode, ff])
    perturb(g, seed=55)
    cases.append(Case("graph_feedforward", g, "cinn", cond=c_y, y_dim=C))


@case_builder
def _graph_plain(F, version, cases):
    sn = subnet()
    nodes = [F.InputNode(4, name="in")]
    cnode = F.ConditionNode(C, name="y")
    for k in range(3):
        nodes.append(F.Node(nodes[-1], F.GLOWCouplingBlock, dict(subnet_constructor=sn),
                            conditions=cnode, name="c%d" % k))
        nodes.append(F.Node(nodes[-1], F.PermuteRandom, dict(seed=k), name="p%d" % k))
    nodes.append(F.OutputNode(nodes[-1], name="out"))
    g = F.GraphINN(nodes + [cnode])
    perturb(g, seed=56)
    cases.append(Case("graph_chain", g, "cinn", cond=c_y, y_dim=C))


@case_builder
def _graph_branches(F, version, cases):
    # a graph that is not a chain: Split (a short section list: FrEIA adds the rest), blocks
    # on both branches (one conditional), Concat in the other order, one OutputNode
    sn = subnet()
    inp = F.InputNode(6, name="in")
    cnode = F.ConditionNode(C, name="y")
    g0 = F.Node(inp, F.GLOWCouplingBlock, dict(subnet_constructor=sn), conditions=cnode,
                name="g0")
    sp = F.Node(g0, F.Split, dict(section_sizes=[2]), name="split")
    a = F.Node((sp, 0), F.GLOWCouplingBlock, dict(subnet_constructor=sn), name="a")
    b = F.Node((sp, 1), F.AllInOneBlock, dict(subnet_constructor=sn), conditions=cnode,
               name="b")
    cat = F.Node([(b, 0), (a, 0)], F.Concat, {}, name="cat")
    g = F.GraphINN([inp, g0, sp, a, b, cat, F.OutputNode(cat, name="out"), cnode])
    perturb(g, seed=57)
    cases.append(Case("graph_branches", g, "cinn", cond=c_y, y_dim=C))


@case_builder
def _condnet(F, version, cases):
    # a conditioning network (condition 0) and the raw y (condition 1), standardization
    sn = subnet()
    cnet = nn.Sequential(nn.Linear(C, 12), nn.GELU(approximate="tanh"), nn.Linear(12, 6))
    inn = F.SequenceINN(4)
    inn.append(F.AllInOneBlock, cond=0, cond_shape=(6,), subnet_constructor=sn)
    inn.append(F.GLOWCouplingBlock, cond=1, cond_shape=(C,), subnet_constructor=sn)
    inn.append(F.AllInOneBlock, cond=0, cond_shape=(6,), subnet_constructor=sn)
    perturb(inn, seed=7)
    perturb(cnet, seed=8)
    cases.append(Case("cinn_condnet_standardized", inn, "cinn",
                      kwargs=dict(conditions=[cnet, None], x_names=["a", "b", "c", "d"],
                                  y_names=["p", "q", "r"], description="cond net + std",
                                  standardize={"x": ([0.5, -1, 2, 0], [2.0, 0.5, 1.5, 3.0]),
                                               "y": ([1.0, 0.0, -1.0], [0.5, 2.0, 1.0])}),
                      cond=lambda ys, n=cnet: [copy.deepcopy(n).to(F64)(ys), ys], y_dim=C))


@case_builder
def _inn(F, version, cases):
    # Ardizzone INN: [x, pad] <-> [z, pad, y]
    sn = subnet()
    inn = _seq(F, 6, (F.GLOWCouplingBlock, None, dict(subnet_constructor=sn, clamp=2.0)),
               (F.PermuteRandom, None, dict(seed=5)),
               (F.GLOWCouplingBlock, None, dict(subnet_constructor=sn, clamp=2.0)))
    perturb(inn, seed=11)
    cases.append(Case("inn_ardizzone", inn, "inn",
                      kwargs=dict(dims={"x": 4, "y": 2, "z": 3, "pad_x": 2, "pad_y": 1},
                                  standardize={"x": ([0, 1, 0, -1], [1, 2, 3, 0.5]),
                                               "y": ([0.2, -0.3], [1.5, 0.8])},
                                  inn_sigma={"sigma_y": 0.2, "sigma_pad": 0.1})))


@case_builder
def _legacy(F, version, cases):
    # FrEIA 0.2 formats: legacy clamp, one-hot permutation, old ActNorm, parameter M, no b
    if version != "0.2":
        return
    inn = _seq(F, 5, (F.AllInOneBlock, 0, dict(subnet_constructor=subnet(), affine_clamping=1.7)),
               (F.ActNorm, None, {}),
               (F.FixedLinearTransform, None, dict(M=torch.eye(5) + 0.25 * torch.randn(5, 5))))
    with torch.no_grad():
        inn(torch.randn(32, 5) * 1.5, c=[torch.randn(32, C)])
    perturb(inn, seed=21)
    cases.append(Case("legacy_02_aio_actnorm_fixed", inn, "cinn", cond=c_y, y_dim=C))


def build_torch_cases():
    """Models that are not FrEIA: MLP surrogates, i-ResNet/Residual-Flows residual blocks."""
    torch.manual_seed(4321)
    cases = []
    mlp = nn.Sequential(nn.Linear(3, 32), nn.GELU(), nn.Linear(32, 32), nn.Softplus(beta=2.0),
                        nn.Linear(32, 16), nn.SiLU(), nn.Linear(16, 16), nn.LeakyReLU(0.1),
                        nn.Linear(16, 8), nn.ELU(), nn.Linear(8, 8), nn.Sigmoid(),
                        nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    cases.append(Case("mlp_surrogate", mlp, "mlp",
                      kwargs=dict(standardize={"x": ([1, 2, 3], [0.5, 1, 2]), "y": ([0, 10], [1, 5])},
                                  x_names=["u", "v", "w"], y_names=["f", "g"]), own=False))
    # official i-ResNet: spectral_norm_fc hooks (soft, coeff 0.9) inside residual blocks
    blocks = []
    for k in range(3):
        l1, l2, l3 = nn.Linear(4, 32), nn.Linear(32, 32), nn.Linear(32, 4)
        for lin in (l1, l2, l3):
            with torch.no_grad():
                lin.weight.mul_(3.0)
            IR.spectral_norm_fc(lin, coeff=0.9, n_power_iterations=5)
        g = nn.Sequential(l1, nn.ELU(), l2, nn.ELU(), l3)
        with torch.no_grad():
            g.train()
            for _ in range(3):
                g(torch.randn(8, 4))
        blocks.append(Residual(g))
    cases.append(Case("iresnet_official_hook", blocks, "flow", own=False, own_inverse=False))
    # PyTorch's own spectral norm (hook and parametrization)
    l1 = nn.utils.spectral_norm(nn.Linear(3, 16))
    l2 = torch.nn.utils.parametrizations.spectral_norm(nn.Linear(16, 3))
    g = nn.Sequential(l1, nn.ReLU(), l2)
    with torch.no_grad():
        g.train()
        for _ in range(10):
            g(torch.randn(4, 3))
        l2.parametrizations.weight.original.mul_(0.5)   # eval weight = W / sigma ≈ norm 1
    g2 = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        for lin in (g2[0], g2[2]):
            lin.weight.mul_(0.8 / torch.linalg.matrix_norm(lin.weight, 2))
    g.eval()
    cases.append(Case("iresnet_torch_spectral", [Residual(nn.Sequential(*[m for m in g])),
                                                 Residual(g2)], "flow", own=False,
                      own_inverse=False, kwargs=dict(check=True)))
    # the truncated log-det series instead of the exact log-det
    blocks = []
    for k in range(2):
        g = nn.Sequential(nn.Linear(3, 12), nn.Tanh(), nn.Linear(12, 3))
        with torch.no_grad():
            for lin in (g[0], g[2]):
                lin.weight.mul_(0.75 / torch.linalg.matrix_norm(lin.weight, 2))
        blocks.append(Residual(g))
    cases.append(Case("iresnet_series", blocks, "flow", own=False, own_inverse=False,
                      kwargs=dict(iresnet_logdet="series", iresnet_series_terms=6)))
    # Residual Flows: SequentialFlow(ActNorm1d, iResBlock(pre-activation LipSwish nnet), ...)
    def nnet():
        return nn.Sequential(IR.Swish(), IR.InducedNormLinear(2, 24, coeff=0.9), IR.Swish(),
                             IR.InducedNormLinear(24, 24, coeff=0.9), IR.Swish(),
                             IR.InducedNormLinear(24, 2, coeff=0.9))
    flow = IR.SequentialFlow([IR.ActNorm1d(2), IR.iResBlock(nnet()), IR.ActNorm1d(2),
                              IR.iResBlock(nnet())])
    with torch.no_grad():
        for m in flow.modules():
            if isinstance(m, IR.Swish):
                m.beta.add_(torch.randn(1))
    cases.append(Case("residual_flows", flow, "flow", own=False, own_inverse=False))
    return cases


# ---------------------------------------------------------------------------------------
# running the torch model in float64 (the comparison target)
# ---------------------------------------------------------------------------------------

def own_forward(case, xs, conds, rev=False):
    m = copy.deepcopy(case.model).to(F64).eval()
    if case.own_logdet:
        with torch.no_grad():
            out = m(xs, c=conds, rev=rev) if conds else m(xs, rev=rev)
    else:     # FrEIA's IResNetLayer estimates its log-det with autograd (stochastic)
        with torch.enable_grad():
            xs = xs.clone().requires_grad_(True)
            out = m(xs, c=conds, rev=rev) if conds else m(xs, rev=rev)
    z, ld = out
    if isinstance(z, (tuple, list)):
        z = z[0]
    return z.detach(), (ld.detach() if isinstance(ld, torch.Tensor) else ld)


def close(got, want, atol_scale=1.0):
    got = torch.as_tensor(got, dtype=F64)
    want = torch.as_tensor(want, dtype=F64)
    err = (got - want).abs() - (TOL * atol_scale + TOL * want.abs())
    return float(err.max()) <= 0, float((got - want).abs().max())


class _ExportSuite:
    """Mixed into a TestCase class: IMPL (namespace), VERSION, LABEL."""

    IMPL = None
    VERSION = "head"
    LABEL = "mimic"
    TORCH_CASES = False

    @classmethod
    def setUpClass(cls):
        cls.tmp = util.TmpDir()
        cls.cases = {}
        cases = build_cases(cls.IMPL, cls.VERSION) if cls.IMPL is not None else build_torch_cases()
        fv = "auto"
        for c in cases:
            path = os.path.join(cls.tmp.path, "%s_%s.safetensors" % (cls.LABEL, c.name))
            kw = dict(kind=c.kind, rtol=TOL, atol=TOL, freia_version=fv, n_tests=6, seed=3)
            kw.update(c.kwargs)
            try:
                c.result = export(c.model, path, **kw)
            except Exception as e:  # noqa: BLE001 - reported by the case's test
                c.error = e
            cls.cases[c.name] = c
        cls.daemon = None
        cls.client = None
        if util.INNSERVE_BIN:
            try:
                cls.daemon = util.Daemon(cls.tmp.path)
                cls.daemon.wait_ready(30)
                cls.client = Client(cls.daemon.url, timeout=30, numpy=True)
            except Exception as e:  # noqa: BLE001
                cls.daemon_error = e

    @classmethod
    def tearDownClass(cls):
        if cls.daemon:
            cls.daemon.stop()
        cls.tmp.cleanup()

    def run_case(self, name):
        c = self.cases.get(name)
        if c is None:
            self.skipTest("case %s not built for %s" % (name, self.LABEL))
        if getattr(c, "error", None) is not None:
            raise c.error
        r = c.result
        # 1. the engine reproduces the embedded test vectors (forward, log-det, inverse)
        if util.INNCTL_BIN:
            p = util.innctl("verify", r.path)
            self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
        # 2. fresh rows through the daemon vs the torch model
        if self.client is None:
            return
        meta = self.client.metadata(os.path.basename(r.path).rsplit(".", 1)[0])
        self.assertEqual(meta["kind"], c.kind)
        model_name = meta["name"]
        M = r.model
        d = M.dx
        g = torch.Generator().manual_seed(17)
        x = torch.randn(N_FRESH, d, generator=g, dtype=F64) * c.x_scale
        s = M._std("x")
        if s is not None:
            x = s[0] + s[1] * x
        x = x.float().double()
        y = None
        if c.kind == "cinn":
            y = torch.randn(N_FRESH, M.dy, generator=g, dtype=F64)
            sy = M._std("y")
            if sy is not None:
                y = sy[0] + sy[1] * y
            y = y.float().double()
        want = M.forward(x, y)
        # the reference must agree with the model's own torch forward
        if c.own and c.kind in ("flow", "cinn"):
            xs, ld0 = M.std_x(x)
            conds = c.cond(M.std_y(y)) if c.cond else None
            z_own, ld_own = own_forward(c, xs, [t.to(F64) for t in conds] if conds else None)
            ok, err = close(want["z"], z_own)
            self.assertTrue(ok, "reference vs torch forward: %g" % err)
            if c.own_logdet:
                ok, err = close(want["log_det"], ld_own + ld0, d)
                self.assertTrue(ok, "reference vs torch log-det: %g" % err)
        got = self.client.forward(model_name, x.numpy(), None if y is None else y.numpy())
        for key, wkey, scale in (("z", "z", 1), ("log_det", "log_det", d), ("y", "y_out", 1)):
            if wkey in want and (key != "z" or c.kind != "mlp"):
                ok, err = close(got[key], want[wkey], scale)
                self.assertTrue(ok, "engine %s vs torch: max |diff| %g" % (key, err))
        if c.kind == "mlp":
            return
        # inverse of the torch z
        zin = want["z"].float().double()
        yin = y if c.kind == "cinn" else (want["y_out"].float().double() if c.kind == "inn" else None)
        inv = self.client.inverse(model_name, zin.numpy(), None if yin is None else yin.numpy())
        x_want, ld_inv = M.inverse(zin, yin, pad=want.get("pad"))
        if c.kind == "inn":
            # [z, 0, y] inverts to x only when the pad outputs are 0: compare with the reference
            x_want, ld_inv = M.inverse(zin, yin)
        if c.own_inverse and c.kind in ("flow", "cinn"):
            zs = zin
            conds = c.cond(M.std_y(y)) if c.cond else None
            xs_own, _ = own_forward(c, zs, [t.to(F64) for t in conds] if conds else None, rev=True)
            x_own, _ = M.unstd_x(xs_own)
            ok, err = close(x_want, x_own)
            self.assertTrue(ok, "reference vs torch inverse: %g" % err)
        ok, err = close(inv["x"], x_want)
        self.assertTrue(ok, "engine inverse vs torch: max |diff| %g" % err)
        if "log_det" in inv:
            ok, err = close(inv["log_det"], ld_inv, d)
            self.assertTrue(ok, "engine inverse log-det: max |diff| %g" % err)


def _add_tests(cls, names):
    for n in names:
        setattr(cls, "test_" + n, lambda self, n=n: self.run_case(n))
    return cls


HEAD_CASES = ["aio_hard_softplus", "aio_soft_sigmoid_reverse", "aio_householder_exp", "aio_gin",
              "nice_cond", "rnvp_tanh", "glow_atan_cond", "gin_sigmoid", "onesided_cond",
              "condaffine", "rqs_affine_cond", "rqs_identity_clamp", "fixed_linear_actnorm",
              "sigmoid_last", "iresnet_freia", "graph_feedforward", "graph_chain", "graph_branches",
              "cinn_condnet_standardized", "inn_ardizzone"]


class TestExportMimicHead(_ExportSuite, unittest.TestCase):
    IMPL = util.mimic("head")
    VERSION = "head"
    LABEL = "head"


_add_tests(TestExportMimicHead, HEAD_CASES)


class TestExportMimic02(_ExportSuite, unittest.TestCase):
    IMPL = util.mimic("0.2")
    VERSION = "0.2"
    LABEL = "v02"


_add_tests(TestExportMimic02, ["aio_hard_softplus", "aio_gin", "glow_atan_cond",
                               "fixed_linear_actnorm", "legacy_02_aio_actnorm_fixed"])


class TestExportTorch(_ExportSuite, unittest.TestCase):
    IMPL = None
    LABEL = "torch"


_add_tests(TestExportTorch, ["mlp_surrogate", "iresnet_official_hook", "iresnet_torch_spectral",
                             "iresnet_series", "residual_flows"])


_real = util.real_freia()


@unittest.skipIf(_real is None, "FrEIA not available (set INNSERVE_FREIA_PATH to a checkout)")
class TestExportRealFrEIA(_ExportSuite, unittest.TestCase):
    IMPL = _real[0] if _real else None
    VERSION = _real[1] if _real else "head"
    LABEL = "freia"

    @classmethod
    def setUpClass(cls):
        if _real is None:
            raise unittest.SkipTest("FrEIA not available")
        super().setUpClass()


_add_tests(TestExportRealFrEIA, HEAD_CASES + ["legacy_02_aio_actnorm_fixed"])
