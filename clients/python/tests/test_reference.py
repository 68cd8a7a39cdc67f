"""The exporter's float64 reference evaluation (innserve._reference, which computes the
test vectors every export embeds) against the golden fixtures of tests/fixtures/golden,
whose expectations come from an independent implementation (tests/fixtures/gen_fixtures.py) or
from nflows itself (tests/fixtures/gen_nflows.py):
forward, inverse and log-density of every fixture."""

import json
import os
import unittest

import util
import torch

from innserve import _safetensors
from innserve._reference import Model

GOLDEN = os.path.join(util.ROOT, "tests", "fixtures", "golden")
F64 = torch.float64


def load(path):
    t, meta = _safetensors.read(path)
    tensors = {}
    for k, (vals, shape) in t.items():
        tensors[k] = torch.tensor(vals).reshape(shape) if shape else torch.tensor(vals).reshape(())
    return Model(json.loads(meta["manifest"]), tensors)


def T(v):
    return None if v is None else torch.tensor(v, dtype=F64)


def close(got, want, rtol=1e-7, atol=1e-7):
    return float(((got - want).abs() - (atol + rtol * want.abs())).max()) <= 0


class TestReferenceVsGolden(unittest.TestCase):
    def test_every_fixture(self):
        if not os.path.isdir(GOLDEN):
            self.skipTest("no golden fixtures")
        names = sorted(f[:-12] for f in os.listdir(GOLDEN) if f.endswith(".expect.json"))
        self.assertGreater(len(names), 10)
        for name in names:
            with self.subTest(fixture=name):
                with open(os.path.join(GOLDEN, name + ".expect.json")) as f:
                    exp = json.load(f)
                M = load(os.path.join(GOLDEN, exp["file"]))
                fw = exp["forward"]
                with torch.no_grad():
                    got = M.forward(T(fw["x"]), T(fw.get("y")))
                for k in ("z", "y_out", "log_det"):
                    if fw.get(k) is not None:
                        self.assertTrue(close(got[k], T(fw[k]), atol=1e-7 * (M.dx + 4)),
                                        "%s %s: %s vs %s" % (name, k, got[k], fw[k]))
                inv = exp.get("inverse")
                if inv and inv.get("z") is not None and M.kind in ("flow", "cinn"):
                    with torch.no_grad():
                        x, ld = M.inverse(T(inv["z"]), T(inv.get("y")))
                    self.assertTrue(close(x, T(inv["x"]), 1e-6, 1e-6), name + " inverse")
                lp = exp.get("log_prob")
                if lp and lp.get("log_prob") is not None:
                    with torch.no_grad():
                        v = M.log_prob(T(lp["x"]), T(lp.get("y")))
                    self.assertTrue(close(v, T(lp["log_prob"]), 1e-7, 1e-6), name + " log_prob")


if __name__ == "__main__":
    unittest.main()
