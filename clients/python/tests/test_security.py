"""innserve.Client against a daemon that wants a bearer token and speaks HTTPS: token= and
token_file= (with the trailing newline a secret file usually has), cafile= for the test's
own CA; 401 without the token, a refused handshake without the CA.  The daemon serves the
repository's demo models (models/)."""

import os
import subprocess
import unittest

import util

from innserve import ApiError, Client, ConnectionFailed

MODELS = os.path.join(util.ROOT, "models")
MAKE_CERT = os.path.join(util.ROOT, "tests", "e2e", "make-cert.sh")


def setUpModule():
    global TMP, D, URL, CERT, TOKEN_FILE
    TMP = util.TmpDir("innserve-security-")
    r = subprocess.run(["/bin/sh", MAKE_CERT, TMP.path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError("tests/e2e/make-cert.sh failed: %s" % r.stdout.decode())
    CERT = os.path.join(TMP.path, "cert.pem")
    TOKEN_FILE = os.path.join(TMP.path, "token")
    with open(TOKEN_FILE, "w") as f:
        f.write("py-secret-1\n")
    os.chmod(TOKEN_FILE, 0o600)
    D = util.Daemon(MODELS, ["--tls-cert", CERT, "--tls-key", os.path.join(TMP.path, "key.pem"),
                             "--auth-token-file", TOKEN_FILE])
    URL = "https://localhost:%d" % D.port
    if not Client(URL, cafile=CERT, timeout=5).wait_ready(30):
        raise RuntimeError("daemon not ready:\n" + "\n".join(D.log[-20:]))


def tearDownModule():
    D.stop()
    TMP.cleanup()


class TestAuthTls(unittest.TestCase):
    def test_token_file(self):
        c = Client(URL, token_file=TOKEN_FILE, cafile=CERT)
        names = [m["name"] for m in c.models()]
        self.assertEqual(names, sorted(f[:-len(".safetensors")] for f in os.listdir(MODELS)
                                       if f.endswith(".safetensors")))
        post = c.sample("ik_cinn", y=[1.5, 0.0], num_samples=3, seed=1)
        self.assertEqual((post["model"], post["seed"], post["num_samples"]), ("ik_cinn", 1, 3))

    def test_token(self):
        c = Client(URL, token="py-secret-1", cafile=CERT, numpy=False)
        self.assertEqual(c.metadata("ik_mlp")["name"], "ik_mlp")
        self.assertIn("innserve_requests_total", c.metrics())

    def test_no_token_is_401(self):
        c = Client(URL, cafile=CERT, retries=0)
        with self.assertRaises(ApiError) as cm:
            c.models()
        e = cm.exception
        self.assertEqual((e.status, e.code), (401, "unauthorized"))
        self.assertEqual(e.message, "this server requires a bearer token: send the header "
                                    "'Authorization: Bearer <token>'")
        self.assertEqual(e.headers.get("WWW-Authenticate"), 'Bearer realm="innserve"')
        # the probes stay open
        self.assertTrue(c.health())
        self.assertTrue(c.ready())

    def test_wrong_token_is_401(self):
        c = Client(URL, token="py-secret-2", cafile=CERT, retries=0)
        with self.assertRaises(ApiError) as cm:
            c.forward("ik_mlp", x=[0.0, 0.1, 0.2, 0.3])
        self.assertEqual((cm.exception.status, cm.exception.code), (401, "unauthorized"))
        self.assertEqual(cm.exception.headers.get("WWW-Authenticate"),
                         'Bearer realm="innserve", error="invalid_token"')

    def test_unknown_ca_is_refused(self):
        c = Client(URL, token_file=TOKEN_FILE, retries=0)
        with self.assertRaises(ConnectionFailed) as cm:
            c.models()
        self.assertIn("CERTIFICATE_VERIFY_FAILED", cm.exception.message)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            Client(URL, token="a", token_file=TOKEN_FILE)
        with self.assertRaises(ValueError):
            Client(URL, token="two words")
        empty = os.path.join(TMP.path, "empty")
        with open(empty, "w") as f:
            f.write("\n")
        with self.assertRaises(ValueError) as cm:
            Client(URL, token_file=empty)
        self.assertIn("is empty", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
