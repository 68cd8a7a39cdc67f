"""innserve.Client with an image model served by the daemon: a FrEIA GLOW flow on RGB
(3, 4, 4) images with convolutional subnets and ActNorm, exported with
``image={"low": 0, "high": 1, "levels": 256}``.  numpy arrays of shape (B, C, H, W) go in
and come back (forward, inverse, samples (n_obs, N, C, H, W), NPY), bits per dimension
follow the documented formula, and a PNG grid decoded by PIL (or zlib when PIL is missing)
holds the samples of the same seed mapped to 0..255.  Needs the real FrEIA
(INNSERVE_FREIA_PATH or installed); skipped otherwise.
"""

import io
import math
import os
import struct
import unittest
import zlib

import util
import numpy as np
import torch
import torch.nn as nn

import innserve
from innserve import Client
from innserve.export import ExportError, export

_real = util.real_freia()


def conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, cout, 3, padding=1))


def png_pixels(data):
    """(height, width, channels) uint8 array of a PNG: PIL when installed, else zlib."""
    try:
        from PIL import Image
        im = Image.open(io.BytesIO(data))
        im.load()
        return np.asarray(im).reshape(im.size[1], im.size[0], -1)
    except ImportError:
        pass
    off, idat, w, h, ct = 8, b"", 0, 0, 0
    while off < len(data):
        n, t = struct.unpack(">I4s", data[off:off + 8])
        d = data[off + 8:off + 8 + n]
        if t == b"IHDR":
            w, h, _, ct = struct.unpack(">IIBB", d[:10])
        elif t == b"IDAT":
            idat += d
        off += 12 + n
    ch = 3 if ct == 2 else 1
    raw = zlib.decompress(idat)
    rows = [raw[y * (w * ch + 1) + 1:(y + 1) * (w * ch + 1)] for y in range(h)]
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(h, w, ch)


@unittest.skipIf(_real is None, "FrEIA not available (set INNSERVE_FREIA_PATH to a checkout)")
class TestImageClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        F, _ = _real
        cls.tmp = util.TmpDir("innserve-image-")
        torch.manual_seed(3)
        inn = F.SequenceINN(3, 4, 4)
        inn.append(F.ActNorm)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=conv, clamp=1.5)
        inn.append(F.PermuteRandom, seed=2)
        inn.append(F.GLOWCouplingBlock, subnet_constructor=conv, clamp=1.5)
        with torch.no_grad():
            inn(torch.rand(16, 3, 4, 4))       # ActNorm's data-dependent initialization
            for p in inn.parameters():
                if p.is_floating_point():
                    p.add_(0.05 * torch.randn(p.shape))
        path = os.path.join(cls.tmp.path, "rgb.safetensors")
        try:
            export(inn, path, description="RGB image flow (test)",
                   image={"low": 0.0, "high": 1.0, "levels": 256})
        except ExportError as e:
            cls.tmp.cleanup()
            raise unittest.SkipTest("this image flow is not exported yet: %s" % e)
        cls.d = util.Daemon(cls.tmp.path)
        if not cls.d.wait_ready(30):
            raise RuntimeError("daemon not ready:\n" + "\n".join(cls.d.log[-20:]))
        cls.c = Client(cls.d.url, timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.tmp.cleanup()

    def test_export_image_refusals(self):
        F, _ = _real
        path = os.path.join(self.tmp.path, "bad.safetensors.tmp")
        vec = F.SequenceINN(4)
        vec.append(F.PermuteRandom, seed=1)
        for model, image, msg in ((vec, {"low": 0, "high": 1}, "needs a model whose input has "
                                   "shape (C, H, W)"),
                                  (None, {"low": 1, "high": 0}, "finite low < high"),
                                  (None, {"low": 0, "high": 1, "mode": "rgb"}, "image must be")):
            if model is None:
                model = F.SequenceINN(1, 2, 2)
                model.append(F.PermuteRandom, seed=1)
            with self.assertRaises(ExportError) as e:
                export(model, path, image=image)
            self.assertIn(msg, str(e.exception))

    def test_metadata(self):
        m = self.c.metadata("rgb")
        self.assertEqual(m["shape"], {"x": [3, 4, 4], "z": [3, 4, 4]})
        self.assertEqual(m["image"], {"low": 0.0, "high": 1.0, "levels": 256,
                                      "bin_width": 1 / 256})

    def test_forward_inverse_shapes(self):
        x = np.random.default_rng(0).random((3, 3, 4, 4))
        f = self.c.forward("rgb", x)
        self.assertEqual(f["z"].shape, (3, 3, 4, 4))
        flat = self.c.forward("rgb", x.reshape(3, 48))
        np.testing.assert_array_equal(f["z"], flat["z"])
        inv = self.c.inverse("rgb", f["z"])
        self.assertEqual(inv["x"].shape, (3, 3, 4, 4))
        np.testing.assert_allclose(inv["x"], x, atol=1e-5)

    def test_npy_request_bodies(self):
        x = np.random.default_rng(1).random((4, 3, 4, 4))
        f = self.c.forward("rgb", x)
        fn = self.c.forward("rgb", x, npy=True)
        np.testing.assert_array_equal(f["z"], fn["z"])
        np.testing.assert_array_equal(f["log_det"], fn["log_det"])
        inv = self.c.inverse("rgb", fn["z"], npy=True, tol=1e-6)
        np.testing.assert_allclose(inv["x"], x, atol=1e-5)
        np.testing.assert_array_equal(self.c.log_prob("rgb", x, npy=True),
                                      self.c.log_prob("rgb", x))
        with self.assertRaises(innserve.ApiError) as e:
            self.c.forward("rgb", x[:, :2], npy=True)
        self.assertEqual(e.exception.code, "bad_shape")
        self.assertIn("x has shape (4, 2, 4, 4)", e.exception.message)

    def test_bits_per_dim(self):
        x = (np.arange(96).reshape(2, 3, 4, 4) % 7 + 0.5) / 8
        lp = self.c.log_prob("rgb", x)
        bpd = self.c.bits_per_dim("rgb", x)
        self.assertEqual(bpd.shape, (2,))
        np.testing.assert_allclose(bpd, -(lp + 48 * math.log(1 / 256)) / (48 * math.log(2)),
                                   rtol=1e-12)

    def test_samples_npy_and_png(self):
        s = self.c.sample("rgb", num_samples=5, seed=4)
        self.assertEqual(s["samples"].shape, (1, 5, 3, 4, 4))
        npy = self.c.sample("rgb", num_samples=5, seed=4, format="npy")
        self.assertEqual(npy.shape, (1, 5, 3, 4, 4))
        np.testing.assert_array_equal(npy, s["samples"].astype(np.float32))
        png = self.c.sample("rgb", num_samples=5, seed=4, format="png", scale=3)
        px = png_pixels(png)
        self.assertEqual(px.shape, (12, 5 * 12 + 4 * 2, 3))
        want = np.clip(np.floor(npy.astype(np.float64) * 255 + 0.5), 0, 255)
        for k in range(5):
            for c in range(3):
                tile = px[:, k * 14:k * 14 + 12, c]
                np.testing.assert_array_equal(tile, np.kron(want[0, k, c], np.ones((3, 3))))
        self.assertTrue(np.all(px[:, 12:14] == 128))
        with self.assertRaises(ValueError):
            self.c.sample("rgb", num_samples=2, scale=2)


if __name__ == "__main__":
    unittest.main()
