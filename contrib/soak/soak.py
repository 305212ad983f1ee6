#!/usr/bin/env python3
"""Helpers of contrib/soak.sh: seeding the instances, tokens and devices, and the report.

    soak.py seed URL WORK INSTANCES CODES   (prints SQL on stdout, see below)
    soak.py devices URL WORK
    soak.py report DIR WARMUP_S MAX_GROWTH_PERCENT

seed writes, under WORK (mode 0700, removed by soak.sh at the end):
  tokens.tsv   one instance a line: INSTANCE TAB SECRET (a `write` token of that instance)
  codes.tsv    one verification device a line: INSTANCE TAB DEVICE TAB WRONG TAB CODES, the
               8-digit HOTP codes of counters 0, 1, ... concatenated, and WRONG a code that
               matches none of them nor the look-ahead past the last
  devices.json the bodies of the POST .../otp-devices that `devices` sends
and prints on stdout the SQL that creates the instances and their tokens (soak.sh pipes it to
psql; the tokens' hashes only, as the store keeps them). The secrets stay in WORK: they are
never printed.

Each instance soak-NNNN gets ten devices:
  t1-0 … t1-3  TOTP without price (GET one with faketime)
  t2-0         TOTP with price (GET one with faketime and price)
  h-0, h-1     HOTP (confirmations)
  v-0, v-1     HOTP (verifications: the codes of codes.tsv, in counter order)
  p-0          TOTP (PATCHed: description, now and then the key)

devices creates them over HTTP (keep-alive connections, 8 threads), as clients do.

report reads, in DIR (soak.sh's SOAK_DIR), rss.tsv (seconds since the load started, VmRSS in
KiB), wrk.out (the SOAK lines the wrk script prints) and routes.tsv (the server's request log counted by method,
route and status), prints the summary and exits 1 when the RSS after WARMUP_S grew by more
than MAX_GROWTH_PERCENT, or any answer was a 5xx, or the load generator saw socket errors.
"""

import base64
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "verify-bench"))
from verify_bench import LOOK_AHEAD, Client, hotp, parallel  # noqa: E402

DEVICES = [
    ("t1-0", 1), ("t1-1", 1), ("t1-2", 1), ("t1-3", 1),
    ("t2-0", 2),
    ("h-0", 3), ("h-1", 3),
    ("v-0", 3), ("v-1", 3),
    ("p-0", 1),
]
VERIFY_DEVICES = ("v-0", "v-1")
WRONG_CANDIDATES = ["00000000", "11111111", "12121212", "99999999", "31415926", "27182818"]


def instance_id(i):
    return f"soak-{i:04d}"


def secret():
    """A token secret of the shape the store issues: 32 random bytes, base32 without padding."""
    return "secret-token:" + base64.b32encode(os.urandom(32)).decode().rstrip("=")


def seed(args):
    url, work, instances, ncodes = args[0], Path(args[1]), int(args[2]), int(args[3])
    del url  # the SQL goes through psql; kept for symmetry with `devices`
    started = time.monotonic()
    tokens, devices, code_lines = [], [], []
    for i in range(instances):
        instance = instance_id(i)
        tokens.append((instance, secret()))
        for device_id, algorithm in DEVICES:
            key = os.urandom(20)
            devices.append({
                "instance": instance,
                "body": {
                    "otp_device_id": device_id,
                    "otp_device_description": f"soak {instance} {device_id}",
                    "otp_key": base64.b32encode(key).decode().rstrip("="),
                    "otp_algorithm": algorithm,
                    "otp_ctr": 0,
                },
            })
            if device_id in VERIFY_DEVICES:
                codes = [hotp(key, c) for c in range(ncodes + LOOK_AHEAD + 1)]
                taken = set(codes)
                wrong = next(w for w in WRONG_CANDIDATES if w not in taken)
                code_lines.append(f"{instance}\t{device_id}\t{wrong}\t{''.join(codes[:ncodes])}\n")
    old = os.umask(0o077)
    try:
        with open(work / "tokens.tsv", "w", encoding="ascii") as out:
            out.writelines(f"{instance}\t{s}\n" for instance, s in tokens)
        with open(work / "codes.tsv", "w", encoding="ascii") as out:
            out.writelines(code_lines)
        with open(work / "devices.json", "w", encoding="ascii") as out:
            json.dump({"tokens": dict(tokens), "devices": devices}, out)
    finally:
        os.umask(old)
    # The instances and one `write` token each, in one transaction, as `instance create` and
    # `token create` would make them (without their audit rows: seeding is not audited).
    print("BEGIN;")
    print("INSERT INTO instances (instance_id, name) VALUES")
    print(",\n".join(f"  ('{instance}', 'Soak {instance}')" for instance, _ in tokens) + ";")
    print("INSERT INTO access_tokens (instance_serial, token_hash, scope, description)")
    print("SELECT i.instance_serial, decode(t.hash, 'hex'), 'write', 'soak' FROM (VALUES")
    rows = []
    for instance, s in tokens:
        digest = hashlib.sha256(s.removeprefix("secret-token:").encode()).hexdigest()
        rows.append(f"  ('{instance}', '{digest}')")
    print(",\n".join(rows))
    print(") AS t (instance_id, hash) JOIN instances i USING (instance_id);")
    print("COMMIT;")
    print(f"soak: {instances} instances with a token each, {len(devices)} devices to create, "
          f"{len(code_lines)} verification devices with {ncodes} codes each, "
          f"in {time.monotonic() - started:.1f} s", file=sys.stderr)


def devices(args):
    url, work = args[0], Path(args[1])
    with open(work / "devices.json", encoding="ascii") as f:
        seeded = json.load(f)
    client = Client(url)
    tokens = seeded["tokens"]
    started = time.monotonic()

    def create(device):
        instance = device["instance"]
        headers = {"Authorization": f"Bearer {tokens[instance]}",
                   "Content-Type": "application/json"}
        status, data = client.call("POST", f"/instances/{instance}/private/otp-devices",
                                   json.dumps(device["body"]), headers)
        if status == 204:
            return None
        return f"{instance}/{device['body']['otp_device_id']}: {status} {data[:200]!r}"

    failures = parallel(seeded["devices"], create, 8)
    if failures:
        sys.exit(f"seeding: {len(failures)} failures, first: {failures[0]}")
    print(f"soak: created {len(seeded['devices'])} devices over HTTP in "
          f"{time.monotonic() - started:.1f} s", file=sys.stderr)
    (work / "devices.json").unlink()


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def report(args):
    work, warmup, max_growth = Path(args[0]), float(args[1]), float(args[2])
    samples = []
    with open(work / "rss.tsv", encoding="ascii") as f:
        for line in f:
            t, kib = line.split()
            samples.append((float(t), int(kib)))
    after = [kib for t, kib in samples if t >= warmup]
    wrk = {}
    statuses, outcomes = {}, {}
    with open(work / "wrk.out", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "SOAK":
                if parts[1] == "status" and len(parts) == 4:
                    statuses[int(parts[2])] = int(parts[3])
                elif parts[1] == "verification":
                    outcomes[parts[2]] = int(parts[3])
                else:
                    wrk[parts[1]] = parts[2]
    routes = []
    if (work / "routes.tsv").exists():
        with open(work / "routes.tsv", encoding="utf-8") as f:
            for line in f:
                method, route, status, count = line.rstrip("\n").split("\t")
                routes.append((method, route, int(status), int(count)))

    problems = []
    print(f"RSS samples: {len(samples)} (every 10 s), {len(after)} after the warm-up of "
          f"{warmup:.0f} s")
    if samples:
        print(f"RSS before the load: {mib(samples[0][1])}; over the whole run: "
              f"min {mib(min(k for _, k in samples))}, max {mib(max(k for _, k in samples))}")
    print("RSS samples (MiB, every 10 s from the start of the load): "
          + " ".join(f"{k / 1024:.1f}" for _, k in samples))
    if after:
        base, low, high, last = after[0], min(after), max(after), after[-1]
        growth = (high - base) * 100.0 / base
        print(f"RSS after the warm-up: first {mib(base)}, min {mib(low)}, max {mib(high)}, "
              f"last {mib(last)}")
        print(f"RSS growth after the warm-up: {growth:+.1f} % (max over the first sample; "
              f"last over first {(last - base) * 100.0 / base:+.1f} %), bound {max_growth:.0f} %")
        if growth > max_growth:
            problems.append(f"RSS grew by {growth:.1f} % after the warm-up (bound "
                            f"{max_growth:.0f} %)")
    else:
        problems.append("no RSS sample after the warm-up")

    requests = int(wrk.get("requests", "0"))
    seconds = float(wrk.get("seconds", "0") or 0)
    rate = requests / seconds if seconds else 0
    print(f"requests: {requests:,} in {seconds:.0f} s ({rate:,.0f}/s, "
          f"{int(wrk.get('non2xx', '0')):,} not 2xx), latency p50 "
          f"{wrk.get('p50_ms', '?')} ms, p99 {wrk.get('p99_ms', '?')} ms, max "
          f"{wrk.get('max_ms', '?')} ms")
    errors = {k: int(wrk.get(k, "0")) for k in ("connect", "read", "write", "timeout")}
    print("socket errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    if any(errors.values()):
        problems.append(f"socket errors {errors}")
    print("statuses: " + ", ".join(f"{s}: {n:,}" for s, n in sorted(statuses.items())))
    if outcomes:
        print("verifications: " + ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items())))
    if any(s >= 500 for s in statuses):
        problems.append("5xx answers")
    if routes:
        print("answers by route (the server's request log):")
        for method, route, status, count in sorted(routes, key=lambda r: (r[1], r[0], r[2])):
            print(f"  {method:6} {route:58} {status}  {count:,}")
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print("PASS")
    return 1 if problems else 0


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "seed":
        seed(args)
    elif command == "devices":
        devices(args)
    elif command == "report":
        sys.exit(report(args))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
