"""A FrEIA IResNetLayer is exported only while its residual branch is a contraction: the
exporter refuses a block whose Lipschitz bound (product of its Linear layers' exact spectral
norms, ELU bound 1) is not below 1, naming the block and the bound and pointing at
lipschitz_correction(); allow_non_contractive=True exports it with a warning (and the
daemon's certificate says not invertible); after lipschitz_correction() it exports silently.
Runs against the FrEIA look-alike, and against the real FrEIA when INNSERVE_FREIA_PATH (or
an installed FrEIA) provides it."""

import json
import os
import subprocess
import unittest
import warnings

import util
import torch

from innserve.export import ExportError, export

IMPLS = [("freia_like", util.mimic("head"))]
_real = util.real_freia()
if _real is not None:
    IMPLS.append(("FrEIA", _real[0]))


def chain(F, scale):
    """SequenceINN(4): IResNetLayer, PermuteRandom, IResNetLayer; every Linear of the second
    residual block rescaled to spectral norm `scale` (the first one to 0.5)."""
    torch.manual_seed(0)
    inn = F.SequenceINN(4)
    inn.append(F.IResNetLayer, internal_size=12, n_internal_layers=1)
    inn.append(F.PermuteRandom, seed=1)
    inn.append(F.IResNetLayer, internal_size=12, n_internal_layers=1)
    with torch.no_grad():
        for i, s in ((0, 0.5), (2, scale)):
            for lin in inn.module_list[i].layers:
                lin.weight.mul_(s / torch.linalg.matrix_norm(lin.weight, 2))
    return inn


def bound(block):
    """The Lipschitz bound the exporter computes: the stored float32 weights' exact norms."""
    L = 1.0
    for lin in block.layers:
        L *= float(torch.linalg.matrix_norm(lin.weight.detach().float().double(), 2))
    return L


class TestContraction(unittest.TestCase):
    def setUp(self):
        self.tmp = util.TmpDir()
        self.path = os.path.join(self.tmp.path, "m.safetensors")

    def tearDown(self):
        self.tmp.cleanup()

    def test_non_contractive_block_is_refused(self):
        for name, F in IMPLS:
            with self.subTest(freia=name):
                inn = chain(F, 1.1)
                L = bound(inn.module_list[2])
                self.assertGreater(L, 1.0)
                with self.assertRaises(ExportError) as cm:
                    export(inn, self.path)
                self.assertEqual(
                    str(cm.exception),
                    "module_list.2 (IResNetLayer): the residual branch is not a contraction: "
                    "its Lipschitz bound is %.4g >= 1 (spectral norms of its Linear layers "
                    "1.1, 1.1, 1.1), so x + g(x) is not certified invertible and the daemon's "
                    "certificate says \"invertible: NO\". FrEIA's IResNetLayer rescales its "
                    "weights only when lipschitz_correction() is called: call it on every "
                    "IResNetLayer after each optimizer step (and before exporting), or pass "
                    "allow_non_contractive=True to export the block anyway" % L)
                self.assertFalse(os.path.exists(self.path), "no file may be written")

    def test_allow_non_contractive_warns_and_exports(self):
        for name, F in IMPLS:
            with self.subTest(freia=name):
                inn = chain(F, 1.1)
                L = bound(inn.module_list[2])
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    res = export(inn, self.path, allow_non_contractive=True)
                ours = [x for x in w if "not a contraction" in str(x.message)]
                self.assertEqual(len(ours), 1, [str(x.message) for x in w])
                msg = str(ours[0].message)
                self.assertIn("module_list.2 (IResNetLayer)", msg)
                self.assertIn("Lipschitz bound is %.4g >= 1" % L, msg)
                self.assertIn("allow_non_contractive=True", msg)
                self.assertEqual(ours[0].filename, __file__)    # points at the caller
                self.assertEqual(res.manifest["kind"], "flow")
                self.assertTrue(os.path.getsize(self.path) > 0)
                if util.INNSERVE_BIN:
                    p = subprocess.run([util.INNSERVE_BIN, "--check", self.path],
                                       capture_output=True, text=True, timeout=60)
                    cert = json.loads(p.stdout)["certificate"]
                    self.assertFalse(cert["invertible"])
                    self.assertGreaterEqual(cert["blocks"][2]["lipschitz"], 1.0)
                    self.assertLess(cert["blocks"][0]["lipschitz"], 1.0)

    def test_lipschitz_correction_makes_it_exportable(self):
        for name, F in IMPLS:
            with self.subTest(freia=name):
                inn = chain(F, 1.1)
                for m in inn.module_list:
                    if hasattr(m, "lipschitz_correction"):
                        m.lipschitz_correction()
                self.assertLess(bound(inn.module_list[2]), 1.0)
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    export(inn, self.path)
                self.assertEqual([str(x.message) for x in w if "contraction" in str(x.message)], [])
                if util.INNSERVE_BIN:
                    p = subprocess.run([util.INNSERVE_BIN, "--check", self.path],
                                       capture_output=True, text=True, timeout=60)
                    self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                    self.assertTrue(json.loads(p.stdout)["certificate"]["invertible"])

    def test_contractive_block_needs_no_option(self):
        for name, F in IMPLS:
            with self.subTest(freia=name):
                inn = chain(F, 0.95)          # 0.95^3 < 1: no correction needed
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    export(inn, self.path)
                self.assertEqual([str(x.message) for x in w if "contraction" in str(x.message)], [])


if __name__ == "__main__":
    unittest.main()
