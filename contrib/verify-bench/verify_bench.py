#!/usr/bin/env python3
"""Helpers of contrib/verify-bench.sh: keys and codes, seeding, the privacyIDEA tokens, the report.

    verify_bench.py selftest
    verify_bench.py make CODES DEVICES --prefix P --count N --codes K [--algorithm 3|4]
                         [--stride S] [--wrong]
    verify_bench.py seed URL TOKEN INSTANCE DEVICES [DEVICES ...]
    verify_bench.py pi-tokens URL SECRETS (enrol|delete) DEVICES [DEVICES ...]
    verify_bench.py report RESULTS.tsv HEADER.txt

RESULTS.tsv: one run a line: side (pi|ours), scenario, label, wrk output file, load average.

Codes are RFC 4226 HOTP (HMAC-SHA1, dynamic truncation, 8 digits), computed here independently
of the server's code. For algorithm 4 (HOTP_WITH_PRICE) the HMAC key is GNUnet's KDF of the
device key with the price in network byte order as the salt (HKDF: extract HMAC-SHA512,
expand HMAC-SHA256), as crates/otp-algo does; every code then has its own price, which the wrk
script recomputes with the same formula (price_of below and in verify.lua).

CODES is the file verify.lua reads, one device a line, tab-separated:
    ID  BASE  CODES  PRICES
BASE is the device's first counter, CODES the 8-digit codes for BASE, BASE+1, ... concatenated,
PRICES "-" for algorithm 3 and "+" for algorithm 4, whose prices come from price_of.
With --wrong, CODES holds one code that matches no counter of the device's look-ahead window
(the same code for every device): the wrong-code scenario.
DEVICES is a JSON list of {"otp_device_id", "otp_device_description", "otp_key", "otp_algorithm",
"otp_ctr"} objects (the body of POST .../otp-devices), plus "hex_key" for privacyIDEA.
Device i of a file starts at counter i * STRIDE, so the matched counter in an answer names the
device (verify.lua uses that to keep at most one request per device in flight).
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import struct
import sys
import threading
import time
import urllib.parse

DIGITS = 8
LOOK_AHEAD = 10  # the server tries stored .. stored + 10
WRONG_CANDIDATES = ["00000000", "11111111", "12121212", "99999999", "31415926", "27182818"]


# --- codes ----------------------------------------------------------------------------------------

def hotp(key, counter, digits=DIGITS):
    """RFC 4226 §5.3: HMAC-SHA1 of the 8-byte big-endian counter, dynamic truncation."""
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[19] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10 ** digits).zfill(digits)


def amount_nbo(text):
    """A Taler amount "CUR:V.F" as 24 bytes: value u64, fraction u32 (units of 1e-8), currency."""
    currency, number = text.split(":")
    whole, _, frac = number.partition(".")
    fraction = int((frac + "00000000")[:8])
    return struct.pack(">QI", int(whole), fraction) + currency.encode().ljust(12, b"\0")


def gnunet_kdf(salt, ikm):
    """64 bytes of GNUNET_CRYPTO_kdf(salt, ikm): HKDF, extract HMAC-SHA512, expand HMAC-SHA256."""
    prk = hmac.new(salt, ikm, hashlib.sha512).digest()
    t1 = hmac.new(prk, b"\x01", hashlib.sha256).digest()
    t2 = hmac.new(prk, t1 + b"\x02", hashlib.sha256).digest()
    return t1 + t2


def price_of(index, counter):
    """The price sent with the code of device `index` (in its file) for `counter`.

    Varies with both, so consecutive codes of a device are bound to different amounts.
    verify.lua has the same formula."""
    value = (index * 37 + counter * 11) % 500 + 1
    cents = (index * 13 + counter * 7) % 100
    return f"KUDOS:{value}.{cents:02d}"


def device_key(prefix, device_id):
    """A deterministic 20-byte key per device (the benchmark must know every key)."""
    return hashlib.sha256(f"taler-otp verify-bench {prefix} {device_id}".encode()).digest()[:20]


def selftest():
    rfc = b"12345678901234567890"
    # RFC 4226 Appendix D, 6 digits.
    expected = ["755224", "287082", "359152", "969429", "338314",
                "254676", "287922", "162583", "399871", "520489"]
    got = [hotp(rfc, c, 6) for c in range(10)]
    assert got == expected, got
    # The same vectors with 8 digits (crates/otp-algo's tests).
    assert hotp(rfc, 0) == "84755224" and hotp(rfc, 1) == "94287082"
    assert hotp(rfc, 7) == "82162583"
    # crates/otp-algo: the amount encoding and the KDF vector from upstream.
    assert amount_nbo("EUR:1.5").hex() == "000000000000000102faf080455552000000000000000000"
    ikm = bytes.fromhex("37b5873383d485b5738aa50999f63018be7112e1b0b7d124fd6a1c371def7ba3")
    assert gnunet_kdf(amount_nbo("EUR:1.5"), ikm).hex() == (
        "10be0dbb5a2a0b7e26db0e8a5e43b69a4a0983f35029e913ec18ebefa2518487"
        "6834a2d790fbb308f4887471c482672a7f2fa81bf4ab56f970f4bf4f9edf9211")
    assert price_of(0, 0) == "KUDOS:1.00" and price_of(3, 5) == "KUDOS:167.74"
    print("selftest: RFC 4226 vectors (6 and 8 digits), amount encoding, KDF vector: ok")


def make(args):
    opts = parse_opts(args[2:], {"--prefix": str, "--count": int, "--codes": int,
                                 "--algorithm": int, "--stride": int,
                                 "--wrong": bool})
    codes_path, devices_path = args[0], args[1]
    prefix, count, ncodes = opts["--prefix"], opts["--count"], opts.get("--codes", 1)
    algorithm = opts.get("--algorithm", 3)
    stride = opts.get("--stride", 0)
    wrong = opts.get("--wrong", False)
    if stride and ncodes + LOOK_AHEAD >= stride:
        sys.exit(f"make: --codes {ncodes} does not fit in --stride {stride}")
    started = time.monotonic()
    devices, lines, wrong_code = [], [], None
    ids = [f"{prefix}-{i:04d}" for i in range(count)]
    keys = [device_key(prefix, d) for d in ids]
    if wrong:
        # One fixed code that no device accepts: none of its window stored..stored+10 has it.
        windows = [{hotp(k, i * stride + c) for c in range(LOOK_AHEAD + 1)}
                   for i, k in enumerate(keys)]
        wrong_code = next(w for w in WRONG_CANDIDATES if not any(w in win for win in windows))
    for i, (device_id, key) in enumerate(zip(ids, keys)):
        base = i * stride
        devices.append({
            "otp_device_id": device_id,
            "otp_device_description": f"verify-bench {device_id}",
            "otp_key": base64.b32encode(key).decode().rstrip("="),
            "hex_key": key.hex(),
            "otp_algorithm": algorithm,
            "otp_ctr": base,
        })
        if wrong:
            codes, prices = wrong_code, "-"
        elif algorithm == 4:
            codes = "".join(
                hotp(gnunet_kdf(amount_nbo(price_of(i, base + c)), key), base + c)
                for c in range(ncodes))
            prices = "+"
        else:
            codes = "".join(hotp(key, base + c) for c in range(ncodes))
            prices = "-"
        lines.append(f"{device_id}\t{base}\t{codes}\t{prices}\n")
    with open(codes_path, "w", encoding="ascii") as out:
        out.writelines(lines)
    with open(devices_path, "w", encoding="ascii") as out:
        json.dump(devices, out)
    what = f"wrong code {wrong_code}" if wrong else f"{ncodes} codes each"
    print(f"{prefix}: {count} devices (algorithm {algorithm}), {what}, "
          f"in {time.monotonic() - started:.1f} s", file=sys.stderr)


def parse_opts(argv, spec):
    opts, i = {}, 0
    while i < len(argv):
        name = argv[i]
        if name not in spec:
            sys.exit(f"unknown option {name}")
        if spec[name] is bool:
            opts[name] = True
            i += 1
        else:
            opts[name] = spec[name](argv[i + 1])
            i += 2
    return opts


# --- HTTP: seeding our server, privacyIDEA's tokens ----------------------------------------------

class Client:
    """Keep-alive HTTP/1.1 to 127.0.0.1 only, one connection per thread."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            sys.exit(f"refusing a non-local URL {url}")
        self.host, self.port = parts.hostname, parts.port
        self.local = threading.local()

    def call(self, method, path, body=None, headers=None):
        for attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def parallel(items, work, threads):
    failures = []

    def worker(part):
        for item in part:
            problem = work(item)
            if problem:
                failures.append(problem)

    pool = [threading.Thread(target=worker, args=(items[i::threads],)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return failures


def load_devices(paths):
    devices = []
    for path in paths:
        with open(path, encoding="ascii") as f:
            devices.extend(json.load(f))
    return devices


def seed(args):
    url, token, instance, *paths = args
    client = Client(url)
    path = f"/instances/{instance}/private/otp-devices"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    devices = load_devices(paths)
    started = time.monotonic()

    def create(device):
        body = json.dumps({k: v for k, v in device.items() if k != "hex_key"})
        status, data = client.call("POST", path, body, headers)
        return None if status == 204 else f"{device['otp_device_id']}: {status} {data[:200]!r}"

    failures = parallel(devices, create, 8)
    if failures:
        sys.exit(f"seeding {instance}: {len(failures)} failures, first: {failures[0]}")
    print(f"seeded {len(devices)} devices in {instance} in {time.monotonic() - started:.1f} s",
          file=sys.stderr)


def pi_tokens(args):
    """Enrols (or deletes) privacyIDEA HOTP tokens named like our devices, with the same keys."""
    url, secrets_path, action, *paths = args
    secrets = {}
    with open(secrets_path, encoding="utf-8") as f:
        for line in f:
            name, _, value = line.strip().partition("=")
            if name:
                secrets[name] = value
    client = Client(url)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, data = client.call("POST", "/auth", urllib.parse.urlencode(
        {"username": secrets["ADMIN_USER"], "password": secrets["ADMIN_PASS"]}), form)
    if status != 200:
        sys.exit(f"privacyIDEA /auth: {status} {data[:200]!r}")
    jwt = json.loads(data)["result"]["value"]["token"]
    headers = dict(form, **{"PI-Authorization": jwt})
    devices = load_devices(paths)
    started = time.monotonic()

    def api(method, path, fields=None):
        status, data = client.call(method, path,
                                   urllib.parse.urlencode(fields) if fields else None, headers)
        try:
            ok = status == 200 and json.loads(data)["result"]["status"] is True
        except ValueError:
            ok = False
        return None if ok else f"{method} {path}: {status} {data[:200]!r}"

    def delete(device):
        # Unknown serials answer an error: deleting is best effort, a fresh enrolment follows.
        api("DELETE", f"/token/{device['otp_device_id']}")

    def enrol(device):
        serial = device["otp_device_id"]
        delete(device)
        problem = api("POST", "/token/init", {
            "type": "hotp", "serial": serial, "otpkey": device["hex_key"], "genkey": "0",
            "otplen": str(DIGITS), "hashlib": "sha1",
            "description": "taler-otp contrib/verify-bench.sh (deleted at its end)"})
        if problem:
            return problem
        if device["otp_ctr"]:
            return f"{serial}: privacyIDEA tokens start at counter 0, not {device['otp_ctr']}"
        # Wrong codes must never reach the lockout: every request runs the full check.
        return api("POST", f"/token/set/{serial}", {"max_failcount": "2000000000"})

    failures = parallel(devices, enrol if action == "enrol" else delete, 4)
    if failures:
        sys.exit(f"privacyIDEA {action}: {len(failures)} failures, first: {failures[0]}")
    print(f"privacyIDEA: {action} {len(devices)} HOTP tokens in {time.monotonic() - started:.1f} s",
          file=sys.stderr)


# --- the report ------------------------------------------------------------------------------------

def parse_run(path):
    """wrk's output (parsed by contrib/loadtest/report.py) plus verify.lua's VERIFY line."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "loadtest"))
    from report import parse_wrk  # noqa: E402  (contrib/loadtest/report.py)

    text = open(path, encoding="utf-8").read()
    result = parse_wrk(text)
    verify = {}
    for line in text.splitlines():
        if line.startswith("VERIFY "):
            verify = dict(field.split("=", 1) for field in line.split()[1:])
    result["verify"] = {k: int(v) for k, v in verify.items()}
    bad = sum(result["verify"].get(k, 0) for k in ("bad", "starved"))
    result["errors"] = result["socket_errors"] + result["non2xx"] + bad
    if not verify:
        result["errors"] = max(result["errors"], 1)  # no VERIFY line: nothing was checked
    return result


def report(args):
    results_path, header_path = args
    rows = {}
    for line in open(results_path, encoding="utf-8"):
        if line.strip():
            side, scenario, label, output, load = line.rstrip("\n").split("\t")
            run = parse_run(output)
            run["load"] = load
            rows.setdefault(scenario, {"label": label})[side] = run
    out = [open(header_path, encoding="utf-8").read().rstrip("\n"), ""]
    head = (f"{'scenario':<34} | {'privacyIDEA req/s':>17} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
            f"| {'taler-otp req/s':>15} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | {'ratio':>7}")
    out += [head, "-" * len(head)]
    verdicts = []
    pi_correct = rows.get("correct", {}).get("pi")
    for scenario, row in rows.items():
        pi, ours = row.get("pi"), row.get("ours")
        reference = pi or (pi_correct if scenario == "price" else None)
        cells = [f"{row['label']:<34}"]
        if pi:
            cells.append(f"| {pi['rps']:>17.1f} {pi['p50']:>8.1f} {pi['p99']:>8.1f} {pi['errors']:>6}")
        elif reference:
            cells.append(f"| {'(as correct codes)':>17} {'':>8} {'':>8} {'':>6}")
        else:
            cells.append(f"| {'-':>17} {'-':>8} {'-':>8} {'-':>6}")
        if ours:
            cells.append(f"| {ours['rps']:>15.0f} {ours['p50']:>7.2f} {ours['p99']:>7.2f} "
                         f"{ours['errors']:>6}")
        else:
            cells.append(f"| {'-':>15} {'-':>7} {'-':>7} {'-':>6}")
        ratio = ours["rps"] / reference["rps"] if ours and reference and reference["rps"] else None
        cells.append(f"| {ratio:>6.0f}x" if ratio else f"| {'-':>7}")
        out.append(" ".join(cells))
        if ours:
            met = (ratio is not None and ratio >= 100 and ours["p99"] < 10.0
                   and ours["errors"] == 0)
            verdicts.append(
                f"  {row['label']}: {'met' if met else 'NOT met'} (ratio "
                f"{f'{ratio:.0f}x' if ratio else 'n/a'}, p99 {ours['p99']:.2f} ms, "
                f"errors {ours['errors']})")
    out.append("")
    out.append("errors: socket errors + answers >= 400 + answers that were not the expected verdict "
               "(verified:true with the expected counter for correct codes, a mismatch for wrong "
               "ones) + requests sent without a fresh code (codes ran out); see the VERIFY lines "
               "of the wrk outputs. ratio: taler-otp req/s over privacyIDEA's (the with-price row "
               "over privacyIDEA's correct-code row: privacyIDEA has no price-bound codes).")
    if verdicts:
        out.append("goal (>= 100x privacyIDEA, p99 < 10 ms at the same connection count, no errors):")
        out += verdicts
    for scenario, row in rows.items():
        for side in ("pi", "ours"):
            run = row.get(side)
            if run:
                v = " ".join(f"{k}={n}" for k, n in run["verify"].items())
                out.append(f"  [{side} {scenario}] load average before {run['load']}, "
                           f"requests={run['requests']} {v}")
    print("\n".join(out))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    command, args = sys.argv[1], sys.argv[2:]
    if command == "selftest":
        selftest()
    elif command == "make":
        make(args)
    elif command == "seed":
        seed(args)
    elif command == "pi-tokens":
        pi_tokens(args)
    elif command == "report":
        report(args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
