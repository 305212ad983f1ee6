#!/usr/bin/env python3
"""Compares the database with the answers load.py logged (contrib/fault-test.sh).

    check.py NAME LOG STATE EVENTS PSQL_CONNINFO BOUND_SECONDS

EVENTS holds the lines "down <epoch seconds>" and "back <epoch seconds>" of one outage.
Prints the summary lines and exits 1 on any violation:
  - an acknowledged (2xx) write is not in the database: a create whose device is missing
    (unless deleted later with a 2xx), a device whose description is not its last acknowledged
    patch (or a later unanswered one), a confirmed counter at or above the stored counter, a
    verified code without its "verified" row;
  - a confirmation counter or a verification success handed out twice;
  - a 5xx other than 503, a 503 without Retry-After, a request without an answer, an answer
    slower than BOUND_SECONDS;
  - a server that does not serve without failures within 5 s of the database being back;
  - a GET answering what was overwritten (or deleted) more than SLACK seconds before it started.
Python 3 standard library; psql for the database.
"""

import collections
import hashlib
import hmac
import json
import subprocess
import sys

RECOVERY_BOUND = 5.0
SLACK = 3.0   # seconds a change may take to reach the other server's cache


def hotp(key: bytes, counter: int) -> str:
    digest = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = digest[19] & 0x0F
    value = int.from_bytes(digest[offset:offset + 4], "big") & 0x7FFFFFFF
    return f"{value % 100_000_000:08d}"


def query(conninfo, sql):
    out = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql],
                         check=True, capture_output=True, text=True).stdout.strip()
    return json.loads(out) if out else []


def ok(status):
    return 200 <= status < 300


def failure(entry):
    return entry["st"] == 0 or entry["st"] >= 500


def main(argv):
    if len(argv) != 7:
        sys.exit(__doc__)
    name, log_path, state_path, events_path, conninfo, bound = argv[1:7]
    bound = float(bound)
    with open(state_path) as f:
        state = json.load(f)
    events = {}
    with open(events_path) as f:
        for line in f:
            word, value = line.split()
            events[word] = float(value)
    down, back = events["down"], events["back"]
    log = [json.loads(line) for line in open(log_path) if line.strip()]
    log.sort(key=lambda e: e["t0"])
    devices = {row["id"]: row for row in query(conninfo, (
        "SELECT coalesce(json_agg(json_build_object('id', otp_device_id, 'desc', description, "
        "'ctr', otp_ctr)), '[]') FROM otp_devices d JOIN instances i USING (instance_serial) "
        "WHERE i.instance_id = 'admin'"))}
    verified_rows = query(conninfo, (
        "SELECT coalesce(json_agg(json_build_object('dev', otp_device_id, 'ctr', otp_ctr, "
        "'ref', reference)), '[]') FROM otp_verifications WHERE outcome = 'verified'"))
    violations = []

    def violation(text):
        if len(violations) < 20:
            print(f"fault-test {name}: VIOLATION {text}")
        violations.append(text)

    acked = collections.Counter()
    found = collections.Counter()

    # Devices each client created: their writes, in order (each device has one client).
    history = collections.defaultdict(list)
    for e in log:
        if e["op"] in ("create", "patch", "delete", "get") and e["dev"]:
            history[e["dev"]].append(e)
    stale = 0
    for dev, entries in history.items():
        writes = [e for e in entries if e["op"] != "get"]
        if not any(e["op"] == "create" and ok(e["st"]) for e in writes):
            continue   # never acknowledged: may or may not exist
        last_ack = max(i for i, e in enumerate(writes) if ok(e["st"]) or
                       (e["op"] == "delete" and e["st"] == 404))
        final = writes[last_ack]
        maybe_later = [e for e in writes[last_ack + 1:] if not ok(e["st"]) and e["st"] != 404]
        row = devices.get(dev)
        for i, e in enumerate(writes):
            if ok(e["st"]):
                acked[e["op"]] += 1
            if e["op"] == "patch" and e["st"] == 404 and not any(
                    w["op"] == "delete" for w in writes[:i]):
                violation(f"{dev}: PATCH at {e['t0']:.3f} answered 404 for an acknowledged device")
        if final["op"] == "delete":
            good = row is None
        else:
            allowed = {final.get("desc")} | {e.get("desc") for e in maybe_later}
            good = row is not None and row["desc"] in allowed or (
                row is None and any(e["op"] == "delete" for e in maybe_later))
        if good:
            for e in writes:
                if ok(e["st"]):
                    found[e["op"]] += 1
        else:
            violation(f"{dev}: last acknowledged {final['op']} ({final.get('desc')}) "
                      f"but the database has {row and row['desc']!r}")
        # Reads: what a GET may answer given the writes before it (SLACK for other caches).
        for g in (e for e in entries if e["op"] == "get" and e["st"] in (200, 404)):
            before = [w for w in writes if w["t1"] <= g["t0"]]
            floor = max((i for i, w in enumerate(before)
                         if (ok(w["st"]) or (w["op"] == "delete" and w["st"] == 404))
                         and w["t1"] < g["t0"] - SLACK),
                        default=0)
            window = before[floor:]
            values = {w.get("desc") if w["op"] != "delete" else None for w in window}
            got = g.get("got") if g["st"] == 200 else None
            if got not in values:
                stale += 1
                violation(f"{dev}: GET at {g['t0']:.3f} answered {got!r}, expected one of "
                          f"{sorted(map(str, values))}")

    # Confirmations: counters never twice, each below the stored counter, codes right.
    conf_keys = {d: bytes.fromhex(k) for d, k in state["conf"].items()}
    verify_keys = {d: bytes.fromhex(k) for d, k in state["verify"].items()}
    seen = collections.Counter()
    duplicates = 0
    for e in log:
        if e["op"] == "confirm" and e["st"] == 200:
            acked["confirm"] += 1
            key = (e["dev"], e["ctr"])
            seen[key] += 1
            if seen[key] == 2:
                duplicates += 1
                violation(f"confirmation counter {key} handed out twice")
            if e.get("code") != hotp(conf_keys[e["dev"]], e["ctr"]):
                violation(f"confirmation {key}: the code is not HOTP of its counter")
            row = devices.get(e["dev"])
            if row is not None and e["ctr"] < row["ctr"]:
                found["confirm"] += 1
            else:
                violation(f"confirmation {key} not below the stored counter {row and row['ctr']}")
    # Verifications: each success once, and in the database.
    rows = collections.Counter((r["dev"], r["ctr"]) for r in verified_rows)
    refs = {(r["dev"], r["ctr"]): r["ref"] for r in verified_rows}
    for key, count in rows.items():
        if count > 1:
            duplicates += 1
            violation(f"verification success {key} stored {count} times")
    successes = collections.Counter()
    for e in log:
        if e["op"] == "verify" and e["st"] == 200 and e.get("verified"):
            acked["verify"] += 1
            key = (e["dev"], e["ctr"])
            successes[key] += 1
            if successes[key] == 2:
                duplicates += 1
                violation(f"verification success {key} handed out twice")
            if e["ctr"] != e["n"]:
                violation(f"verification {key}: sent the code of {e['n']}")
            if rows.get(key) and refs.get(key) == e["ref"]:
                found["verify"] += 1
            else:
                violation(f"verification {key} ({e['ref']}) not in the database")
    del verify_keys

    # Answers: no 500s, 503 with Retry-After, none unanswered or slower than the bound.
    during = collections.Counter()
    max_during = 0.0
    for e in log:
        took = e["t1"] - e["t0"]
        if e["t1"] >= down and e["t0"] <= back:
            during[e["st"]] += 1
            max_during = max(max_during, took)
        if e["st"] == 0:
            violation(f"{e['op']} {e['dev']} at {e['t0']:.3f}: no answer ({e.get('err')})")
        elif e["st"] >= 500 and e["st"] != 503:
            violation(f"{e['op']} {e['dev']} at {e['t0']:.3f}: {e['st']}")
        elif e["st"] == 503 and not e["ra"]:
            violation(f"{e['op']} {e['dev']} at {e['t0']:.3f}: 503 without Retry-After")
        if took > bound:
            violation(f"{e['op']} {e['dev']} at {e['t0']:.3f}: answered after {took:.2f} s")
        if e["st"] == 503 and not (down - 1 <= e["t0"] <= back + RECOVERY_BOUND):
            violation(f"{e['op']} {e['dev']} at {e['t0']:.3f}: 503 outside the outage")

    # Recovery: the last failure of each server after the database came back.
    recovery = {}
    for srv in sorted({e["srv"] for e in log}):
        mine = [e for e in log if e["srv"] == srv]
        last_failure = max((e["t1"] for e in mine if failure(e) and e["t0"] >= down), default=back)
        # Serving again: the first success of a request sent after the database was back and
        # after the last failure.
        first_success = min((e["t1"] for e in mine
                             if ok(e["st"]) and e["t0"] >= max(back, last_failure)), default=None)
        served = first_success is not None
        recovery[srv] = max(0.0, (first_success if served else last_failure) - back)
        if recovery[srv] > RECOVERY_BOUND or not served:
            violation(f"server {srv}: failures until {recovery[srv]:.2f} s after the database "
                      f"was back{'' if served else ', and no success after them'}")

    total_acked = sum(acked.values())
    total_found = sum(found.values())
    if total_found != total_acked:
        violation(f"{total_acked - total_found} acknowledged writes not found")
    detail = ", ".join(f"{op} {acked[op]}" for op in ("create", "patch", "delete", "confirm", "verify"))
    statuses = ", ".join(f"{st}: {n}" for st, n in sorted(during.items()))
    print(f"fault-test {name}: {len(log)} answers; writes acknowledged {total_acked} ({detail}); "
          f"writes found {total_found}; duplicates {duplicates}")
    print(f"fault-test {name}: database away {back - down:.2f} s; answers during the outage "
          f"by status: {statuses or 'none'}; slowest {max_during:.3f} s (bound {bound:.1f} s)")
    resent = sum(1 for e in log if e.get("resent"))
    print(f"fault-test {name}: requests sent again because the server had closed the kept-alive "
          f"connection before they were written: {resent}")
    print(f"fault-test {name}: time to recover: " +
          ", ".join(f"server {srv} {t:.2f} s" for srv, t in recovery.items()) +
          f" (bound {RECOVERY_BOUND:.0f} s); stale reads {stale}; violations {len(violations)}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
