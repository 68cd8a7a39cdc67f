#!/usr/bin/env python3
"""Check the deployment files against what they name (CI: `make test-manifests`).

    /usr/bin/python3 deploy/check_manifests.py [--bin build/innserve] [--no-live]

Parses deploy/compose.yaml, deploy/k8s/*.yaml, deploy/kserve/*.yaml, deploy/innserve.service
and the Dockerfile, and checks them against the sources of truth:

  * the image name deploy/test-image.sh builds;
  * the daemon's options and INNSERVE_* variables (`innserve --help`; the drain timeout's
    default too);
  * the daemon's routes (the route table in proto/route.c, and, unless --no-live, the
    daemon itself: started with a bearer token, every probe path must answer 200 without
    the token and /v1/models 401 without it, 200 with it);
  * the bearer token: innserve reads it from a secret mounted as a file (compose secret,
    Kubernetes Secret volume, read-only) named by INNSERVE_AUTH_TOKEN_FILE; the probes stay
    open (INNSERVE_AUTH_PROBES unset or open, every probe path one of the routes
    server/http.c lets through without the token); no token in the Dockerfile;
  * the Dockerfile's port, user, volume and variables;
  * each other: container port = INNSERVE_PORT, probe ports and paths, volume mount path =
    INNSERVE_MODELS, Service/HPA/PDB selectors and targets, KServe runtime and model format,
    the simulator's target URL = the innserve service and port, termination grace periods
    >= preStop + drain timeout, systemd ExecStart flags and TimeoutStopSec.

Prints one line per check and exits 1 when any fails.  Needs python3-yaml.
"""

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

try:
    import yaml
except ImportError:
    sys.exit("check_manifests.py: python3-yaml is missing (apt-get install python3-yaml)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = os.path.join(ROOT, "deploy")
failures = []
passes = 0


def check(cond, what, detail=""):
    global passes
    if cond:
        passes += 1
        print("  ok    %s" % what)
    else:
        failures.append(what)
        print("  FAIL  %s%s" % (what, (": " + detail) if detail else ""))
    return cond


def rel(p):
    return os.path.relpath(p, ROOT)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def duration_s(v):
    """compose durations ('40s', '1m30s') and plain numbers -> seconds."""
    if isinstance(v, (int, float)) or re.fullmatch(r"[\d.]+", str(v)):
        return float(v)
    total, n = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    for m in re.finditer(r"([\d.]+)(h|ms|us|m|s)", str(v)):
        total += float(m.group(1)) * units[m.group(2)]
        n += m.group(0)
    if n != str(v):
        raise ValueError("bad duration %r" % v)
    return total


# ---- sources of truth --------------------------------------------------------------------

def truth_image():
    src = open(os.path.join(D, "test-image.sh")).read()
    m = re.search(r'^IMAGE=\$\{INNSERVE_IMAGE:-([^}]+)\}', src, re.M)
    if not m:
        sys.exit("cannot find IMAGE=${INNSERVE_IMAGE:-...} in deploy/test-image.sh")
    return m.group(1)


def truth_help(binary):
    """(flags, env names, drain default seconds) from `innserve --help`, else config.c."""
    text = None
    if binary and os.access(binary, os.X_OK):
        try:
            text = subprocess.run([binary, "--help"], capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            text = None
    if text:
        flags = set(re.findall(r"^\s+--([a-z][a-z0-9-]*)", text, re.M))
        envs = set(re.findall(r"\benv (INNSERVE_[A-Z0-9_]+)", text))
        m = re.search(r"--drain-timeout\s.*?\[([\d.]+)\]", text, re.S)
        return flags, envs, float(m.group(1)) if m else None, "innserve --help"
    src = open(os.path.join(ROOT, "server", "config.c")).read()
    flags = set(re.findall(r'^\s*\{"([a-z][a-z0-9-]*)", K_', src, re.M)) | {"help", "version"}
    envs = {"INNSERVE_" + f.upper().replace("-", "_") for f in flags}
    m = re.search(r"drain_timeout_s = ([\d.]+);", src)
    return flags, envs, float(m.group(1)) if m else None, "server/config.c"


def truth_routes():
    src = open(os.path.join(ROOT, "proto", "route.c")).read()
    return set(re.findall(r'\{PROTO_R_\w+,\s*"(/[^"]*)"', src))


def truth_open_probes(routes):
    """Paths server/http.c answers without the token under --auth-probes open (is_probe)."""
    http = open(os.path.join(ROOT, "server", "http.c")).read()
    m = re.search(r"static bool is_probe\(.*?\n\}", http, re.S)
    ids = re.findall(r"case (PROTO_R_\w+):", m.group(0)) if m else []
    src = open(os.path.join(ROOT, "proto", "route.c")).read()
    table = dict(re.findall(r'\{(PROTO_R_\w+),\s*"(/[^"]*)"', src))
    return {table[i] for i in ids if i in table}


def route_exists(path, routes):
    for r in routes:
        pat = "^" + re.sub(r"\\\{[a-z]+\\\}", "[^/]+", re.escape(r)) + "$"
        if re.match(pat, path):
            return True
    return False


def truth_dockerfile():
    src = open(os.path.join(ROOT, "Dockerfile")).read()
    src = re.sub(r"\\\n", " ", src)
    final = src[src.rindex("\nFROM "):]          # the runtime stage
    env = {}
    for line in re.findall(r"^ENV (.*)$", final, re.M):
        for tok in shlex.split(line):
            if "=" in tok:
                k, v = tok.split("=", 1)
                env[k] = v
    expose = re.findall(r"^EXPOSE (\d+)", final, re.M)
    user = re.findall(r"^USER (\S+)", final, re.M)
    volume = re.findall(r"^VOLUME \[?\"?([^\"\]\s]+)", final, re.M)
    stop = re.findall(r"^STOPSIGNAL (\S+)", final, re.M)
    hc = re.findall(r"^HEALTHCHECK .*", final, re.M)
    return {"env": env, "expose": expose, "user": user[-1] if user else None, "volume": volume,
            "stop": stop, "healthcheck": hc[0] if hc else ""}


# ---- live probe check ------------------------------------------------------------------

LIVE_TOKEN = "check-manifests-token"


def get_status(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception as e:  # noqa: BLE001
        return str(e)


def live_probe(binary, paths):
    """Start the daemon on a free port with the demo models and a bearer token (probes
    open, as the manifests run it); GET each path without the token, and /v1/models
    without and with it; -> {path: status, ("/v1/models", token): status}."""
    if not (binary and os.access(binary, os.X_OK)):
        return None
    tmp = tempfile.TemporaryFile()
    tokdir = tempfile.TemporaryDirectory()
    tok = os.path.join(tokdir.name, "token")
    with open(os.open(tok, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(LIVE_TOKEN + "\n")
    p = subprocess.Popen([binary, "--models", os.path.join(ROOT, "models"), "--host", "127.0.0.1",
                          "--port", "0", "--access-log", "off", "--auth-token-file", tok,
                          "--auth-probes", "open"], stderr=tmp)
    port, out = None, {}
    try:
        for _ in range(200):
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("event") == "listening":
                    port = ev.get("port")
            if port or p.poll() is not None:
                break
            time.sleep(0.05)
        if not port:
            return {"__error__": "the daemon did not log its port"}
        for _ in range(200):                    # wait until ready
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=2):
                    break
            except Exception:  # noqa: BLE001
                time.sleep(0.05)
        for path in sorted(paths):
            out[path] = get_status("http://127.0.0.1:%d%s" % (port, path))
        for token in (None, LIVE_TOKEN):
            out[("/v1/models", token)] = get_status("http://127.0.0.1:%d/v1/models" % port, token)
    finally:
        tokdir.cleanup()
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    return out


# ---- checks ------------------------------------------------------------------------------

def env_map(container):
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", []) or []}


def check_envs(names, envs, where):
    bad = sorted(n for n in names if n.startswith("INNSERVE_") and n not in envs)
    check(not bad, "%s: every INNSERVE_* variable is an option of the daemon" % where,
          "unknown %s" % bad)


def check_auth_env(env, where, T):
    """INNSERVE_AUTH_TOKEN_FILE set, the probes open.  -> the token file's path or None."""
    tok = env.get("INNSERVE_AUTH_TOKEN_FILE")
    check(bool(tok) and tok.startswith("/"), "%s: INNSERVE_AUTH_TOKEN_FILE names the token "
          "file (an absolute path)" % where, "got %r" % tok)
    check(env.get("INNSERVE_AUTH_PROBES", "open") == "open", "%s: INNSERVE_AUTH_PROBES is "
          "open (the probes carry no token)" % where, "got %r" % env.get("INNSERVE_AUTH_PROBES"))
    return tok


def check_open_probe(path, where, T):
    check(path in T["open_probes"], "%s: probe %s answers without the token (%s)"
          % (where, path, ", ".join(sorted(T["open_probes"]))))


def check_compose(T):
    path = os.path.join(D, "compose.yaml")
    print(rel(path))
    c = load_docs(path)[0]
    svcs = c.get("services", {})
    inn = svcs.get("innserve")
    if not check(inn is not None, "compose: an 'innserve' service"):
        return
    check(inn.get("image") == T["image"], "compose: innserve image = %s" % T["image"],
          "got %r" % inn.get("image"))
    b = inn.get("build", {})
    ctx = os.path.normpath(os.path.join(D, b.get("context", ".")))
    check(os.path.isfile(os.path.join(ctx, b.get("dockerfile", "Dockerfile"))),
          "compose: innserve build context holds the Dockerfile", ctx)
    env = {k: str(v) for k, v in (inn.get("environment") or {}).items()}
    check_envs(env, T["envs"], "compose")
    port = env.get("INNSERVE_PORT", T["docker"]["env"].get("INNSERVE_PORT"))
    check(env.get("INNSERVE_HOST", T["docker"]["env"].get("INNSERVE_HOST")) == "0.0.0.0",
          "compose: innserve binds 0.0.0.0")
    cports = [str(p).split(":")[-1].split("/")[0] for p in inn.get("ports", [])]
    check(cports and all(p == port for p in cports),
          "compose: published container port = INNSERVE_PORT (%s)" % port, "ports %s" % cports)
    models = env.get("INNSERVE_MODELS", T["docker"]["env"].get("INNSERVE_MODELS"))
    targets = [str(v).split(":")[1] for v in inn.get("volumes", []) if ":" in str(v)]
    check(models in targets, "compose: a volume is mounted at INNSERVE_MODELS (%s)" % models,
          "mounts %s" % targets)
    drain = float(env.get("INNSERVE_DRAIN_TIMEOUT", T["drain"]))
    grace = duration_s(inn.get("stop_grace_period", "10s"))
    check(grace >= drain, "compose: stop_grace_period (%gs) >= drain timeout (%gs)" % (grace, drain))
    check(inn.get("stop_signal", "SIGTERM") == "SIGTERM", "compose: stop signal SIGTERM")
    hc = " ".join(inn.get("healthcheck", {}).get("test", []))
    hp = re.findall(r"GET (/\S*) HTTP", hc) + re.findall(r"https?://[^/\s]+(/\S*)", hc)
    check(hp and all(route_exists(p, T["routes"]) for p in hp),
          "compose: healthcheck path is a daemon route", "%s" % hp)
    hport = re.findall(r"/dev/tcp/[^/]+/(\d+)", hc) + re.findall(r"https?://[^:/]+:(\d+)", hc)
    check(hport and all(p == port for p in hport), "compose: healthcheck port = INNSERVE_PORT",
          "%s" % hport)
    T["probe_paths"].update(hp)
    for p_ in hp:
        check_open_probe(p_, "compose healthcheck", T)
    secrets = c.get("secrets", {}) or {}

    def secret_path(svc, where):
        """The /run/secrets path of the service's secret whose file is the token."""
        paths = []
        for s in svc.get("secrets", []) or []:
            name = s if isinstance(s, str) else s.get("source")
            target = name if isinstance(s, str) else s.get("target", name)
            ok = check(name in secrets and "file" in (secrets.get(name) or {}),
                       "%s: secret %s is declared with a file" % (where, name))
            if ok:
                paths.append(target if target.startswith("/") else "/run/secrets/" + target)
        return paths

    tok = check_auth_env(env, "compose innserve", T)
    check(tok in secret_path(inn, "compose innserve"), "compose: innserve's "
          "INNSERVE_AUTH_TOKEN_FILE is a compose secret it mounts", "%r" % tok)
    for name, s in secrets.items():
        f = (s or {}).get("file", "")
        full = os.path.normpath(os.path.join(D, f))
        check(os.path.relpath(full, ROOT).split(os.sep)[0] == "deploy"
              and not subprocess.run(["git", "-C", ROOT, "ls-files", "--error-unmatch", full],
                                     capture_output=True).returncode == 0,
              "compose: secret %s's file (%s) is under deploy/ and not in git" % (name, f))

    sim = svcs.get("simulator")
    if not check(sim is not None, "compose: a 'simulator' service"):
        return
    sctx = os.path.normpath(os.path.join(D, sim.get("build", {}).get("context", ".")))
    check(os.path.isfile(os.path.join(sctx, "Dockerfile"))
          and os.path.isfile(os.path.join(sctx, "simulate.py")),
          "compose: simulator build context holds Dockerfile and simulate.py", sctx)
    senv = {k: str(v) for k, v in (sim.get("environment") or {}).items()}
    check(senv.get("INNSERVE_TOKEN_FILE") and senv.get("INNSERVE_TOKEN_FILE") == tok
          and tok in secret_path(sim, "compose simulator"),
          "compose: the simulator reads the same token secret (INNSERVE_TOKEN_FILE)",
          "%r" % senv.get("INNSERVE_TOKEN_FILE"))
    check("INNSERVE_TOKEN_FILE" in open(os.path.join(sctx, "simulate.py")).read(),
          "compose: simulate.py sends the token of INNSERVE_TOKEN_FILE")
    u = urllib.parse.urlparse(senv.get("INNSERVE_URL", ""))
    check(u.hostname == "innserve" and str(u.port or 80) == port,
          "compose: simulator INNSERVE_URL points at service innserve port %s" % port,
          senv.get("INNSERVE_URL"))
    src = open(os.path.join(sctx, "simulate.py")).read()
    m = re.search(r'env\("INNSERVE_URL", "([^"]+)"\)', src)
    check(m and m.group(1) == senv.get("INNSERVE_URL"),
          "compose: simulate.py's default URL = compose's INNSERVE_URL",
          m.group(1) if m else "no default found")
    model = senv.get("SIM_MODEL", "ik_cinn")
    check(os.path.isfile(os.path.join(ROOT, "models", model + ".safetensors")),
          "compose: simulator model %s is in models/" % model)
    dep = sim.get("depends_on", {})
    check(isinstance(dep, dict) and dep.get("innserve", {}).get("condition") == "service_healthy",
          "compose: simulator waits for innserve to be healthy")
    vols = c.get("volumes", {}) or {}
    for v in inn.get("volumes", []):
        src_ = str(v).split(":")[0]
        if not src_.startswith((".", "/")):
            check(src_ in vols, "compose: named volume %s is declared" % src_)


def resolve_port(container, port):
    for p in container.get("ports", []) or []:
        if port == p.get("name") or str(port) == str(p.get("containerPort")):
            return str(p["containerPort"])
    return None


def check_pod(spec, container, T, where, models_default):
    env = env_map(container)
    check_envs(env, T["envs"], where)
    check(container.get("image") == T["image"], "%s: image = %s" % (where, T["image"]),
          "got %r" % container.get("image"))
    port = env.get("INNSERVE_PORT", T["docker"]["env"].get("INNSERVE_PORT"))
    cports = [str(p.get("containerPort")) for p in container.get("ports", []) or []]
    check(cports == [port], "%s: containerPort = INNSERVE_PORT (%s)" % (where, port),
          "ports %s" % cports)
    check(env.get("INNSERVE_HOST", T["docker"]["env"].get("INNSERVE_HOST")) == "0.0.0.0",
          "%s: binds 0.0.0.0" % where)
    for kind, want in (("readinessProbe", ("/readyz", "/v2/health/ready")),
                       ("livenessProbe", ("/healthz", "/v2/health/live")),
                       ("startupProbe", ("/healthz", "/readyz", "/v2/health/live"))):
        pr = container.get(kind)
        if pr is None:
            if kind != "startupProbe":
                check(False, "%s: has a %s" % (where, kind))
            continue
        g = pr.get("httpGet", {})
        path = g.get("path")
        check(route_exists(path, T["routes"]) and path in want,
              "%s: %s GET %s is a daemon route meant for it" % (where, kind, path))
        check(resolve_port(container, g.get("port")) == port,
              "%s: %s port resolves to INNSERVE_PORT" % (where, kind), "port %r" % g.get("port"))
        check_open_probe(path, "%s %s" % (where, kind), T)
        T["probe_paths"].add(path)
    tok = check_auth_env(env, where, T)
    vols_all = {v["name"]: v for v in (spec.get("volumes", []) or [])}
    secret_mounts = {}
    for m in container.get("volumeMounts", []) or []:
        v = vols_all.get(m["name"], {})
        if "secret" in v:
            secret_mounts[m["mountPath"].rstrip("/")] = (m, v["secret"])
    d_, base = os.path.split(tok or "")
    sm = secret_mounts.get(d_)
    if check(sm is not None, "%s: the token file's directory (%s) is a Secret volume" % (where, d_),
             "secret mounts %s" % list(secret_mounts)):
        m, sec = sm
        keys = [i.get("path") for i in sec.get("items", [])] or [base]
        check(base in keys and sec.get("secretName"), "%s: the token is key %r of Secret %s"
              % (where, base, sec.get("secretName")))
        check(m.get("readOnly") is True, "%s: the Secret is mounted read-only" % where)
        mode = sec.get("defaultMode", 0o644)
        check(mode & 0o222 == 0, "%s: the token file is not writable (defaultMode %o)"
              % (where, mode))
    models = env.get("INNSERVE_MODELS", models_default)
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", []) or []}
    vols = {v["name"]: v for v in spec.get("volumes", []) or []}
    if models in mounts or where.startswith("deployment"):
        m = mounts.get(models)
        check(m is not None, "%s: a volume is mounted at INNSERVE_MODELS (%s)" % (where, models),
              "mounts %s" % list(mounts))
        if m:
            check(m["name"] in vols, "%s: the models mount names a declared volume" % where)
            check(m.get("readOnly") is True, "%s: models are mounted read-only" % where)
    res = container.get("resources", {})
    check(res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory"),
          "%s: cpu and memory requests are set" % where)
    return env


def check_k8s(T):
    docs = []
    for path in sorted(glob.glob(os.path.join(D, "k8s", "*.yaml"))):
        print(rel(path))
        docs += [(path, d) for d in load_docs(path)]
    by = {}
    for path, d in docs:
        by.setdefault(d["kind"], []).append(d)
        check(bool(d.get("apiVersion")) and bool(d.get("metadata", {}).get("name")),
              "%s: %s has apiVersion and metadata.name" % (rel(path), d["kind"]))
    dep = (by.get("Deployment") or [None])[0]
    if not check(dep is not None, "k8s: a Deployment"):
        return
    spec = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    check(all(labels.get(k) == v for k, v in sel.items()), "deployment: selector matches pod labels")
    c = spec["containers"][0]
    env = check_pod(spec, c, T, "deployment", T["docker"]["env"].get("INNSERVE_MODELS"))
    drain = float(env.get("INNSERVE_DRAIN_TIMEOUT", T["drain"]))
    pre = c.get("lifecycle", {}).get("preStop", {})
    pre_s = 0.0
    cmd = pre.get("exec", {}).get("command", [])
    if len(cmd) == 2 and cmd[0] == "sleep":
        pre_s = float(cmd[1])
    elif "sleep" in pre:
        pre_s = float(pre["sleep"]["seconds"])
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace >= pre_s + drain, "deployment: terminationGracePeriodSeconds (%s) >= preStop "
          "(%gs) + drain timeout (%gs)" % (grace, pre_s, drain))
    sc = spec.get("securityContext", {})
    uid = (T["docker"]["user"] or "0").split(":")[0]
    check(sc.get("runAsNonRoot") is True and str(sc.get("runAsUser")) == uid,
          "deployment: runs as non-root uid %s (the image's USER)" % uid)
    for vname, v in {v["name"]: v for v in spec.get("volumes", [])}.items():
        claim = v.get("persistentVolumeClaim", {}).get("claimName")
        if claim:
            check(any(p["metadata"]["name"] == claim for p in by.get("PersistentVolumeClaim", [])),
                  "deployment: volume %s's claim %s is defined in deploy/k8s" % (vname, claim))
    for s in by.get("Service", []):
        check(all(labels.get(k) == v for k, v in s["spec"]["selector"].items()),
              "service %s: selector matches the Deployment's pods" % s["metadata"]["name"])
        for p in s["spec"]["ports"]:
            check(resolve_port(c, p.get("targetPort", p["port"])) is not None,
                  "service %s: targetPort %s is a container port" % (s["metadata"]["name"],
                                                                     p.get("targetPort")))
    for h in by.get("HorizontalPodAutoscaler", []):
        ref = h["spec"]["scaleTargetRef"]
        check(ref["kind"] == "Deployment" and ref["name"] == dep["metadata"]["name"],
              "hpa: scales the Deployment")
        check(1 <= h["spec"].get("minReplicas", 1) <= h["spec"]["maxReplicas"], "hpa: min <= max")
        cpu = any(m.get("resource", {}).get("name") == "cpu" for m in h["spec"].get("metrics", []))
        check(not cpu or c.get("resources", {}).get("requests", {}).get("cpu"),
              "hpa: CPU utilisation target has a CPU request to measure against")
    for p in by.get("PodDisruptionBudget", []):
        check(all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items()),
              "pdb: selector matches the Deployment's pods")


def check_kserve(T):
    docs = []
    for path in sorted(glob.glob(os.path.join(D, "kserve", "*.yaml"))):
        print(rel(path))
        docs += load_docs(path)
    rts = [d for d in docs if d["kind"] in ("ServingRuntime", "ClusterServingRuntime")]
    isvcs = [d for d in docs if d["kind"] == "InferenceService"]
    if not (check(len(rts) == 1, "kserve: one ServingRuntime")
            and check(len(isvcs) >= 1, "kserve: an InferenceService")):
        return
    rt = rts[0]
    check(rt["apiVersion"].startswith("serving.kserve.io/"), "kserve: ServingRuntime apiVersion")
    check("v2" in rt["spec"].get("protocolVersions", []), "kserve: runtime speaks protocol v2")
    c = rt["spec"]["containers"][0]
    check(c.get("name") == "kserve-container", "kserve: the container is named kserve-container")
    env = check_pod(rt["spec"], c, T, "servingruntime", "/mnt/models")
    check(env.get("INNSERVE_MODELS") == "/mnt/models",
          "kserve: INNSERVE_MODELS = /mnt/models (where KServe's storage initializer puts models)")
    formats = {f["name"] for f in rt["spec"].get("supportedModelFormats", [])}
    drain = float(env.get("INNSERVE_DRAIN_TIMEOUT", T["drain"]))
    for s in isvcs:
        pred = s["spec"]["predictor"]
        m = pred["model"]
        check(s["apiVersion"] == "serving.kserve.io/v1beta1", "kserve: InferenceService apiVersion")
        check(m["modelFormat"]["name"] in formats, "kserve: %s's model format is the runtime's"
              % s["metadata"]["name"])
        check(m.get("runtime") in (None, rt["metadata"]["name"]),
              "kserve: %s uses runtime %s" % (s["metadata"]["name"], rt["metadata"]["name"]))
        check(m.get("protocolVersion") == "v2", "kserve: %s uses protocol v2" % s["metadata"]["name"])
        check(pred.get("terminationGracePeriodSeconds", 30) >= drain,
              "kserve: %s terminationGracePeriodSeconds >= drain timeout" % s["metadata"]["name"])


def check_systemd(T):
    path = os.path.join(D, "innserve.service")
    print(rel(path))
    kv = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, v = line.split("=", 1)
        kv.setdefault(k, []).append(v)
    env = {}
    for e in kv.get("Environment", []):
        k, v = e.split("=", 1)
        env[k] = v
    check_envs(env, T["envs"], "systemd")
    start = kv["ExecStart"][0]
    argv = shlex.split(start)
    flags = [a[2:].split("=")[0] for a in argv[1:] if a.startswith("--")]
    bad = [f for f in flags if f not in T["flags"]]
    check(flags and not bad, "systemd: ExecStart flags %s exist in %s" % (flags, T["help_src"]),
          "unknown %s" % bad)
    expanded = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), "?"), start)
    margs = shlex.split(expanded)
    models = margs[margs.index("--models") + 1] if "--models" in margs else env.get("INNSERVE_MODELS")
    ro = " ".join(kv.get("ReadOnlyPaths", [])).replace("-/", "/")
    check(models and models in ro.split(), "systemd: models (%s) are in ReadOnlyPaths" % models)
    check(kv.get("ProtectSystem", [""])[0] == "strict", "systemd: ProtectSystem=strict")
    check(kv.get("DynamicUser", ["no"])[0] == "yes" or kv.get("User"), "systemd: not root "
          "(DynamicUser or User)")
    check(any("-HUP" in r for r in kv.get("ExecReload", [])), "systemd: ExecReload sends SIGHUP")
    drain = float(env.get("INNSERVE_DRAIN_TIMEOUT", T["drain"]))
    stop = duration_s(kv.get("TimeoutStopSec", ["90"])[0])
    check(stop >= drain, "systemd: TimeoutStopSec (%gs) >= drain timeout (%gs)" % (stop, drain))
    if os.path.exists("/usr/bin/systemd-analyze"):
        # Documentation=man:innserve(1) must resolve: the page of docs/man, as make install puts it
        mandir = tempfile.mkdtemp()
        os.mkdir(os.path.join(mandir, "man1"))
        shutil.copy(os.path.join(ROOT, "docs", "man", "innserve.1"), os.path.join(mandir, "man1"))
        r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True,
                           env=dict(os.environ, MANPATH=mandir))
        shutil.rmtree(mandir, ignore_errors=True)
        msgs = [l for l in (r.stdout + r.stderr).splitlines()
                if l.strip() and "is not executable" not in l and "No such file" not in l
                and "/usr/local/bin/innserve" not in l]
        check(not msgs, "systemd: systemd-analyze verify", "; ".join(msgs))


def check_dockerfile(T):
    print("Dockerfile")
    d = T["docker"]
    port = d["env"].get("INNSERVE_PORT")
    check(d["env"].get("INNSERVE_HOST") == "0.0.0.0", "Dockerfile: INNSERVE_HOST=0.0.0.0")
    check(d["expose"] == [port], "Dockerfile: EXPOSE = INNSERVE_PORT (%s)" % port, "%s" % d["expose"])
    check(d["volume"] == [d["env"].get("INNSERVE_MODELS")], "Dockerfile: VOLUME = INNSERVE_MODELS")
    check(d["user"] and d["user"].split(":")[0] not in ("0", "root"), "Dockerfile: non-root USER")
    check(d["stop"] == ["SIGTERM"], "Dockerfile: STOPSIGNAL SIGTERM")
    hp = re.findall(r"GET (/\S*) HTTP", d["healthcheck"])
    check(hp == ["/healthz"] and route_exists("/healthz", T["routes"]),
          "Dockerfile: HEALTHCHECK requests /healthz", "%s" % hp)
    check("${INNSERVE_PORT}" in d["healthcheck"], "Dockerfile: HEALTHCHECK uses INNSERVE_PORT")
    check_envs(d["env"], T["envs"], "Dockerfile")
    T["probe_paths"].update(hp)
    for p_ in hp:
        check_open_probe(p_, "Dockerfile HEALTHCHECK", T)
    check(not any("TOKEN" in k for k in d["env"]), "Dockerfile: no token or token file baked "
          "into the image (it comes from a secret at run time)", "%s" % sorted(d["env"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "innserve"))
    p.add_argument("--no-live", action="store_true", help="do not start the daemon")
    a = p.parse_args()
    flags, envs, drain, help_src = truth_help(a.bin)
    routes = truth_routes()
    T = {"image": truth_image(), "flags": flags, "envs": envs, "drain": drain,
         "help_src": help_src, "routes": routes, "docker": truth_dockerfile(),
         "probe_paths": set(), "open_probes": truth_open_probes(routes)}
    print("truth: image %s; %d options from %s (drain timeout %ss); %d routes from "
          "proto/route.c" % (T["image"], len(flags), help_src, drain, len(T["routes"])))
    if not T["routes"] or drain is None or not T["open_probes"]:
        sys.exit("check_manifests.py: could not read the routes or the drain timeout")
    check_dockerfile(T)
    check_compose(T)
    check_k8s(T)
    check_kserve(T)
    check_systemd(T)
    if not a.no_live:
        print("live: every probe path against %s" % rel(a.bin))
        got = live_probe(a.bin, T["probe_paths"])
        if got is None:
            print("  (skipped: %s is not built; run make first, or pass --no-live)" % rel(a.bin))
            failures.append("live probe check: %s is not built" % rel(a.bin))
        else:
            for path in sorted(T["probe_paths"]):
                check(got.get(path) == 200, "live: GET %s answers 200 without the token" % path,
                      str(got.get(path)))
            check(got.get(("/v1/models", None)) == 401, "live: GET /v1/models without the "
                  "token answers 401", str(got.get(("/v1/models", None))))
            check(got.get(("/v1/models", LIVE_TOKEN)) == 200, "live: GET /v1/models with the "
                  "token answers 200", str(got.get(("/v1/models", LIVE_TOKEN))))
    print("%d checks passed, %d failed" % (passes, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
