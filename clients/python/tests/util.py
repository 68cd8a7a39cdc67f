"""Shared helpers for the Python tests: binaries, a live daemon, FrEIA implementations.

Environment:
  INNSERVE_BIN          the daemon (default ../../build/innserve from clients/python)
  INNCTL_BIN            the CLI (default ../../build/innctl)
  INNSERVE_FREIA_PATH   a FrEIA checkout (HEAD or PyPI 0.2): the exporter tests also run
                        against the real FrEIA modules (an installed FrEIA is used too)
"""

import importlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))   # the innserve package
sys.path.insert(0, HERE)


def _bin(env, default):
    p = os.environ.get(env) or os.path.join(ROOT, "build", default)
    return p if os.path.isfile(p) and os.access(p, os.X_OK) else None


INNSERVE_BIN = _bin("INNSERVE_BIN", "innserve")
INNCTL_BIN = _bin("INNCTL_BIN", "innctl")


def need_innctl(test):
    if not INNCTL_BIN:
        raise unittest.SkipTest("innctl not built (set INNCTL_BIN)")


def innctl(*args, stdin=None, env=None, timeout=60):
    """Run innctl; -> CompletedProcess (stdout/stderr bytes)."""
    e = dict(os.environ)
    e.pop("INNSERVE_URL", None)
    if env:
        e.update(env)
    return subprocess.run([INNCTL_BIN] + [str(a) for a in args], input=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, timeout=timeout)


# ---------------------------------------------------------------------------------------
# daemon
# ---------------------------------------------------------------------------------------

class Daemon:
    """innserve on 127.0.0.1 with an ephemeral port, serving a models directory."""

    def __init__(self, models_dir, extra_args=(), env=None, start_timeout=30.0):
        if not INNSERVE_BIN:
            raise unittest.SkipTest("innserve not built (set INNSERVE_BIN)")
        self.models_dir = models_dir
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("INNSERVE_") and k not in ("INNSERVE_BIN",):
                e.pop(k)
        if env:
            e.update(env)
        self.log = []
        self.proc = subprocess.Popen(
            [INNSERVE_BIN, "--models", models_dir, "--host", "127.0.0.1", "--port", "0"]
            + list(extra_args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
        self.port = None
        end = time.time() + start_timeout
        buf = b""
        while time.time() < end and self.port is None:
            if self.proc.poll() is not None:
                break
            r, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if not r:
                continue
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.log.append(line.decode("utf-8", "replace"))
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                if j.get("event") == "listening" and j.get("port"):
                    self.port = int(j["port"])
        if self.port is None:
            self.stop()
            raise RuntimeError("innserve did not start:\n" + "\n".join(self.log[-20:]))
        self.url = "http://127.0.0.1:%d" % self.port
        # keep draining stderr so the daemon never blocks on a full pipe
        import threading
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()

    def _drain(self):
        try:
            for line in self.proc.stderr:
                self.log.append(line.decode("utf-8", "replace").rstrip())
        except (ValueError, OSError):
            pass

    def wait_ready(self, timeout=30.0):
        from innserve import Client
        return Client(self.url, timeout=5).wait_ready(timeout)

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._t.join(5)              # the log is complete once stderr reached its end
        if self.proc.stderr:
            self.proc.stderr.close()
        return self.proc.returncode


# ---------------------------------------------------------------------------------------
# FrEIA implementations: the look-alikes, and the real one when available
# ---------------------------------------------------------------------------------------

def _scipy_stub():
    """FrEIA imports scipy.stats.special_ortho_group at module level; if scipy is missing,
    provide that one function (test-only; a random orthogonal matrix with det +1)."""
    try:
        import scipy.stats  # noqa: F401
        return
    except ImportError:
        pass
    import numpy as np
    scipy = types.ModuleType("scipy")
    stats = types.ModuleType("scipy.stats")

    class _SOG:
        def rvs(self, dim, random_state=None):
            q, r = np.linalg.qr(np.random.standard_normal((dim, dim)))
            q = q * np.sign(np.diag(r))
            if np.linalg.det(q) < 0:
                q[:, 0] = -q[:, 0]
            return q
    stats.special_ortho_group = _SOG()
    scipy.stats = stats
    sys.modules["scipy"] = scipy
    sys.modules["scipy.stats"] = stats


_REAL = None


def real_freia():
    """(namespace, version) for the real FrEIA, or None.  version: "head" or "0.2"."""
    global _REAL
    if _REAL is not None:
        return _REAL or None
    path = os.environ.get("INNSERVE_FREIA_PATH")
    if path:
        sys.path.insert(0, path)
    try:
        importlib.import_module("torch")
        _scipy_stub()
        Ff = importlib.import_module("FrEIA.framework")
        Fm = importlib.import_module("FrEIA.modules")
    except ImportError:
        _REAL = False
        return None
    ns = types.SimpleNamespace()
    for mod in (Fm, Ff):
        for k in dir(mod):
            if not k.startswith("_"):
                setattr(ns, k, getattr(mod, k))
    version = "head" if hasattr(Fm.ActNorm(((3,),)), "log_scale") else "0.2"
    _REAL = (ns, version)
    return _REAL


def mimic(version="head"):
    if version == "head":
        return importlib.import_module("freia_like")
    return importlib.import_module("freia_like_v02")


class TmpDir:
    def __init__(self, prefix="innserve-test-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)
