"""innserve.Client against a live daemon on loopback (and against small fake servers for
timeouts and retries): every endpoint, numpy and list modes, CSV/NPY output, error paths."""

import http.server
import json
import math
import os
import socket
import threading
import time
import unittest

import util
import served
import numpy as np
import torch

import innserve
from innserve import ApiError, Client, ConnectionFailed, parse_csv, parse_npy
from innserve import client as client_mod

F64 = torch.float64


def setUpModule():
    global D, RES, C, D_DIR
    d, RES = served.repository()
    D_DIR = d
    D = util.Daemon(d)
    if not D.wait_ready(30):
        raise RuntimeError("daemon not ready:\n" + "\n".join(D.log[-20:]))
    C = Client(D.url, timeout=30)


def tearDownModule():
    D.stop()


def close(a, b, rtol=1e-5, atol=1e-5):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= atol + rtol * np.abs(b)))


class TestEndpoints(unittest.TestCase):
    def test_health_ready(self):
        self.assertTrue(C.health())
        self.assertTrue(C.ready())

    def test_models(self):
        ms = {m["name"]: m for m in C.models()}
        self.assertEqual(set(ms), {"ik", "flow", "inn", "surr", "ires"})
        self.assertEqual(ms["ik"]["kind"], "cinn")
        self.assertEqual(ms["ik"]["state"], "READY")
        self.assertEqual(ms["ik"]["dims"]["x"], 4)
        self.assertIn("version", ms["ik"])

    def test_metadata(self):
        m = C.metadata("ik")
        for k in ("name", "version", "kind", "sha256", "dims", "names", "blocks", "parameters",
                  "numeric_inverse", "description"):
            self.assertIn(k, m)
        self.assertEqual(m["names"]["x"], ["h", "a1", "a2", "a3"])
        self.assertEqual(m["names"]["y"], ["px", "py"])
        self.assertEqual(m["description"], "test cINN")
        self.assertEqual(len(m["blocks"]), 3)
        self.assertFalse(m["numeric_inverse"])
        self.assertTrue(C.metadata("ires")["numeric_inverse"])
        import hashlib
        with open(RES["ik"].path, "rb") as f:
            self.assertEqual(m["sha256"], hashlib.sha256(f.read()).hexdigest())

    def test_forward_inverse_cinn(self):
        M = RES["ik"].model
        x = np.array([[0.1, 0.2, -0.3, 0.4], [0.0, -0.5, 0.5, 1.0]], dtype=np.float32)
        y = np.array([[1.5, 0.0]], dtype=np.float32)
        r = C.forward("ik", x, y)
        self.assertEqual(r["model"], "ik")
        self.assertIsInstance(r["z"], np.ndarray)
        want = M.forward(torch.tensor(x, dtype=F64), torch.tensor(y, dtype=F64).expand(2, 2))
        self.assertTrue(close(r["z"], want["z"].numpy()))
        self.assertTrue(close(r["log_det"], want["log_det"].numpy(), atol=4e-5))
        inv = C.inverse("ik", r["z"], y)
        self.assertTrue(close(inv["x"], x, atol=2e-5))
        self.assertTrue(close(inv["log_det"], -r["log_det"], atol=4e-5))

    def test_flat_vector_is_one_row(self):
        r = C.forward("flow", [0.1, 0.2, 0.3])
        self.assertEqual(r["z"].shape, (1, 3))

    def test_lists_without_numpy(self):
        c = Client(D.url, numpy=False)
        r = c.forward("flow", [[0.1, 0.2, 0.3]])
        self.assertIsInstance(r["z"], list)
        self.assertIsInstance(r["z"][0][0], float)
        s = c.sample("flow", num_samples=3, seed=1)
        self.assertEqual(len(s["samples"][0]), 3)

    def test_inn_forward_inverse(self):
        M = RES["inn"].model
        x = np.array([[0.3, -0.2, 0.1]], dtype=np.float32)
        r = C.forward("inn", x)
        want = M.forward(torch.tensor(x, dtype=F64))
        self.assertTrue(close(r["z"], want["z"].numpy()))
        self.assertTrue(close(r["y"], want["y_out"].numpy()))
        inv = C.inverse("inn", r["z"], r["y"])
        xw, _ = M.inverse(torch.tensor(r["z"], dtype=F64), torch.tensor(r["y"], dtype=F64))
        self.assertTrue(close(inv["x"], xw.numpy(), atol=2e-5))

    def test_mlp_forward(self):
        x = np.array([[0.1, 0.2, 0.3]])
        r = C.forward("surr", x)
        want = RES["surr"].model.forward(torch.tensor(x, dtype=F64).float().double())
        self.assertTrue(close(r["y"], want["y_out"].numpy()))

    def test_sample_json(self):
        r = C.sample("ik", y=[[1.5, 0.0], [0.5, 1.0]], num_samples=50, seed=7,
                     outputs=["samples", "log_prob"])
        self.assertEqual(r["seed"], 7)
        self.assertEqual(r["samples"].shape, (2, 50, 4))
        self.assertEqual(r["log_prob"].shape, (2, 50))
        again = C.sample("ik", y=[[1.5, 0.0], [0.5, 1.0]], num_samples=50, seed=7)
        self.assertTrue(np.array_equal(r["samples"], again["samples"]))
        other = C.sample("ik", y=[[1.5, 0.0], [0.5, 1.0]], num_samples=50, seed=8)
        self.assertFalse(np.array_equal(r["samples"], other["samples"]))
        # log_prob of a sample equals the density endpoint at that sample
        lp = C.log_prob("ik", r["samples"][0][:5], [1.5, 0.0])
        self.assertTrue(close(lp, r["log_prob"][0][:5], rtol=1e-4, atol=1e-3))

    def test_sample_seed_echoed_when_absent(self):
        r = C.sample("flow", num_samples=4)
        self.assertIsInstance(r["seed"], int)
        again = C.sample("flow", num_samples=4, seed=r["seed"])
        self.assertTrue(np.array_equal(r["samples"], again["samples"]))

    def test_sample_summary_and_temperature(self):
        r = C.sample("ik", y=[1.5, 0.0], num_samples=400, seed=1, outputs=["summary"],
                     quantiles=[0.1, 0.5, 0.9])
        s = r["summary"]
        self.assertEqual(s["mean"].shape, (1, 4))
        self.assertEqual(set(s["quantiles"]), {"0.1", "0.5", "0.9"})
        self.assertTrue(np.all(s["quantiles"]["0.1"] <= s["quantiles"]["0.9"]))
        cold = C.sample("ik", y=[1.5, 0.0], num_samples=400, seed=1, outputs=["summary"],
                        temperature=0.1)
        self.assertTrue(np.all(cold["summary"]["std"] < s["std"]))

    def test_sample_resimulation_inn(self):
        r = C.sample("inn", y=[[0.2, -0.1]], num_samples=20, seed=3,
                     outputs=["samples", "resimulation"])
        self.assertEqual(r["resimulation"]["rmse"].shape, (1,))
        self.assertTrue(math.isfinite(float(r["resimulation"]["rmse"][0])))

    def test_sample_csv(self):
        text = C.sample("ik", y=[[1.5, 0.0], [0.0, 1.0]], num_samples=5, seed=2, format="csv",
                        outputs=["samples", "log_prob"])
        header, rows = parse_csv(text)
        self.assertEqual(header, ["obs", "sample", "h", "a1", "a2", "a3", "log_prob"])
        self.assertEqual(len(rows), 10)
        self.assertEqual([r[:2] for r in rows[:6]], [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [1, 0]])
        j = C.sample("ik", y=[[1.5, 0.0], [0.0, 1.0]], num_samples=5, seed=2)
        csv = np.array([r[2:6] for r in rows]).reshape(2, 5, 4)
        self.assertTrue(np.array_equal(csv.astype(np.float32), j["samples"].astype(np.float32)))

    def test_sample_npy(self):
        a = C.sample("ik", y=[[1.5, 0.0], [0.0, 1.0]], num_samples=6, seed=4, format="npy")
        j = C.sample("ik", y=[[1.5, 0.0], [0.0, 1.0]], num_samples=6, seed=4)
        self.assertEqual(a.shape, (2, 6, 4))
        # JSON prints the shortest decimal of each float32: equal after rounding to float32
        self.assertTrue(np.array_equal(a, j["samples"].astype(np.float32)))

    def test_npy_parser_without_numpy(self):
        data, _ = C._post("flow", "sample", {"num_samples": 3, "seed": 5},
                          accept="application/x-npy", raw=True)
        saved = client_mod._np
        client_mod._np = None
        try:
            nested, shape = parse_npy(data)
        finally:
            client_mod._np = saved
        self.assertEqual(shape, (1, 3, 3))
        j = C.sample("flow", num_samples=3, seed=5)
        self.assertTrue(np.array_equal(np.array(nested, dtype=np.float32),
                                       j["samples"].astype(np.float32)))

    def test_log_prob(self):
        for name in ("flow", "ik", "inn"):
            M = RES[name].model
            x = torch.tensor([[0.1, -0.2, 0.3, 0.0][:M.dx]], dtype=F64).float().double()
            y = None
            if M.kind == "cinn":
                y = torch.tensor([[1.5, 0.0]], dtype=F64)
            if M.kind == "inn":
                y = torch.tensor([[0.2, -0.1]], dtype=F64)
            lp = C.log_prob(name, x.numpy(), None if y is None else y.numpy())
            want = M.log_prob(x, y)
            self.assertTrue(close(lp, want.numpy(), rtol=1e-4, atol=1e-3), name)

    def test_preimage(self):
        target = C.forward("surr", [[0.2, -0.1, 0.4]])["y"]
        # one optimizer step still answers (the Levenberg-Marquardt polish follows it): the
        # one solution asked for, its residual ||f(x) - target|| recomputed from the float x
        r = C.preimage("surr", target, num_solutions=1, max_steps=1, seed=3)
        self.assertEqual((r["method"], r["seed"], len(r["solutions"])), ("gradient", 3, 1))
        self.assertEqual(len(r["solutions"][0]), 1)
        one = r["solutions"][0][0]
        self.assertEqual(one["x"].shape, (3,))
        fx = C.forward("surr", [one["x"].tolist()])["y"][0]
        self.assertAlmostEqual(one["residual"], math.dist(fx, target[0]), delta=1e-6)
        r = C.preimage("surr", target, num_solutions=4, max_steps=300, seed=1,
                       bounds=([-2, -2, -2], [2, 2, 2]))
        sols = r["solutions"][0]
        self.assertGreaterEqual(len(sols), 1)
        self.assertEqual(sols[0]["x"].shape, (3,))
        res = [s["residual"] for s in sols]
        self.assertEqual(res, sorted(res))
        self.assertLess(res[0], 0.05)

    def test_certificate(self):
        c = C.certificate("flow")
        self.assertTrue(c["invertible"])
        self.assertEqual(c["guarantee"], "analytic")
        self.assertEqual(len(c["blocks"]), 3)
        c = C.certificate("ires")
        self.assertTrue(c["invertible"])
        self.assertEqual(c["guarantee"], "contraction")
        self.assertLess(c["blocks"][0]["lipschitz"], 1.0)
        self.assertFalse(C.certificate("surr")["invertible"])

    def test_numeric_inverse_solver(self):
        z = C.forward("ires", [[0.5, -0.5, 1.0], [0.0, 0.1, 0.2]])["z"]
        r = C.inverse("ires", z, tol=1e-7)
        self.assertIn("solver", r)
        s = r["solver"]
        self.assertTrue(all(s["converged"]))
        self.assertTrue(close(r["x"], [[0.5, -0.5, 1.0], [0.0, 0.1, 0.2]], atol=2e-5))

    def test_metrics(self):
        text = C.metrics()
        self.assertIn("innserve_requests_total", text)
        self.assertIn("# TYPE", text)


class TestErrors(unittest.TestCase):
    def assertApiError(self, fn, status, code=None, contains=None):
        with self.assertRaises(ApiError) as cm:
            fn()
        e = cm.exception
        self.assertEqual(e.status, status, str(e))
        if code:
            self.assertEqual(e.code, code)
        if contains:
            self.assertIn(contains, e.message)
        self.assertIn(str(status), str(e))
        return e

    def test_unknown_model(self):
        e = self.assertApiError(lambda: C.metadata("nope"), 404, contains="nope")
        self.assertTrue(e.code)
        self.assertApiError(lambda: C.forward("nope", [[1.0]]), 404)

    def test_bad_shape_names_field(self):
        self.assertApiError(lambda: C.forward("flow", [[1.0, 2.0]]), 400, contains="x")
        self.assertApiError(lambda: C.forward("ik", [[0.1, 0.2, 0.3, 0.4]]), 400, contains="y")

    def test_ragged_and_non_numbers(self):
        self.assertApiError(lambda: C.request("POST", "/v1/models/flow/forward",
                                              {"x": [[1, 2, 3], [1, 2]]}), 400)
        self.assertApiError(lambda: C.request("POST", "/v1/models/flow/forward",
                                              {"x": [["a", 2, 3]]}), 400)
        with self.assertRaises(ValueError):          # NaN never leaves the client
            C.forward("flow", [[float("nan"), 0, 0]])

    def test_non_finite_inputs_name_field_row_and_column(self):
        nan, inf = float("nan"), float("inf")
        tail = ": JSON has no NaN or Infinity, so the server cannot be sent it; send finite numbers"
        y = np.zeros((5, 2))
        y[3, 1] = nan
        cases = [
            (lambda: C.forward("ik", [[0.1, 0.2, 0.3, 0.4]] * 5, y=y), "y[3][1] is NaN"),
            (lambda: C.forward("flow", [[0, 0, 0], [0, inf, 0]]), "x[1][1] is Infinity"),
            (lambda: C.inverse("flow", np.array([0.0, 0.0, -inf])), "z[0][2] is -Infinity"),
            (lambda: C.sample("flow", num_samples=2, temperature=nan), "temperature is NaN"),
            (lambda: C.preimage("surr", [[0.1, 0.2]], bounds=([0, 0, -inf], [1, 1, 1])),
             "bounds.low[2] is -Infinity"),
            (lambda: C.log_prob("ik", [[0.1, 0.2, 0.3, 0.4]], y=[nan, 0.0]), "y[0][0] is NaN"),
        ]
        for fn, head in cases:
            with self.assertRaises(ValueError) as cm:
                fn()
            self.assertEqual(str(cm.exception), head + tail)

    def test_permanent_model_unavailable_is_not_retried(self):
        # a real daemon serving a model that fails to load beside one that works: the client
        # (3 retries) raises the 503 at once, the daemon sees one request
        tmp = util.TmpDir("innserve-unavail-")
        try:
            with open(os.path.join(tmp.path, "bad.safetensors"), "wb") as f:
                f.write(b"junk\n")
            with open(os.path.join(D_DIR, "flow.safetensors"), "rb") as f, \
                    open(os.path.join(tmp.path, "flow.safetensors"), "wb") as g:
                g.write(f.read())
            d = util.Daemon(tmp.path)
            try:
                self.assertTrue(d.wait_ready(30), "\n".join(d.log[-20:]))
                c = Client(d.url, retries=3, max_retry_wait=5)
                t0 = time.time()
                e = self.assertApiError(lambda: c.forward("bad", [[0.0, 0.0, 0.0]]), 503,
                                        "model_unavailable", "truncated")
                self.assertLess(time.time() - t0, 0.9)    # no Retry-After wait (1 s) happened
                self.assertEqual(e.headers.get("Retry-After"), "1")
                d.stop()                                  # its log is complete
                hits = [ln for ln in d.log if '"path":"/v1/models/bad/forward"' in ln]
                self.assertEqual(len(hits), 1, hits)
            finally:
                d.stop()
        finally:
            tmp.cleanup()

    def test_operation_not_defined(self):
        self.assertApiError(lambda: C.inverse("surr", [[0.1, 0.2]]), 422)
        self.assertApiError(lambda: C.sample("surr", num_samples=3), 422)
        self.assertApiError(lambda: C.log_prob("surr", [[0.1, 0.2, 0.3]]), 422)

    def test_unknown_route(self):
        self.assertApiError(lambda: C.request("GET", "/v1/nothing"), 404)

    def test_error_is_apierror_with_body(self):
        try:
            C.metadata("nope")
        except ApiError as e:
            j = json.loads(e.body)
            self.assertEqual(j["code"], e.code)
            self.assertEqual(j["error"], e.message)

    def test_connection_refused(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        c = Client("http://127.0.0.1:%d" % port, timeout=2)
        with self.assertRaises(ConnectionFailed) as cm:
            c.models()
        self.assertIsNone(cm.exception.status)
        self.assertEqual(cm.exception.code, "connection_error")
        self.assertIsInstance(cm.exception, ApiError)
        self.assertFalse(c.wait_ready(0.3, 0.1))

    def test_timeout(self):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        try:
            c = Client("http://127.0.0.1:%d" % port, timeout=0.5)
            t0 = time.time()
            with self.assertRaises(ConnectionFailed) as cm:
                c.models()
            self.assertEqual(cm.exception.code, "timeout")
            self.assertLess(time.time() - t0, 5)
        finally:
            srv.close()


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers `fails` times with `status` (+ Retry-After), then 200."""
    plan = []
    seen = []

    def log_message(self, *a):
        pass

    def _answer(self):
        self.seen.append(time.time())
        if self.plan:
            status, retry, *err = self.plan.pop(0)
            code, msg = err if err else ("overloaded", "queue full")
            body = json.dumps({"error": msg, "code": code}).encode()
            self.send_response(status)
            if retry is not None:
                self.send_header("Retry-After", retry)
        else:
            body = json.dumps({"models": []}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer


class TestRetries(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
        cls.t = threading.Thread(target=cls.srv.serve_forever, daemon=True)
        cls.t.start()
        cls.url = "http://127.0.0.1:%d" % cls.srv.server_address[1]

    @classmethod
    def tearDownClass(cls):
        cls.srv.shutdown()
        cls.srv.server_close()

    def setUp(self):
        _Flaky.plan = []
        _Flaky.seen = []

    def test_retry_after_503_and_429(self):
        _Flaky.plan = [(503, "0.3"), (429, "0.2")]
        t0 = time.time()
        self.assertEqual(Client(self.url, retries=3).models(), [])
        self.assertGreaterEqual(time.time() - t0, 0.45)
        self.assertEqual(len(_Flaky.seen), 3)
        self.assertGreaterEqual(_Flaky.seen[1] - _Flaky.seen[0], 0.28)

    def test_retry_after_is_capped(self):
        _Flaky.plan = [(503, "100")]
        t0 = time.time()
        Client(self.url, retries=1, max_retry_wait=0.2).models()
        self.assertLess(time.time() - t0, 5)

    def test_retries_exhausted(self):
        _Flaky.plan = [(503, "0")] * 3
        with self.assertRaises(ApiError) as cm:
            Client(self.url, retries=2).models()
        self.assertEqual(cm.exception.status, 503)
        self.assertEqual(cm.exception.code, "overloaded")
        self.assertEqual(cm.exception.headers.get("Retry-After"), "0")
        self.assertEqual(len(_Flaky.seen), 3)

    def test_no_retry_when_disabled_and_other_errors(self):
        _Flaky.plan = [(503, "0")]
        with self.assertRaises(ApiError):
            Client(self.url, retries=0).models()
        _Flaky.plan = [(500, None)]
        with self.assertRaises(ApiError) as cm:
            Client(self.url, retries=3).models()
        self.assertEqual(cm.exception.status, 500)
        self.assertEqual(len(_Flaky.seen), 2)

    def test_permanent_503_is_not_retried(self):
        _Flaky.plan = [(503, "0", "model_unavailable",
                        "model 'm' is unavailable: m.safetensors: file is truncated")]
        with self.assertRaises(ApiError) as cm:
            Client(self.url, retries=3).models()
        self.assertEqual((cm.exception.status, cm.exception.code), (503, "model_unavailable"))
        self.assertEqual(len(_Flaky.seen), 1)

    def test_transient_503s_are_retried(self):
        _Flaky.plan = [(503, "0", "model_unavailable", "model 'm' is still loading"),
                       (503, "0", "draining", "the server is shutting down"),
                       (503, "0", "out_of_memory", "out of memory"),
                       (503, "0", "overloaded", "the queue is full")]
        self.assertEqual(Client(self.url, retries=4).models(), [])
        self.assertEqual(len(_Flaky.seen), 5)

    def test_transient_decision(self):
        t = client_mod._transient
        self.assertTrue(t(429, b""))
        self.assertTrue(t(503, b"<html>bad gateway</html>"))      # a proxy's 503
        self.assertTrue(t(503, b'{"code":"overloaded","error":"queue full"}'))
        self.assertFalse(t(503, b'{"code":"model_unavailable","error":"model \'m\' is '
                                b'unavailable: bad file"}'))
        self.assertTrue(t(503, b'{"code":"model_unavailable","error":"model \'m\' is still '
                               b'loading"}'))
        self.assertFalse(t(500, b""))
        self.assertFalse(t(400, b'{"code":"invalid_json"}'))

    def test_retry_without_header_backs_off(self):
        _Flaky.plan = [(503, None)]
        self.assertEqual(Client(self.url, retries=1).models(), [])


class TestPackage(unittest.TestCase):
    def test_version_and_lazy_export(self):
        self.assertTrue(innserve.__version__)
        from innserve.export import ExportError
        self.assertIs(innserve.ExportError, ExportError)

    def test_client_imports_without_torch(self):
        import subprocess
        import sys
        code = ("import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None; "
                "import innserve; c = innserve.Client(); print(c.numpy)")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=os.path.join(util.HERE, ".."))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "False")


if __name__ == "__main__":
    unittest.main()
