"""HTTP client for the innserve daemon (the API of docs/api.md), standard library only.

    from innserve import Client, ApiError
    c = Client("http://127.0.0.1:8080", timeout=30, retries=3)
    post = c.sample("ik", y=[1.5, 0.0], num_samples=1000, seed=1)
    post["samples"].shape            # (1, 1000, 4) with numpy installed, nested lists otherwise

Arrays may be given as numpy arrays, lists or tuples; a flat vector is taken as one row.
With numpy installed, numeric arrays in responses come back as float64 ``numpy.ndarray``
(pass ``numpy=False`` for plain lists).  Every non-2xx answer raises :class:`ApiError`
carrying the HTTP status, the server's machine code and its message.  Transient answers
(429, and 503 ``overloaded``, ``draining``, ``out_of_memory`` or a model still loading) are
retried up to ``retries`` times, waiting what ``Retry-After`` says (capped by
``max_retry_wait``); a permanent 503 ``model_unavailable`` (the model failed to load) is
raised at once.  Connection failures and timeouts raise :class:`ConnectionFailed` (a
subclass of ApiError with ``status`` None).  NaN and infinite inputs raise ValueError
naming the field, row and column before anything is sent (JSON has no such numbers).

Long work runs as a job of the daemon: ``c.calibration(...)`` and ``c.mmd(...)`` submit
theirs and wait for it (a tqdm progress bar when tqdm is importable, ``progress=False`` for
none), ``wait=False`` returns the :class:`Job` at once; ``c.sample(..., async_=True)``
returns a Job too.  ``c.wait(job)`` waits for one and returns its result, ``c.job(id)``
reads one, ``c.jobs()`` lists them and ``c.cancel(id)`` stops one.  Jobs live in the
daemon's memory only: a restart forgets them.

A daemon started with ``--auth-token-file`` wants a bearer token (``token="..."`` or
``token_file="path"``; a wrong or missing one raises ApiError 401 ``unauthorized``); one
started with ``--tls-cert`` speaks https (``cafile="ca.pem"`` trusts a private CA):

    c = Client("https://innserve.example:8443", token_file="/run/secrets/innserve-token",
               cafile="/etc/innserve/ca.pem")
"""

import email.utils
import http.client
import io
import json
import math
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

try:  # numpy is optional
    import numpy as _np
except ImportError:  # pragma: no cover - exercised only without numpy
    _np = None

__all__ = ["Client", "ApiError", "ConnectionFailed", "Job", "JobFailed", "parse_npy",
           "parse_csv"]

DEFAULT_URL = "http://127.0.0.1:8080"

# response fields that hold numbers to turn into arrays
_ARRAY_KEYS = {"z", "x", "y", "log_det", "samples", "log_prob", "mean", "std", "map", "rmse",
               "bits_per_dim",
               "iterations", "residual", "error_bound",
               # calibration and mmd answers
               "ks_statistic", "ks_pvalue", "edges", "levels", "lower", "upper", "empirical",
               "alpha", "ecp", "scales"}
# ... and those that hold counts (int64 arrays)
_INT_KEYS = {"ranks", "counts"}

# job states after which nothing changes
_FINAL = ("done", "failed", "cancelled")


class ApiError(Exception):
    """An error answer from the daemon (or a failed connection, see ConnectionFailed).

    Attributes: ``status`` (HTTP status, None when no answer came), ``code`` (the
    server's machine code, e.g. ``"not_found"``), ``message`` (the server's sentence),
    ``body`` (raw response bytes) and ``headers``."""

    def __init__(self, status, code, message, body=b"", headers=None):
        super().__init__("%s%s: %s" % ("HTTP %d " % status if status else "", code, message))
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.headers = dict(headers or {})


class ConnectionFailed(ApiError):
    """No HTTP answer: connection refused, DNS failure, timeout (code "timeout")."""

    def __init__(self, code, message):
        super().__init__(None, code, message)


class JobFailed(ApiError):
    """A job that ended without a result: it failed (``status`` and ``code`` are those the
    synchronous request would have answered) or was cancelled (code ``"job_cancelled"``).
    ``job`` is the :class:`Job` as last read."""

    def __init__(self, job, status, code, message):
        super().__init__(status, code, message)
        self.job = job


class Job:
    """A job of the daemon as last read (``Client.job`` reads it again).

    Attributes: ``id``, ``url``, ``state`` ("queued", "running", "done", "failed",
    "cancelled"), ``operation`` ("sample", "calibration", ...), ``model``, ``progress``
    (dict: done, total, unit, rate, eta_s), ``error`` (dict, when failed), ``raw`` (the
    daemon's whole JSON object).  ``finished`` is True once the state can no longer
    change."""

    def __init__(self, raw, format="json"):
        self.raw = dict(raw)
        self.format = format  # what wait() and Client.result() decode the result as
        self.id = str(raw.get("id"))
        self.url = raw.get("url") or "/v1/jobs/%s" % self.id
        self.state = raw.get("state")
        self.operation = raw.get("operation")
        self.model = raw.get("model")
        self.progress = raw.get("progress") or {}
        self.error = raw.get("error")

    @property
    def finished(self):
        return self.state in _FINAL

    def __repr__(self):
        p = self.progress
        prog = " %s/%s %s" % (p.get("done"), p.get("total"), p.get("unit", "")) if p else ""
        return "Job(%r, %s %s of %r%s)" % (self.id, self.state, self.operation, self.model,
                                          prog.rstrip())


class _Progress:
    """Shows a job's progress while Client.wait polls it: a tqdm bar (tqdm importable and
    progress not False), else one rewritten line on stderr (progress True), else nothing."""

    def __init__(self, progress, job):
        self.bar = None
        self.line = False
        self.label = "%s %s" % (job.operation or "job", job.id)
        if progress is False:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self.bar = tqdm(total=job.progress.get("total"), desc=self.label,
                            unit=job.progress.get("unit") or "it", leave=True, file=sys.stderr)
        elif progress:
            self.line = True

    def update(self, job):
        p = job.progress or {}
        done, total = p.get("done"), p.get("total")
        if self.bar is not None:
            if p.get("unit") and self.bar.unit != p["unit"]:
                self.bar.unit = p["unit"]
            if total is not None and self.bar.total != total:
                self.bar.total = total
                self.bar.refresh()
            if done is not None and done > self.bar.n:
                self.bar.update(done - self.bar.n)
        elif self.line:
            pct = " %3.0f%%" % (100.0 * done / total) if done is not None and total else ""
            eta = p.get("eta_s")
            sys.stderr.write("\r%s: %s%s %s/%s %s%s   " % (
                self.label, job.state, pct, done, total, p.get("unit", ""),
                ", ETA %.0fs" % eta if eta is not None else ""))
            sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.line:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _read_token(path):
    """The bearer token in path: its one line without the trailing newline."""
    with open(path, "rb") as f:
        data = f.read(4099)
    token = data.rstrip(b"\r\n")
    if not token:
        raise ValueError("token_file %s is empty; it must hold the token on one line" % path)
    if len(token) > 4096:
        raise ValueError("token_file %s: the token is longer than 4096 bytes" % path)
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("token_file %s: the token is not ASCII" % path) from None


def _rows(a, what):
    """Array-like -> nested list of rows (a flat vector becomes one row)."""
    if a is None:
        return None
    if hasattr(a, "tolist"):
        a = a.tolist()
    if isinstance(a, tuple):
        a = list(a)
    if not isinstance(a, list):
        raise TypeError("%s must be an array or a list, not %s" % (what, type(a).__name__))
    if a and not isinstance(a[0], (list, tuple)) and not hasattr(a[0], "tolist"):
        return [a]
    return [list(r.tolist() if hasattr(r, "tolist") else r) for r in a]


def _vec(a):
    if a is None:
        return None
    if hasattr(a, "tolist"):
        a = a.tolist()
    return list(a)


def parse_npy(data):
    """Parse NPY bytes: a numpy array when numpy is installed, else (nested list, shape)."""
    if _np is not None:
        return _np.load(io.BytesIO(data), allow_pickle=False)
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not an NPY file")
    major = data[6]
    if major == 1:
        hlen = struct.unpack("<H", data[8:10])[0]
        off = 10
    else:
        hlen = struct.unpack("<I", data[8:12])[0]
        off = 12
    import ast
    hdr = ast.literal_eval(data[off:off + hlen].decode("latin1"))
    descr, shape = hdr["descr"], tuple(hdr["shape"])
    if hdr.get("fortran_order"):
        raise ValueError("fortran-order NPY is not supported without numpy")
    code = {"<f4": "f", "<f8": "d", "<i4": "i", "<i8": "q"}[descr]
    n = 1
    for s in shape:
        n *= s
    flat = list(struct.unpack("<%d%s" % (n, code), data[off + hlen:off + hlen + n * struct.calcsize(code)]))

    def nest(v, dims):
        if len(dims) <= 1:
            return v
        step = len(v) // dims[0]
        return [nest(v[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]
    return nest(flat, list(shape)), shape


def parse_csv(text):
    """CSV text from /sample -> (header list, rows of floats; obs and sample as ints)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return [], []
    header = lines[0].split(",")
    rows = []
    for ln in lines[1:]:
        cells = ln.split(",")
        rows.append([int(c) if i < 2 else float(c) for i, c in enumerate(cells)])
    return header, rows


class Client:
    """A connection to one innserve daemon.

    url         base URL (default ``http://127.0.0.1:8080``)
    timeout     seconds per HTTP request (connect + read)
    retries     how many times a transient 429/503 answer is retried (0: never)
    max_retry_wait  upper bound in seconds on one wait between retries
    numpy       True/False to force arrays on/off (default: on when numpy is importable)
    headers     extra HTTP headers sent with every request
    token       bearer token for a daemon started with --auth-token-file
    token_file  file holding that token on one line (read once, here; trailing newline
                stripped); give token or token_file, not both
    cafile      PEM file of the CA(s) that signed an https daemon's certificate (default:
                the system's trust store)
    """

    def __init__(self, url=DEFAULT_URL, timeout=30.0, retries=3, max_retry_wait=30.0,
                 numpy=None, headers=None, token=None, token_file=None, cafile=None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = int(retries)
        self.max_retry_wait = float(max_retry_wait)
        self.numpy = (_np is not None) if numpy is None else bool(numpy)
        if self.numpy and _np is None:
            raise ImportError("numpy=True but numpy is not installed")
        self.headers = dict(headers or {})
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        if token_file is not None:
            token = _read_token(token_file)
        if token is not None:
            token = str(token)
            if not token or any(not 0x21 <= ord(ch) <= 0x7e for ch in token):
                raise ValueError("a bearer token is one or more visible ASCII characters "
                                 "without spaces")
            self.headers["Authorization"] = "Bearer " + token
        self._ssl = None
        if cafile is not None:
            self._ssl = ssl.create_default_context(cafile=str(cafile))

    def __repr__(self):
        return "Client(%r)" % self.url

    # ---- transport --------------------------------------------------------------------

    def request(self, method, path, body=None, accept="application/json", raw=False,
                headers=None, with_status=False):
        """Send one request (retrying 429/503); returns parsed JSON, or (bytes, content
        type) when raw; with with_status=True, (HTTP status, that)."""
        data = None
        extra = headers
        headers = {"Accept": accept, "User-Agent": "innserve-python"}
        headers.update(self.headers)
        headers.update(extra or {})
        if isinstance(body, bytes):
            data = body             # the caller's Content-Type (application/x-npy) stays
        elif body is not None:
            try:
                data = json.dumps(body, allow_nan=False).encode()
            except ValueError:
                where = _non_finite(body, "")
                if where is None:
                    raise
                raise ValueError("%s is %s: JSON has no NaN or Infinity, so the server cannot "
                                 "be sent it; send finite numbers" % where) from None
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout,
                                            context=self._ssl) as resp:
                    payload = resp.read()
                    ctype = resp.headers.get("Content-Type", "")
                    if raw:
                        out = (payload, ctype)
                    elif not payload:
                        out = None
                    elif "json" not in ctype:
                        out = payload.decode("utf-8", "replace")
                    else:
                        out = json.loads(payload)
                    return (resp.status, out) if with_status else out
            except urllib.error.HTTPError as e:
                payload = e.read() or b""
                status = e.code
                if attempt < self.retries and _transient(status, payload):
                    attempt += 1
                    time.sleep(self._retry_wait(e.headers.get("Retry-After"), attempt))
                    continue
                raise self._error(status, payload, e.headers) from None
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, socket.timeout) or "timed out" in str(reason):
                    raise ConnectionFailed("timeout", "no answer from %s within %gs"
                                           % (self.url, self.timeout)) from None
                raise ConnectionFailed("connection_error", "cannot reach %s: %s"
                                       % (self.url, reason)) from None
            except (socket.timeout, TimeoutError):
                raise ConnectionFailed("timeout", "no answer from %s within %gs"
                                       % (self.url, self.timeout)) from None
            except (ConnectionError, http.client.HTTPException) as e:
                raise ConnectionFailed("connection_error", "connection to %s failed: %s"
                                       % (self.url, e)) from None

    def _retry_wait(self, header, attempt):
        wait = None
        if header:
            try:
                wait = float(header)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(header)
                    wait = when.timestamp() - time.time()
                except (TypeError, ValueError):
                    wait = None
        if wait is None:
            wait = 0.25 * (2 ** (attempt - 1))
        return max(0.0, min(wait, self.max_retry_wait))

    @staticmethod
    def _error(status, payload, headers):
        code, msg = "http_%d" % status, payload.decode("utf-8", "replace").strip()
        try:
            j = json.loads(payload)
            if isinstance(j, dict):
                code = str(j.get("code", code))
                msg = str(j.get("error", msg))
        except ValueError:
            pass
        return ApiError(status, code, msg or "HTTP %d" % status, payload, headers)

    def _arrays(self, obj):
        if not self.numpy:
            return obj
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                if k in _ARRAY_KEYS and isinstance(v, list) and _numeric(v):
                    out[k] = _np.asarray(v, dtype=_np.float64)
                elif k in _INT_KEYS and isinstance(v, list) and _numeric(v):
                    out[k] = _np.asarray(v, dtype=_np.int64)
                elif k == "converged" and isinstance(v, list):
                    out[k] = _np.asarray(v, dtype=bool)
                elif k == "quantiles" and isinstance(v, dict):
                    out[k] = {q: _np.asarray(a, dtype=_np.float64) if isinstance(a, list) else a
                              for q, a in v.items()}
                else:
                    out[k] = self._arrays(v)
            return out
        if isinstance(obj, list):
            return [self._arrays(v) for v in obj]
        return obj

    @staticmethod
    def _m(model):
        return urllib.parse.quote(str(model), safe="")

    def _post(self, model, op, body, **kw):
        return self.request("POST", "/v1/models/%s/%s" % (self._m(model), op), body, **kw)

    def _post_npy(self, model, op, arrays, params):
        """op with an application/x-npy body (the arrays one after another, float32) and the
        other fields as query parameters (docs/api.md "NPY request bodies")."""
        if _np is None:
            raise ValueError("npy=True needs numpy")
        buf = io.BytesIO()
        for a in arrays:
            if a is not None:
                _np.save(buf, _np.ascontiguousarray(_np.asarray(a, dtype=_np.float32)),
                         allow_pickle=False)
        q = [(k, json.dumps(v) if isinstance(v, bool) else str(v))
             for k, v in params.items() if v is not None]
        path = "/v1/models/%s/%s" % (self._m(model), op)
        if q:
            path += "?" + urllib.parse.urlencode(q)
        return self.request("POST", path, buf.getvalue(),
                            headers={"Content-Type": "application/x-npy"})

    # ---- endpoints --------------------------------------------------------------------

    def models(self):
        """GET /v1/models -> list of {name, version, kind, dims, state[, reason]}."""
        return self.request("GET", "/v1/models")["models"]

    def metadata(self, model):
        """GET /v1/models/{m} -> dict (name, version, kind, sha256, dims, names, blocks, ...)."""
        return self.request("GET", "/v1/models/%s" % self._m(model))

    info = metadata

    def forward(self, model, x, y=None, npy=False):
        """x (n x dim_x), y (cinn: n x dim_y or one row) -> {z, log_det[, y]}.  npy=True
        sends x (and y) as an application/x-npy body (4 bytes a value; needs numpy)."""
        if npy:
            return self._arrays(self._post_npy(model, "forward", (x, y), {}))
        body = {"x": _rows(x, "x")}
        if y is not None:
            body["y"] = _rows(y, "y")
        return self._arrays(self._post(model, "forward", body))

    def inverse(self, model, z, y=None, tol=None, max_iter=None, method=None, npy=False):
        """z (n x dim_z) [, y] -> {x, log_det[, solver]} (solver for i-ResNet blocks).
        npy=True sends z (and y) as an application/x-npy body."""
        if npy:
            return self._arrays(self._post_npy(model, "inverse", (z, y), {
                "tol": tol, "max_iter": max_iter, "method": method}))
        body = {"z": _rows(z, "z")}
        if y is not None:
            body["y"] = _rows(y, "y")
        if tol is not None:
            body["tol"] = float(tol)
        if max_iter is not None:
            body["max_iter"] = int(max_iter)
        if method is not None:
            body["method"] = str(method)
        return self._arrays(self._post(model, "inverse", body))

    def sample(self, model, y=None, num_samples=1000, seed=None, temperature=None,
               outputs=None, quantiles=None, format="json", async_=False,
               reject_outside_prior=None, scale=None, low=None, high=None):
        """Posterior (cinn, inn) or model (flow) samples.

        y: observations (n_obs x dim_y, or one flat row); outputs: any of "samples",
        "log_prob", "summary", "resimulation".  format "json" returns the response dict
        (samples n_obs x num_samples x dim_x); "csv" returns the CSV text (columns
        obs,sample,<x names>[,log_prob]); "npy" returns an array (numpy) or
        (nested list, shape) without numpy.  async_=True submits a job and returns its
        :class:`Job` at once; ``wait(job)`` then returns what format asked for.
        reject_outside_prior (models with a prior box; the server's default is True): False
        returns samples that may lie outside the box.  log_prob values outside the box
        (JSON null) come back as -inf.  An image model's samples come back as
        n_obs x num_samples x C x H x W; format "png" returns the bytes of a PNG grid of
        them (one row per observation; ``scale``: pixel upscale 1-16; ``low``, ``high``:
        the value range drawn black to white, default the model's image range).
        """
        body = {"num_samples": int(num_samples)}
        if reject_outside_prior is not None:
            body["reject_outside_prior"] = bool(reject_outside_prior)
        if y is not None:
            body["y"] = _rows(y, "y")
        if seed is not None:
            body["seed"] = int(seed)
        if temperature is not None:
            body["temperature"] = float(temperature)
        if outputs is not None:
            body["outputs"] = list(outputs)
        if quantiles is not None:
            body["quantiles"] = [float(q) for q in quantiles]
        if format not in _ACCEPT:
            raise ValueError("format must be json, csv, npy or png")
        op = "sample"
        if format == "png":
            q = [(k, v) for k, v in (("scale", scale), ("low", low), ("high", high))
                 if v is not None]
            if q:
                op += "?" + urllib.parse.urlencode(q)
        elif scale is not None or low is not None or high is not None:
            raise ValueError("scale, low and high apply to format='png' only")
        if async_:
            return self._submit(model, op, body, format)
        if format == "json":
            return self._arrays(_neg_inf(self._post(model, "sample", body)))
        if format == "csv":
            data, _ = self._post(model, "sample", body, accept="text/csv", raw=True)
            return data.decode("utf-8")
        if format == "npy":
            data, _ = self._post(model, "sample", body, accept="application/x-npy", raw=True)
            return parse_npy(data)
        if format == "png":
            data, _ = self._post(model, op, body, accept="image/png", raw=True)
            return data
        raise ValueError("format must be json, csv, npy or png")

    def log_prob(self, model, x, y=None, leakage_correction=False, leakage_samples=None,
                 seed=None, npy=False):
        """log density of x (in x's units) [given y]; one y row is broadcast.  -inf outside
        a model's prior box (the server writes null).  leakage_correction (models with a
        prior box): normalize by the posterior mass inside the box, estimated from
        leakage_samples accepted draws under seed (server defaults 10000 and 0).  npy=True
        sends x (and y) as an application/x-npy body."""
        if npy:
            params = {"leakage_correction": True, "leakage_samples": leakage_samples,
                      "seed": seed} if leakage_correction else {}
            r = self._arrays(_neg_inf(self._post_npy(model, "log_prob", (x, y), params)))
            return r["log_prob"]
        body = {"x": _rows(x, "x")}
        if y is not None:
            body["y"] = _rows(y, "y")
        if leakage_correction:
            body["leakage_correction"] = True
            if leakage_samples is not None:
                body["leakage_samples"] = int(leakage_samples)
            if seed is not None:
                body["seed"] = int(seed)
        r = self._arrays(_neg_inf(self._post(model, "log_prob", body)))
        return r["log_prob"]

    def bits_per_dim(self, model, x, y=None):
        """Bits per dimension of x (image and signal models: the server's log_prob answer
        adds them, -(log p(x) + D log(bin width)) / (D ln 2); docs/api.md "Image models")."""
        body = {"x": _rows(x, "x")}
        if y is not None:
            body["y"] = _rows(y, "y")
        r = self._post(model, "log_prob", body)
        if "bits_per_dim" not in r:
            raise ValueError("model %s reports no bits_per_dim (not an image model)" % model)
        return self._arrays({"bits_per_dim": [math.inf if v is None else v
                                              for v in r["bits_per_dim"]]})["bits_per_dim"]

    def preimage(self, model, target, method="gradient", num_solutions=32, max_steps=500,
                 seed=1, bounds=None, y=None):
        """Many x with f(x) ~= target (any model, above all mlp surrogates).

        bounds: (low, high) vectors or {"low": .., "high": ..}.  Returns the response:
        {"solutions": [[{"x": [...], "residual": r}, ...] per target row], ...}."""
        body = {"target": _rows(target, "target"), "method": method,
                "num_solutions": int(num_solutions), "max_steps": int(max_steps),
                "seed": int(seed)}
        if bounds is not None:
            if isinstance(bounds, dict):
                body["bounds"] = {"low": _vec(bounds["low"]), "high": _vec(bounds["high"])}
            else:
                body["bounds"] = {"low": _vec(bounds[0]), "high": _vec(bounds[1])}
        if y is not None:
            body["y"] = _rows(y, "y")
        r = self._post(model, "preimage", body)
        if self.numpy and isinstance(r, dict):
            for sols in r.get("solutions", []):
                for s in sols:
                    s["x"] = _np.asarray(s["x"], dtype=_np.float64)
        return r

    # ---- diagnostics ------------------------------------------------------------------

    def calibration(self, model, x, y=None, num_samples=100, seed=None, diagnostics=None,
                    bins=None, coverage_points=None, confidence=None, tarp_references=None,
                    tarp_bins=None, z_score=None, tol=None, max_iter=None, method=None,
                    reject_outside_prior=None, wait=True, progress=None):
        """Calibration of the model's posterior on N pairs (x*, y) of the user's simulator:
        SBC ranks with KS p-values and a rank histogram, expected coverage (HPD and central
        intervals, with binomial bands) and TARP, as sbi defines them (docs/api.md).

        x: N x dims.x ground-truth parameters; y: their N x dims.y observations (None for a
        flow); num_samples: L posterior samples per pair; diagnostics: any of "sbc",
        "coverage", "tarp" (default all); reject_outside_prior (models with a prior box; the
        server's default is True): each pair's samples are those :meth:`sample` gives, inside
        the box, and the answer has "acceptance".  Runs as a job of the daemon: waits for it
        (see :meth:`wait` for progress) and returns the answer, or with wait=False returns the
        :class:`Job` at once."""
        body = {"x": _rows(x, "x"), "num_samples": int(num_samples)}
        if y is not None:
            body["y"] = _rows(y, "y")
        _opt(body, "seed", seed, int)
        if diagnostics is not None:
            body["diagnostics"] = [diagnostics] if isinstance(diagnostics, str) else \
                [str(d) for d in diagnostics]
        _opt(body, "bins", bins, int)
        _opt(body, "coverage_points", coverage_points, int)
        _opt(body, "confidence", confidence, float)
        if tarp_references is not None:
            body["tarp_references"] = _rows(tarp_references, "tarp_references")
        _opt(body, "tarp_bins", tarp_bins, int)
        _opt(body, "z_score", z_score, bool)
        _opt(body, "reject_outside_prior", reject_outside_prior, bool)
        _solver(body, tol, max_iter, method)
        return self._run(model, "calibration", body, wait, progress)

    def mmd(self, model, y=None, reference=None, num_samples=1000, seed=None,
            temperature=None, scales=None, estimator=None, permutations=None, tol=None,
            max_iter=None, method=None, reject_outside_prior=None, wait=True, progress=None):
        """MMD^2 between the model's posterior for one observation y (None for a flow) and
        reference samples of the true posterior (M x dims.x), with the inverse multiquadric
        kernel at several widths (scales) and a permutation p-value; the model's samples are
        those :meth:`sample` gives (inside a prior box unless reject_outside_prior=False).
        Runs as a job like :meth:`calibration`; returns {"mmd2", "p_value", ...} or,
        wait=False, the Job."""
        if reference is None:
            raise TypeError("mmd needs reference samples (M x dims.x)")
        body = {"reference": _rows(reference, "reference"), "num_samples": int(num_samples)}
        if y is not None:
            body["y"] = _rows(y, "y")
        _opt(body, "seed", seed, int)
        _opt(body, "temperature", temperature, float)
        if scales is not None:
            body["scales"] = [float(h) for h in _vec(scales)]
        _opt(body, "estimator", estimator, str)
        _opt(body, "permutations", permutations, int)
        _opt(body, "reject_outside_prior", reject_outside_prior, bool)
        _solver(body, tol, max_iter, method)
        return self._run(model, "mmd", body, wait, progress)

    # ---- jobs -------------------------------------------------------------------------

    def _submit(self, model, op, body, format="json"):
        """POST op with "async": true -> Job (or, from a daemon that answered at once, the
        answer itself)."""
        body = dict(body, **{"async": True})
        code, r = self._post(model, op, body, accept=_ACCEPT[format], raw=True,
                             with_status=True, headers={"Prefer": "respond-async"})
        data, ctype = r
        if code == 202:
            return Job(json.loads(data), format)
        return self._decode(data, ctype, format)

    def _run(self, model, op, body, wait, progress):
        job = self._submit(model, op, body)
        if not isinstance(job, Job) or not wait:
            return job
        return self.wait(job, progress=progress)

    def job(self, job_id):
        """GET /v1/jobs/{id} -> Job (raises ApiError 404 job_not_found once it is gone:
        jobs live in the daemon's memory, finished ones for its --job-ttl)."""
        return Job(self.request("GET", "/v1/jobs/%s" % self._id(job_id)))

    def jobs(self):
        """GET /v1/jobs -> list of Job (without their results)."""
        return [Job(j) for j in self.request("GET", "/v1/jobs")["jobs"]]

    def cancel(self, job_id):
        """DELETE /v1/jobs/{id}: stops a queued or running job (its state becomes
        "cancelled"), or forgets a finished one.  Returns the Job as the daemon answered."""
        return Job(self.request("DELETE", "/v1/jobs/%s" % self._id(job_id)))

    def result(self, job_id, format=None):
        """GET /v1/jobs/{id}/result: the answer the synchronous request would have got,
        decoded as for that request (format: json, csv or npy; default: the format the job
        was submitted with by this client, else json)."""
        if format is None:
            format = job_id.format if isinstance(job_id, Job) else "json"
        data, ctype = self.request("GET", "/v1/jobs/%s/result" % self._id(job_id),
                                   accept=_ACCEPT[format], raw=True)
        return self._decode(data, ctype, format)

    def wait(self, job, progress=None, timeout=None, interval=0.5):
        """Poll the job (a Job or an id) until it has finished and return its result (the
        answer of the synchronous request).  A failed job raises JobFailed with the status,
        code and message that request would have got; a cancelled one JobFailed
        "job_cancelled"; past timeout seconds, TimeoutError (the job keeps running).

        progress: None shows a tqdm bar on stderr when tqdm is importable; True also
        without tqdm (one line on stderr, rewritten); False shows nothing."""
        if not isinstance(job, Job):
            job = self.job(job)
        fmt = job.format
        end = None if timeout is None else time.time() + timeout
        bar = None   # shown from the first wait on: a job that has finished shows none
        pause = 0.02
        try:
            while not job.finished:
                if bar is None:
                    bar = _Progress(progress, job)
                time.sleep(pause)
                pause = min(interval, pause * 2)
                job = self.job(job.id)
                job.format = fmt
                bar.update(job)
                if not job.finished and end is not None and time.time() > end:
                    raise TimeoutError("job %s is still %s after %gs" % (job.id, job.state,
                                                                         timeout))
        finally:
            if bar is not None:
                bar.close()
        if job.state == "cancelled":
            raise JobFailed(job, 409, "job_cancelled", "job %s was cancelled" % job.id)
        if job.state == "failed":
            e = job.error or {}
            raise JobFailed(job, e.get("status"), e.get("code", "job_failed"),
                            e.get("error", "job %s failed" % job.id))
        if fmt == "json" and "result" in job.raw:
            return self._arrays(job.raw["result"])
        return self.result(job)

    def _decode(self, data, ctype, format):
        if format == "png":
            return data
        if format == "csv":
            return data.decode("utf-8")
        if format == "npy":
            return parse_npy(data)
        return self._arrays(json.loads(data)) if data else None

    @staticmethod
    def _id(job_id):
        return urllib.parse.quote(str(job_id.id if isinstance(job_id, Job) else job_id),
                                  safe="")

    def certificate(self, model):
        """GET /v1/models/{m}/certificate -> {invertible, guarantee, blocks: [...]}."""
        return self.request("GET", "/v1/models/%s/certificate" % self._m(model))

    def health(self):
        """GET /healthz: True when the process serves."""
        return self._ok("/healthz")

    def ready(self):
        """GET /readyz: True when a model is READY (or the daemon runs with --allow-empty
        on an empty repository) and the daemon is not draining."""
        return self._ok("/readyz")

    def _ok(self, path):
        saved = self.retries
        self.retries = 0
        try:
            self.request("GET", path, raw=True)
            return True
        except ConnectionFailed:
            raise
        except ApiError:
            return False
        finally:
            self.retries = saved

    def metrics(self):
        """GET /metrics: the Prometheus text."""
        data, _ = self.request("GET", "/metrics", accept="text/plain", raw=True)
        return data.decode("utf-8")

    def wait_ready(self, timeout=30.0, interval=0.1):
        """Poll /readyz until it answers 200 (True) or timeout passes (False)."""
        end = time.time() + timeout
        while time.time() < end:
            try:
                if self.ready():
                    return True
            except ConnectionFailed:
                pass
            time.sleep(interval)
        return False


_ACCEPT = {"json": "application/json", "csv": "text/csv", "npy": "application/x-npy",
           "png": "image/png"}


def _opt(body, key, value, conv):
    if value is not None:
        body[key] = conv(value)


def _solver(body, tol, max_iter, method):
    _opt(body, "tol", tol, float)
    _opt(body, "max_iter", max_iter, int)
    _opt(body, "method", method, str)


def _non_finite(v, path):
    """(path, "NaN"/"Infinity"/"-Infinity") of the first non-finite float in a request body
    (dicts, lists, numbers), e.g. ("y[3][1]", "NaN"); None when there is none."""
    if isinstance(v, float):
        if v != v:
            return path or "the value", "NaN"
        if v in (float("inf"), float("-inf")):
            return path or "the value", "Infinity" if v > 0 else "-Infinity"
        return None
    if isinstance(v, dict):
        for k, x in v.items():
            w = _non_finite(x, "%s.%s" % (path, k) if path else str(k))
            if w:
                return w
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            w = _non_finite(x, "%s[%d]" % (path, i))
            if w:
                return w
    return None


def _transient(status, payload):
    """Whether an error answer may go away when the request is sent again: 429, and 503
    except model_unavailable for a model that failed to load (the daemon says "still
    loading" while it may yet come)."""
    if status == 429:
        return True
    if status != 503:
        return False
    try:
        j = json.loads(payload)
    except ValueError:
        return True  # a 503 from a proxy in front: transient
    if not isinstance(j, dict) or j.get("code") != "model_unavailable":
        return True
    return "still loading" in str(j.get("error", ""))


def _neg_inf(obj):
    """The answer with its log_prob nulls (densities outside a prior box) as -inf."""
    def fix(v):
        if v is None:
            return float("-inf")
        if isinstance(v, list):
            return [fix(u) for u in v]
        return v
    if isinstance(obj, dict) and isinstance(obj.get("log_prob"), list):
        obj = dict(obj)
        obj["log_prob"] = fix(obj["log_prob"])
    return obj


def _numeric(v):
    while isinstance(v, list):
        if not v:
            return True
        v = v[0]
    return isinstance(v, (int, float)) and not isinstance(v, bool)

