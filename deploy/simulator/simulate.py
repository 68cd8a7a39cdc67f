#!/usr/bin/env python3
"""An example simulation service beside innserve: the inverse-kinematics simulator.

What a user's simulation does with innserve: it produces observations (here: the end point
of a planar arm, Kruse et al. 2021, "Benchmarking Invertible Architectures on Inverse
Problems"), asks the daemon for
posterior samples of the parameters that could have produced them
(POST /v1/models/{model}/sample), runs its own forward process on those samples, and checks
that they reproduce the observation (the re-simulation error).

Standard library only.  Configuration by flags or environment variables:

  --url          INNSERVE_URL        daemon address [http://innserve:8080]
  --token-file   INNSERVE_TOKEN_FILE bearer token for a daemon with --auth-token-file
                                     (one line; read at start) [none]
  --model        SIM_MODEL           model to ask [ik_cinn]
  --obs          SIM_OBS             observations per request [8]
  --samples      SIM_SAMPLES         posterior samples per observation [500]
  --rounds       SIM_ROUNDS          requests to make; 0 = forever [3]
  --interval     SIM_INTERVAL        seconds between rounds [2]
  --max-resim    SIM_MAX_RESIM       fail when a round's mean re-simulation error
                                     (mean squared end-point distance) exceeds this [0.01]
  --seed         SIM_SEED            seed of the simulated arms [1]
  --wait         SIM_WAIT            seconds to wait for /readyz [120]

Prints one JSON line per round; exits 0 when every round passed, 1 otherwise, 2 when the
daemon never became ready.
"""

import argparse
import json
import math
import os
import random
import sys
import time
import urllib.error
import urllib.request

SIGMA = (0.25, 0.5, 0.5, 0.5)       # prior std of (rail height, three joint angles)
LENGTHS = (0.5, 0.5, 1.0)           # segment lengths


def forward(x):
    """End point (horizontal, vertical) of the arm with parameters x (4 numbers)."""
    a1 = x[1]
    a2 = a1 + x[2]
    a3 = a2 + x[3]
    l1, l2, l3 = LENGTHS
    return (l1 * math.cos(a1) + l2 * math.cos(a2) + l3 * math.cos(a3),
            x[0] + l1 * math.sin(a1) + l2 * math.sin(a2) + l3 * math.sin(a3))


def prior(rng):
    return [rng.gauss(0.0, s) for s in SIGMA]


HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def request(url, body=None, timeout=30.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers=HEADERS)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read() or b"null")


def wait_ready(base, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            status, _ = request(base + "/readyz", timeout=3.0)
            if status == 200:
                return True
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = e
        time.sleep(0.5)
    print(json.dumps({"event": "not_ready", "url": base, "error": str(last)}), flush=True)
    return False


def one_round(args, rng, k):
    truth = [prior(rng) for _ in range(args.obs)]
    obs = [forward(x) for x in truth]
    t0 = time.monotonic()
    status, ans = request("%s/v1/models/%s/sample" % (args.url, args.model),
                          {"y": [list(y) for y in obs], "num_samples": args.samples,
                           "seed": args.seed * 1000003 + k})
    ms = (time.monotonic() - t0) * 1e3
    samples = ans["samples"]
    if len(samples) != args.obs or any(len(s) != args.samples for s in samples):
        raise ValueError("answer has the wrong shape")
    errs = []
    for y, xs in zip(obs, samples):
        d2 = [(forward(x)[0] - y[0]) ** 2 + (forward(x)[1] - y[1]) ** 2 for x in xs]
        errs.append(sum(d2) / len(d2))
    mean = sum(errs) / len(errs)
    return {"event": "round", "round": k, "model": ans.get("model"),
            "version": ans.get("version"), "observations": args.obs,
            "samples": args.samples, "latency_ms": round(ms, 1),
            "resim_mse_mean": mean, "resim_mse_max": max(errs),
            "ok": bool(mean <= args.max_resim)}


def main():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=env("INNSERVE_URL", "http://innserve:8080"))
    p.add_argument("--model", default=env("SIM_MODEL", "ik_cinn"))
    p.add_argument("--obs", type=int, default=int(env("SIM_OBS", "8")))
    p.add_argument("--samples", type=int, default=int(env("SIM_SAMPLES", "500")))
    p.add_argument("--rounds", type=int, default=int(env("SIM_ROUNDS", "3")))
    p.add_argument("--interval", type=float, default=float(env("SIM_INTERVAL", "2")))
    p.add_argument("--max-resim", type=float, default=float(env("SIM_MAX_RESIM", "0.01")))
    p.add_argument("--seed", type=int, default=int(env("SIM_SEED", "1")))
    p.add_argument("--wait", type=float, default=float(env("SIM_WAIT", "120")))
    p.add_argument("--token-file", default=env("INNSERVE_TOKEN_FILE"))
    args = p.parse_args()
    args.url = args.url.rstrip("/")
    if args.token_file:
        with open(args.token_file) as f:
            HEADERS["Authorization"] = "Bearer " + f.read().rstrip("\r\n")

    if not wait_ready(args.url, args.wait):
        return 2
    rng = random.Random(args.seed)
    failed, k = 0, 0
    while args.rounds == 0 or k < args.rounds:
        try:
            line = one_round(args, rng, k)
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as e:
            body = ""
            if isinstance(e, urllib.error.HTTPError):
                body = e.read().decode(errors="replace")[:300]
            line = {"event": "round", "round": k, "ok": False, "error": str(e), "body": body}
        failed += not line["ok"]
        print(json.dumps(line), flush=True)
        k += 1
        if args.rounds == 0 or k < args.rounds:
            time.sleep(args.interval)
    print(json.dumps({"event": "done", "rounds": k, "failed": failed}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
