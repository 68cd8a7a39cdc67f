"""Exporter tests for FrEIA's shape-aware fixed blocks and the other single modules of
innserve.export.freia_fixed, with the REAL FrEIA (INNSERVE_FREIA_PATH or an installed FrEIA;
skipped otherwise): image models (per-row shape (C, H, W) in the manifest) through Haar and
i-RevNet down/upsampling, Fixed1x1Conv, PermuteRandom and ActNorm per channel, the
invertible-autoencoder layers, ElementwiseRationalQuadraticSpline, LinearSpline and Inverse,
conditional and not.  Every export cross-checks each block against the FrEIA module in
float64 (a mismatch raises); then `innctl verify` runs the embedded test vectors through the
C engine (when innctl is built).  Also: what is refused, by name."""

import os
import unittest
import warnings

import util  # noqa: F401 - sets sys.path
import torch
import torch.nn as nn

from innserve.export import ExportError, export

_real = util.real_freia()


def mlp(cin, cout):
    return nn.Sequential(nn.Linear(cin, 10), nn.ReLU(), nn.Linear(10, cout))


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=g))


@unittest.skipIf(_real is None, "FrEIA not available (set INNSERVE_FREIA_PATH to a checkout)")
class TestExportImageBlocks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.F = _real[0]
        cls.tmp = util.TmpDir()
        warnings.simplefilter("ignore")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def seq(self, shape, *mods):
        inn = self.F.SequenceINN(*shape)
        for cls, kw in mods:
            inn.append(cls, **kw)
        return inn

    def roundtrip(self, name, model, blocks, shape=None, seed=0, x_inv=False):
        torch.manual_seed(seed)
        perturb(model, seed)
        path = os.path.join(self.tmp.path, name + ".safetensors")
        r = export(model, path)
        self.assertEqual([b["type"] for b in r.manifest["blocks"]], blocks)
        self.assertEqual(r.manifest.get("shape"), None if shape is None else {"x": list(shape)})
        self.assertEqual("x_inv" in r.manifest["tests"], x_inv)
        if util.INNCTL_BIN:
            p = util.innctl("verify", path)
            self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
        return r

    def test_multiscale_image_chain(self):
        F = self.F
        g = torch.Generator().manual_seed(3)
        M = torch.eye(12) + 0.2 * torch.randn(12, 12, generator=g)
        m = self.seq((3, 4, 8), (F.HaarDownsampling, {"order_by_wavelet": True, "rebalance": 0.5}),
                     (F.Fixed1x1Conv, {"M": M}), (F.PermuteRandom, {"seed": 1}),
                     (F.ActNorm, {}), (F.IRevNetDownsampling, {"legacy_backend": True}),
                     (F.IRevNetUpsampling, {}), (F.HaarUpsampling, {}),
                     (F.InvAutoAct, {}), (F.InvAutoActTwoSided, {}),
                     (F.ElementwiseRationalQuadraticSpline, {"bins": 4}))
        m(torch.randn(16, 3, 4, 8))          # initializes the ActNorm
        r = self.roundtrip("multiscale", m, [
            "HaarDownsampling", "Fixed1x1Conv", "PermuteRandom", "ActNorm",
            "IRevNetDownsampling", "IRevNetUpsampling", "HaarUpsampling", "InvAutoAct",
            "InvAutoActTwoSided", "ElementwiseRationalQuadraticSpline"], (3, 4, 8))
        b = r.manifest["blocks"]
        self.assertEqual((b[0]["order_by_wavelet"], b[0]["rebalance"]), (True, 0.5))
        self.assertEqual(b[4]["legacy_backend"], True)
        self.assertEqual(r.model.shapes()[1], (12, 2, 4))

    def test_conditional_splines_and_inverse(self):
        F = self.F
        from FrEIA.modules.inverse import Inverse
        m = F.SequenceINN(5)
        m.append(F.ElementwiseRationalQuadraticSpline, cond=0, cond_shape=(3,),
                 subnet_constructor=mlp, bins=4)
        m.append(F.LinearSpline, cond=0, cond_shape=(3,), subnet_constructor=mlp,
                 identity_tails=True)
        m.append(Inverse(F.GLOWCouplingBlock([(5,)], [(3,)], subnet_constructor=mlp)), cond=0)
        r = self.roundtrip("cond", m, ["ElementwiseRationalQuadraticSpline", "LinearSpline",
                                       "Inverse"], seed=1)
        self.assertEqual(r.manifest["kind"], "cinn")
        self.assertEqual(r.manifest["blocks"][2]["block"]["type"], "GLOWCouplingBlock")
        self.assertNotIn("cond", r.manifest["blocks"][2]["block"])

    def test_image_splines_with_conv_subnets(self):
        F = self.F

        def cnn(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, 6, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(6, cout, 3, padding=1))
        m = F.SequenceINN(3, 4, 4)
        m.append(F.LinearSpline, subnet_constructor=cnn, bins=4)
        m.append(F.ElementwiseRationalQuadraticSpline, cond=0, cond_shape=(2, 4, 4),
                 subnet_constructor=cnn, bins=3)
        r = self.roundtrip("convsplines", m, ["LinearSpline", "ElementwiseRationalQuadraticSpline"],
                           (3, 4, 4), seed=4)
        self.assertEqual(r.manifest["blocks"][0]["split"], 2 * 16)     # 2 channels of 16
        self.assertEqual(r.manifest["conditions"], [{"net": None, "shape": [2, 4, 4]}])
        self.assertEqual(r.manifest["blocks"][1]["subnet"]["layers"][0]["type"], "conv2d")

    def test_inverse_of_a_reshaping_block(self):
        from FrEIA.modules.inverse import Inverse
        m = self.F.SequenceINN(12, 2, 3)
        m.append(Inverse(self.F.HaarDownsampling([(3, 4, 6)], order_by_wavelet=True)))
        r = self.roundtrip("inverse", m, ["Inverse"], (12, 2, 3))
        self.assertEqual(r.manifest["blocks"][0]["block_shape"], [3, 4, 6])

    def test_invertible_autoencoder_layers(self):
        F = self.F
        # a non-orthogonal W: the transpose is not the inverse, so the file carries x_inv
        self.roundtrip("invfc", self.seq((5,), (F.InvAutoFC, {})), ["InvAutoFC"], x_inv=True)
        self.roundtrip("invconv", self.seq((3, 4, 5), (F.InvAutoConv2D, {})), ["InvAutoConv2D"],
                       (3, 4, 5), x_inv=True)
        self.roundtrip("linspline", self.seq((5,), (F.LinearSpline,
                                                    {"subnet_constructor": mlp, "bins": 5})),
                       ["LinearSpline"], seed=2)

    def test_refusals_name_the_module(self):
        F = self.F
        m = self.seq((5,), (F.InvAutoFC, {"dims_out": 4}))
        with self.assertRaisesRegex(ExportError, r"module_list\.0.*InvAutoFC.*dims_out = 4"):
            export(m, os.path.join(self.tmp.path, "bad.safetensors"))
        # GaussianMixtureModel's four conditions of different widths
        D, K = 3, 2
        inp = F.InputNode(D, name="x")
        cs = [F.ConditionNode(K, name="w"), F.ConditionNode(K, D, name="mu"),
              F.ConditionNode(K, D * (D + 1) // 2, name="U"), F.ConditionNode(1, name="i")]
        n = F.Node(inp, F.GaussianMixtureModel, {}, conditions=cs, name="gmm")
        g = F.GraphINN([inp] + cs + [n, F.OutputNode(n, name="z")])
        with self.assertRaisesRegex(ExportError, r"gmm.*four conditions.*2, 6, 12, 1.*by hand"):
            export(g, os.path.join(self.tmp.path, "gmm.safetensors"))


if __name__ == "__main__":
    unittest.main()
