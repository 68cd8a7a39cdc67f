"""sbi posteriors served by the daemon, without sbi: the checkpoints of
tests/fixtures/sbi/ (exported by innserve.export.export_sbi from real sbi NPE posteriors,
see gen_sbi.py there) against what sbi computed for them:

* log_prob of thetas inside the prior box within 1e-5 relative of sbi's
  posterior.log_prob(theta, x, norm_posterior=False), null where sbi gives -inf (outside);
* the inverse given z within 1e-5 relative of sbi's flow inverse;
* samples all inside the prior box, with an acceptance near sbi's leakage estimate;
* sbi's maf (also with an MLP embedding), nsf, maf_rqs, zuko_maf, zuko_nsf, mdn (a
  mixture density network: its samples' mean and covariance against sbi's own samples,
  forward and inverse refused) and made (a MoG-MADE, served as an mdn: its samples'
  moments against draws from the density sbi's log_prob evaluates, made with the real
  MADE's forward) are covered;
* the exporter refuses what it cannot serve (other zuko flows or univariate maps,
  other nflows layers, other embedding nets), naming the module, and a prior that is not
  a box.
"""

import json
import math
import os
import shutil
import unittest
import urllib.error
import urllib.request

import torch
import torch.nn as nn

import util
from innserve.export import ExportError, export_sbi

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "..", "tests", "fixtures", "sbi"))
NAMES = ("sbi_maf", "sbi_maf_fc", "sbi_nsf", "sbi_maf_rqs", "sbi_zuko_maf", "sbi_zuko_nsf",
         "sbi_mdn", "sbi_made")


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def manifest(n):
    """The manifest stored in fixture n (read from the safetensors header)."""
    with open(os.path.join(FIXTURES, n + ".safetensors"), "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return json.loads(json.loads(f.read(size))["__metadata__"]["manifest"])


def check_samples(tc, name, case, seed, who):
    """40000 samples of model `name` at case["y"] have the mean and covariance of `who`'s
    case["n"] draws (case["mean"], case["cov"]) within 5 and 6 standard errors."""
    n = 40000
    ans = post(D.url + "/v1/models/%s/sample" % name,
               {"y": [case["y"]], "num_samples": n, "seed": seed})
    xs = torch.tensor(ans["samples"][0], dtype=torch.float64)
    mean, cov = xs.mean(0), torch.cov(xs.T)
    f = 1.0 / n + 1.0 / case["n"]
    wm = torch.tensor(case["mean"], dtype=torch.float64)
    wc = torch.tensor(case["cov"], dtype=torch.float64)
    d = torch.diagonal(wc)
    tc.assertTrue(bool(((mean - wm).abs() < 5 * (d * f).sqrt()).all()),
                  "mean %s vs %s %s" % (mean.tolist(), who, case["mean"]))
    se = ((d[:, None] * d[None, :] + wc ** 2) * f).sqrt()
    tc.assertTrue(bool(((cov - wc).abs() < 6 * se).all()),
                  "cov %s vs %s %s" % (cov.tolist(), who, case["cov"]))


def setUpModule():
    global D, TMP, EXP
    TMP = util.TmpDir("innserve-sbi-")
    EXP = {}
    for n in NAMES:
        shutil.copy(os.path.join(FIXTURES, n + ".safetensors"), TMP.path)
        with open(os.path.join(FIXTURES, n + ".expect.json")) as f:
            EXP[n] = json.load(f)
    D = util.Daemon(TMP.path)
    if not D.wait_ready(30):
        raise RuntimeError("daemon not ready:\n" + "\n".join(D.log[-20:]))


def tearDownModule():
    D.stop()
    TMP.cleanup()


class ServedSbiPosterior(unittest.TestCase):
    def test_log_prob_matches_sbi(self):
        worst, per = 0.0, {}
        for n in NAMES:
            for case in EXP[n]["log_prob"]:
                got = post(D.url + "/v1/models/%s/log_prob" % n,
                           {"x": case["x"], "y": case["y"]})["log_prob"]
                self.assertEqual(len(got), len(case["log_prob"]))
                outside = 0
                for g, w in zip(got, case["log_prob"]):
                    if w is None:
                        self.assertIsNone(g, "%s: sbi gives -inf, innserve %r" % (n, g))
                        outside += 1
                        continue
                    rel = abs(g - w) / max(abs(w), 1e-300)
                    worst = max(worst, rel)
                    per[n] = "%.1e" % max(rel, float(per.get(n, 0)))
                    self.assertLessEqual(abs(g - w), 1e-5 * abs(w), "%s: %r vs sbi %r" % (n, g, w))
                self.assertGreater(outside, 0)
        print("\nlog_prob vs sbi: worst relative difference %.2e (%s)" % (worst, per))

    def test_inverse_given_z_matches_sbi(self):
        worst, per = 0.0, {}
        for n in NAMES:
            for case in EXP[n]["inverse"]:
                got = post(D.url + "/v1/models/%s/inverse" % n,
                           {"z": case["z"], "y": case["y"]})["x"]
                for gr, wr in zip(got, case["x"]):
                    for g, w in zip(gr, wr):
                        rel = abs(g - w) / max(abs(w), 1e-3)
                        worst = max(worst, rel)
                        per[n] = "%.1e" % max(rel, float(per.get(n, 0)))
                        self.assertLessEqual(abs(g - w), 1e-5 * max(abs(w), 1e-1),
                                             "%s: %r vs sbi %r" % (n, g, w))
        print("\ninverse vs sbi: worst relative difference %.2e (%s)" % (worst, per))

    def test_samples_inside_prior_and_acceptance(self):
        for n in NAMES:
            meta = json.loads(urllib.request.urlopen(D.url + "/v1/models/" + n).read())
            lo, hi = meta["prior"]["low"], meta["prior"]["high"]
            a = EXP[n]["sbi_acceptance"]
            ans = post(D.url + "/v1/models/%s/sample" % n,
                       {"y": [a["y"]], "num_samples": 10000, "seed": 3})
            for row in ans["samples"][0]:
                for v, l, h in zip(row, lo, hi):
                    self.assertTrue(l <= v <= h)
            rate = ans["acceptance"]["rate"][0]
            # sbi's estimate is random too: 5 standard errors of both
            se = math.sqrt(a["rate"] * (1 - a["rate"]) / a["num_rejection_samples"]) * 2
            self.assertLess(abs(rate - a["rate"]), 5 * se + 1e-3,
                            "%s: acceptance %g, sbi's %g" % (n, rate, a["rate"]))
            lc = post(D.url + "/v1/models/%s/log_prob" % n,
                      {"x": [[0.0, 0.0, 0.0]], "y": [a["y"]], "leakage_correction": True})
            plain = post(D.url + "/v1/models/%s/log_prob" % n,
                         {"x": [[0.0, 0.0, 0.0]], "y": [a["y"]]})
            acc = lc["acceptance"]
            self.assertAlmostEqual(lc["log_prob"][0] - plain["log_prob"][0],
                                   -math.log(acc["accepted"][0] / acc["drawn"][0]), places=12)


class MixtureDensityNetwork(unittest.TestCase):
    def test_sampling_distribution_matches_sbi(self):
        for i, case in enumerate(EXP["sbi_mdn"]["samples"]):
            check_samples(self, "sbi_mdn", case, 5 + i, "sbi")

    def test_no_forward_or_inverse(self):
        meta = json.loads(urllib.request.urlopen(D.url + "/v1/models/sbi_mdn").read())
        self.assertEqual(meta["kind"], "mdn")
        self.assertEqual(meta["operations"], ["sample", "log_prob"])
        for op, body in (("forward", {"x": [[0, 0, 0]], "y": [[0, 0]]}),
                         ("inverse", {"z": [[0, 0, 0]], "y": [[0, 0]]})):
            with self.assertRaises(urllib.error.HTTPError) as cm:
                post(D.url + "/v1/models/sbi_mdn/" + op, body)
            self.assertEqual(cm.exception.code, 422)
            err = json.loads(cm.exception.read())
            self.assertEqual(err["error"], "%s is not defined for an mdn model (a mixture "
                             "density network is not a bijection: use sample or log_prob)" % op)

    def test_manifest(self):
        m = manifest("sbi_mdn")
        self.assertEqual(m["kind"], "mdn")
        self.assertEqual(m["mixture"]["components"], 4)
        self.assertEqual(m["mixture"]["epsilon"], 1e-4)
        self.assertEqual(set(m["standardize"]), {"x", "y"})
        self.assertEqual(m["prior"]["type"], "box")
        self.assertEqual(m["source"]["sbi"], "0.27.0")


class MixtureOfGaussiansMADE(unittest.TestCase):
    def test_sampling_distribution_matches_the_density(self):
        for i, case in enumerate(EXP["sbi_made"]["samples"]):
            check_samples(self, "sbi_made", case, 7 + i, "reference")

    def test_manifest_and_operations(self):
        m = manifest("sbi_made")
        self.assertEqual(m["kind"], "mdn")
        self.assertEqual(m["mixture"]["type"], "made")
        self.assertEqual(m["mixture"]["components"], 3)
        self.assertEqual(m["mixture"]["epsilon"], 1e-2)
        self.assertEqual(len(m["mixture"]["blocks"]), 5)
        self.assertEqual(set(m["standardize"]), {"x", "y"})
        self.assertEqual(m["source"]["nflows"], "0.14")
        meta = json.loads(urllib.request.urlopen(D.url + "/v1/models/sbi_made").read())
        self.assertEqual(meta["operations"], ["sample", "log_prob"])


class Manifests(unittest.TestCase):
    def test_blocks_and_versions_recorded(self):
        want = {"sbi_nsf": {"RQSCoupling", "LULinear"},
                "sbi_maf_rqs": {"MaskedRQSAutoregressive", "PermuteRandom"},
                "sbi_zuko_maf": {"ZukoMaskedAutoregressive"},
                "sbi_zuko_nsf": {"ZukoMaskedAutoregressive"}}
        for n, types in want.items():
            m = manifest(n)
            self.assertEqual({b["type"] for b in m["blocks"]}, types, n)
            self.assertEqual(set(m["standardize"]), {"x", "y"}, n)
            self.assertEqual(m["prior"]["type"], "box", n)
            lib = "zuko" if "zuko" in n else "nflows"
            self.assertTrue(m["source"].get(lib), n)
            if lib == "zuko":
                # zuko 1.6 (these fixtures): its default slope is 1e-3
                self.assertEqual(m["source"]["zuko"], "1.6.0")
                for b in m["blocks"]:
                    self.assertEqual(b["transform"]["slope"], 1e-3)
                    self.assertEqual(b["transform"]["type"], "affine" if "maf" in n else "rqs")


class PythonClient(unittest.TestCase):
    def test_minus_inf_and_options(self):
        from innserve import Client
        c = Client(D.url, timeout=30)
        case = EXP["sbi_maf"]["log_prob"][0]
        lp = [float(v) for v in c.log_prob("sbi_maf", case["x"], case["y"])]
        for g, w in zip(lp, case["log_prob"]):
            if w is None:
                self.assertEqual(g, float("-inf"))
            else:
                self.assertLessEqual(abs(g - w), 1e-5 * abs(w))
        lc = [float(v) for v in c.log_prob("sbi_maf", case["x"], case["y"],
                                           leakage_correction=True, leakage_samples=500, seed=4)]
        self.assertGreater(lc[0], lp[0])   # divided by a mass below 1
        r = c.sample("sbi_maf", case["y"], num_samples=50, seed=1, outputs=["samples", "log_prob"],
                     reject_outside_prior=False)
        self.assertNotIn("acceptance", r)
        r = c.sample("sbi_maf", case["y"], num_samples=50, seed=1)
        self.assertIn("acceptance", r)


class Refusals(unittest.TestCase):
    def _raises(self, obj, needle, **kw):
        with self.assertRaises(ExportError) as cm:
            export_sbi(obj, os.path.join(TMP.path, "never.safetensors"), **kw)
        self.assertIn(needle, str(cm.exception))
        self.assertFalse(os.path.exists(os.path.join(TMP.path, "never.safetensors")))

    def test_not_an_sbi_mdn_refused(self):
        MixtureDensityEstimator = type("MixtureDensityEstimator", (nn.Module,), {})
        self._raises(MixtureDensityEstimator(), "MixtureDensityEstimator has no _logits_layer "
                     "(not sbi's MultivariateGaussianMDN)")

    def _zuko(self, transforms):
        ZukoFlow = type("ZukoFlow", (nn.Module,), {})
        Flow = type("Flow", (nn.Module,), {})
        Lazy = type("LazyComposedTransform", (nn.Module,), {})
        est, est.net = ZukoFlow(), Flow()
        est.net.transform = Lazy()
        est.net.transform.transforms = nn.ModuleList(transforms)
        est._embedding_net = nn.Identity()
        return est

    def test_other_zuko_flows_refused_naming_the_module(self):
        # zuko's NAF / UNAF / SOSPF / CNF: other transforms, or other univariate maps
        for name in ("NeuralAutoregressiveTransform", "FreeFormJacobianTransform"):
            T = type(name, (nn.Module,), {})
            self._raises(self._zuko([T()]), "transform.transforms.0 (%s): %s is not "
                         "supported yet" % (name, name))
        MAT = type("MaskedAutoregressiveTransform", (nn.Module,), {})
        Monotonic = type("UnconstrainedMonotonicTransform", (), {})
        t = MAT()
        t.univariate, t.shapes = Monotonic, ((), ())
        UD = type("UnconditionalDistribution", (nn.Module,), {})
        est = self._zuko([t])
        est.net.base = UD()
        est.net.base.forward = lambda: torch.distributions.Independent(
            torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
        self._raises(est, "transform.transforms.0 (MaskedAutoregressiveTransform): univariate "
                     "transform UnconstrainedMonotonicTransform is not supported yet")
        UZ = type("ZukoUnconditionalFlow", (nn.Module,), {})
        self._raises(UZ(), "ZukoUnconditionalFlow is not supported yet")

    def _flow(self, transforms, embedding=None, base="StandardNormal"):
        Flow = type("Flow", (nn.Module,), {})
        Composite = type("CompositeTransform", (nn.Module,), {})
        f = Flow()
        f._transform = Composite()
        f._transform._transforms = nn.ModuleList(transforms)
        f._distribution = type(base, (nn.Module,), {})()
        f._embedding_net = embedding if embedding is not None else nn.Identity()
        return f

    def test_other_layers_refused_naming_the_module(self):
        Spline = type("MaskedUMNNAutoregressiveTransform", (nn.Module,), {})
        Perm = type("RandomPermutation", (nn.Module,), {})
        p = Perm()
        p.register_buffer("_permutation", torch.tensor([1, 0]))
        self._raises(self._flow([p, Spline()]),
                     "_transform._transforms.1 (MaskedUMNNAutoregressiveTransform): "
                     "MaskedUMNNAutoregressiveTransform is not supported yet")
        self._raises(self._flow([p], base="MixtureOfGaussians"),
                     "base distribution: MixtureOfGaussians is not supported yet")

    def test_prior_that_is_not_a_box(self):
        DirectPosterior = type("DirectPosterior", (nn.Module,), {})
        d = DirectPosterior()
        d.posterior_estimator = nn.Identity()
        d.prior = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
        self._raises(d, "prior: Normal is not supported yet")


if __name__ == "__main__":
    unittest.main()
