"""Exporter tests for FrEIA's coupling blocks with convolutional subnets on images (C, H, W)
and signals (C, L): GLOW, GIN, RNVP, NICE, AffineCouplingOneSided,
ConditionalAffineTransform, RationalQuadraticSpline and AllInOneBlock with nn.Conv2d /
nn.Conv1d / nn.ConvTranspose2d / nn.Flatten / nn.Unflatten subnets, unconditional, with an
image condition and with a vector condition broadcast over the positions.

Each model is exported (the exporter cross-checks every block against the real FrEIA module
in float64), the manifest is checked (shape, split in flat values, conditions), the
engine runs the embedded test vectors (`innctl verify`), and the whole model's z and
log-det on fresh rows are compared with FrEIA's.  Needs the real FrEIA (INNSERVE_FREIA_PATH
or installed); skipped otherwise.  Also the refusals: padding_mode 'reflect', a Flatten
that keeps the channels, and 4-D data.
"""

import math
import os
import unittest

import util  # noqa: F401 - sets sys.path
import torch
import torch.nn as nn

from innserve import _reference as ref
from innserve.export import ExportError, export

F64 = torch.float64


def conv_net(hidden=8, one_d=False, kind="plain"):
    C = nn.Conv1d if one_d else nn.Conv2d

    def make(cin, cout):
        if kind == "updown":
            return nn.Sequential(nn.Conv2d(cin, hidden, 3, stride=2, padding=1), nn.ELU(),
                                 nn.ConvTranspose2d(hidden, hidden, 3, stride=2, padding=1,
                                                    output_padding=1),
                                 nn.Tanh(), nn.Conv2d(hidden, cout, 3, padding=1))
        if kind == "same":
            return nn.Sequential(C(cin, hidden, 4 if one_d else (4, 2), padding="same"),
                                 nn.LeakyReLU(0.2),
                                 C(hidden, hidden, 3, padding=2, dilation=2, groups=2),
                                 nn.Tanh(), C(hidden, cout, 1))
        if kind == "circular":
            return nn.Sequential(C(cin, hidden, 3, padding=1, padding_mode="circular"),
                                 nn.SiLU(), C(hidden, cout, 3, padding=1))
        return nn.Sequential(C(cin, hidden, 3, padding=1), nn.ReLU(),
                             C(hidden, cout, 3, padding=1))
    return make


def flat_net(spatial):
    P = math.prod(spatial)

    def make(cin, cout):
        return nn.Sequential(nn.Flatten(), nn.Linear(cin * P, 12), nn.Tanh(),
                             nn.Linear(12, cout * P), nn.Unflatten(1, (cout, *spatial)))
    return make


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_floating_point() and p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


class TestExportConv(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        real = util.real_freia()
        if real is None or real[1] != "head":
            raise unittest.SkipTest("the real FrEIA (HEAD) is not available "
                                    "(set INNSERVE_FREIA_PATH)")
        cls.F = real[0]
        cls.tmp = util.TmpDir()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def build(self, shape, blocks, cond=None, seed=0):
        """blocks: [(class, kwargs, uses_cond)]; cond: None, ("image", cc), ("vector", w)."""
        torch.manual_seed(seed)
        F = self.F
        inn = F.SequenceINN(*shape)
        cshape = None if cond is None else (cond[1], *shape[1:])
        for cls, kw, uses in blocks:
            if uses:
                inn.append(cls, cond=0, cond_shape=cshape, **kw)
            else:
                inn.append(cls, **kw)
        perturb(inn, seed)
        return inn.eval()

    def check(self, name, inn, shape, cond=None, expect_split=None):
        path = os.path.join(self.tmp.path, name + ".safetensors")
        kw = {}
        if cond is not None and cond[0] == "vector":
            kw["broadcast_conditions"] = True
        r = export(inn, path, **kw)
        m = r.manifest
        self.assertEqual(m["shape"]["x"], list(shape))
        if expect_split is not None:
            self.assertEqual(m["blocks"][0]["split"], expect_split)
        if cond is not None:
            c = m["conditions"][0]
            if cond[0] == "vector":
                self.assertEqual(c["broadcast"], list(shape[1:]))
                self.assertEqual(m["dims"]["y"], cond[1])
            else:
                self.assertEqual(c["shape"], [cond[1], *shape[1:]])
                self.assertEqual(m["dims"]["y"], cond[1] * math.prod(shape[1:]))
        # the engine reproduces the embedded test vectors
        if util.INNCTL_BIN:
            p = util.innctl("verify", path)
            self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
        # fresh rows: the written model (reference math on the stored tensors) vs FrEIA
        g = torch.Generator().manual_seed(5)
        n = 4
        x = torch.randn(n, *shape, generator=g, dtype=F64)
        y, cimg = None, None
        if cond is not None:
            if cond[0] == "vector":
                y = torch.randn(n, cond[1], generator=g, dtype=F64)
                cimg = y.reshape(n, cond[1], *([1] * (len(shape) - 1))).expand(
                    -1, -1, *shape[1:])
            else:
                cimg = torch.randn(n, cond[1], *shape[1:], generator=g, dtype=F64)
                y = cimg.reshape(n, -1)
        M = ref.Model(m, r.tensors)
        inn64 = inn.double()
        with torch.no_grad():
            z, ld = inn64(x, c=None if cimg is None else [cimg])
            f = M.forward(x.reshape(n, -1), y)
        inn.float()
        self.assertLess(float((f["z"] - z.reshape(n, -1)).abs().max()), 1e-4)
        self.assertLess(float((f["log_det"] - ld).abs().max()), 1e-3)
        return r

    def test_glow_gin_c5(self):
        F = self.F
        inn = self.build((5, 4, 4), [(F.GLOWCouplingBlock, {"subnet_constructor": conv_net()}, False),
                                     (F.GINCouplingBlock, {"subnet_constructor": conv_net()}, False)])
        self.check("glow_gin", inn, (5, 4, 4), expect_split=2 * 16)

    def test_rnvp_nice_image_cond(self):
        F = self.F
        inn = self.build((3, 4, 4), [(F.RNVPCouplingBlock, {"subnet_constructor": conv_net()}, True),
                                     (F.NICECouplingBlock, {"subnet_constructor": conv_net()}, True)],
                         cond=("image", 2), seed=1)
        self.check("rnvp_nice", inn, (3, 4, 4), cond=("image", 2), expect_split=2 * 16)

    def test_glow_updown_vector_cond(self):
        F = self.F
        inn = self.build((3, 6, 4), [(F.GLOWCouplingBlock,
                                      {"subnet_constructor": conv_net(kind="updown")}, True)],
                         cond=("vector", 3), seed=2)
        self.check("updown", inn, (3, 6, 4), cond=("vector", 3))

    def test_onesided_condaffine_spline(self):
        F = self.F
        inn = self.build((3, 4, 5), [
            (F.ConditionalAffineTransform, {"subnet_constructor": conv_net(kind="circular")}, True),
            (F.AffineCouplingOneSided, {"subnet_constructor": conv_net(kind="same")}, True),
            (F.RationalQuadraticSpline, {"subnet_constructor": conv_net(), "bins": 4}, False)],
            cond=("image", 2), seed=3)
        self.check("misc", inn, (3, 4, 5), cond=("image", 2))

    def test_allinone(self):
        F = self.F
        inn = self.build((5, 3, 3), [
            (F.AllInOneBlock, {"subnet_constructor": conv_net(), "reverse_permutation": True}, True),
            (F.AllInOneBlock, {"subnet_constructor": conv_net(), "permute_soft": True}, True)],
            cond=("vector", 2), seed=4)
        r = self.check("aio", inn, (5, 3, 3), cond=("vector", 2))
        self.assertEqual(r.manifest["blocks"][0]["split"], 3 * 9)

    def test_conv1d_and_flatten(self):
        F = self.F
        inn = self.build((3, 10), [
            (F.GLOWCouplingBlock, {"subnet_constructor": conv_net(one_d=True, kind="same")}, True),
            (F.GLOWCouplingBlock, {"subnet_constructor": flat_net((10,))}, True)],
            cond=("vector", 2), seed=5)
        self.check("conv1d", inn, (3, 10), cond=("vector", 2))

    def test_iresnet_conv(self):
        """FrEIA's IResNetLayer on images (Conv2d 3x3 with ELU), made contractive by its
        lipschitz_correction(); the engine computes the exact log-det and certifies the
        inverse."""
        F = self.F
        torch.manual_seed(7)
        inn = F.SequenceINN(2, 4, 4)
        inn.append(F.IResNetLayer, internal_size=4, n_internal_layers=1)
        for mod in inn.module_list:
            for _ in range(5):
                mod.lipschitz_correction()
            with torch.no_grad():   # FrEIA's power method ignores the padding: leave room
                for layer in mod.layers:
                    layer.weight.mul_(0.5)
        path = os.path.join(self.tmp.path, "iresnet_conv.safetensors")
        r = export(inn.eval(), path)
        b = r.manifest["blocks"][0]
        self.assertEqual(b["type"], "IResNetBlock")
        self.assertEqual([L["type"] for L in b["subnet"]["layers"]],
                         ["conv2d", "elu", "conv2d", "elu", "conv2d"])
        if util.INNCTL_BIN:
            p = util.innctl("verify", path)
            self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
        x = torch.randn(3, 2, 4, 4, dtype=F64)
        with torch.no_grad():
            mod = inn.module_list[0].double()
            want = (x + mod.residual(x)).reshape(3, -1)
        inn.float()
        got = ref.Model(r.manifest, r.tensors).forward(x.reshape(3, -1))["z"]
        self.assertLess(float((got - want).abs().max()), 1e-5)

    def test_iresnet_official_conv_layout(self):
        """The official i-ResNet's conv block (pre-activation ELU, 3x3, ELU, 1x1, ELU, 3x3) as
        innserve.export.Residual(g) with shape=(C, H, W): the leading activation is exported
        after an identity 1x1 convolution."""
        from innserve.export import Residual
        torch.manual_seed(9)
        C, hid = 2, 6
        g = nn.Sequential(nn.ELU(), nn.Conv2d(C, hid, 3, padding=1), nn.ELU(),
                          nn.Conv2d(hid, hid, 1), nn.ELU(), nn.Conv2d(hid, C, 3, padding=1))
        with torch.no_grad():
            for m in g:
                if isinstance(m, nn.Conv2d):
                    m.weight.mul_(0.3)
        path = os.path.join(self.tmp.path, "official.safetensors")
        r = export([Residual(g)], path, shape=(C, 4, 4))
        layers = r.manifest["blocks"][0]["subnet"]["layers"]
        self.assertEqual(layers[0]["type"], "conv2d")
        self.assertEqual(layers[1]["type"], "elu")
        self.assertEqual(r.manifest["shape"]["x"], [C, 4, 4])
        if util.INNCTL_BIN:
            p = util.innctl("verify", path)
            self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
        x = torch.randn(3, C, 4, 4, dtype=F64)
        with torch.no_grad():
            want = (x + g.double()(x)).reshape(3, -1)
        got = ref.Model(r.manifest, r.tensors).forward(x.reshape(3, -1))["z"]
        self.assertLess(float((got - want).abs().max()), 1e-5)

    def test_iresnet_conv_not_contractive(self):
        F = self.F
        torch.manual_seed(8)
        inn = F.SequenceINN(2, 4, 4)
        inn.append(F.IResNetLayer, internal_size=4)
        with torch.no_grad():
            for layer in inn.module_list[0].layers:
                layer.weight.mul_(20.0)
        with self.assertRaises(ExportError) as cm:
            export(inn, os.path.join(self.tmp.path, "bad_ires.safetensors"))
        self.assertIn("is not a contraction", str(cm.exception))

    def test_refusals(self):
        F = self.F

        def reflect(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect"))

        def flat2(cin, cout):
            return nn.Sequential(nn.Flatten(2), nn.Linear(16, 16), nn.Unflatten(2, (4, 4)),
                                 nn.Conv2d(cin, cout, 1))
        for ctor, want in ((reflect, "padding_mode 'reflect'"),
                           (flat2, "only nn.Flatten() (start_dim 1")):
            inn = self.build((3, 4, 4), [(F.GLOWCouplingBlock, {"subnet_constructor": ctor}, False)])
            with self.assertRaises(ExportError) as cm:
                export(inn, os.path.join(self.tmp.path, "bad.safetensors"))
            self.assertIn(want, str(cm.exception))


if __name__ == "__main__":
    unittest.main()
