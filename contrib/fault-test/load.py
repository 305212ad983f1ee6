#!/usr/bin/env python3
"""Mixed load against several taler-otp servers, every answer logged (contrib/fault-test.sh).

    load.py setup URL,URL TOKEN STATE            creates the shared HOTP devices, writes STATE
    load.py run URL,URL TOKEN STATE LOG SECONDS [THREADS]

`run` drives THREADS clients (default 12) for SECONDS; each request goes to one of the servers
at random and each answer becomes one JSON line of LOG:
  t0, t1     wall-clock seconds when the request was sent and when its answer (or error) came
  srv        the server's index; op; dev (device id); st (HTTP status, 0: no answer)
  ra         whether a Retry-After header came with it
  and what the check needs: the description sent (desc) or received (got), the counter of a
  confirmation or verification (ctr), its code, verified/reason, the reference sent (ref).
Each client owns the devices it creates (creates, patches, deletes and GETs of one device are
sequential); confirmations and verifications go to shared HOTP devices, several clients at once.
Python 3 standard library only.
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import signal
import sys
import threading
import time

CONF_DEVICES = 6      # HOTP devices for confirmations
VERIFY_DEVICES = 6    # HOTP devices for verifications
TIMEOUT = 20.0        # seconds before a request counts as unanswered (st 0)


def hotp(key: bytes, counter: int) -> str:
    """RFC 4226 HOTP-SHA1, 8 digits (the codes of algorithm 3)."""
    digest = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = digest[19] & 0x0F
    value = int.from_bytes(digest[offset:offset + 4], "big") & 0x7FFFFFFF
    return f"{value % 100_000_000:08d}"


def new_key() -> bytes:
    return os.urandom(20)


def b32(key: bytes) -> str:
    return base64.b32encode(key).decode().rstrip("=")


class Client:
    """One keep-alive connection per server; every answer appended to the shared log."""

    def __init__(self, urls, token, log, lock):
        self.hosts = [u.removeprefix("http://").rstrip("/") for u in urls]
        self.conns = [None] * len(self.hosts)
        self.token = token
        self.log = log
        self.lock = lock

    def request(self, srv, method, path, body=None):
        """(status, headers, parsed JSON or None, t0, t1); status 0 when nothing came back."""
        headers = {"Authorization": "Bearer " + self.token}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        t0 = time.time()
        self.resent = None
        try:
            if self.conns[srv] is None:
                self.conns[srv] = http.client.HTTPConnection(self.hosts[srv], timeout=TIMEOUT)
            conn = self.conns[srv]
            try:
                conn.request(method, path, body=data, headers=headers)
            except (BrokenPipeError, ConnectionResetError) as err:
                # The server had closed this kept-alive connection before the request was
                # written, so it cannot have seen it: send it once more on a new one, and say so.
                self.resent = type(err).__name__
                conn.close()
                conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status, rheaders = resp.status, resp.headers
        except (OSError, http.client.HTTPException) as err:
            if self.conns[srv] is not None:
                self.conns[srv].close()
            self.conns[srv] = None
            return 0, {}, {"error": type(err).__name__}, t0, time.time()
        t1 = time.time()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return status, rheaders, parsed, t0, t1

    def record(self, entry):
        line = json.dumps(entry, separators=(",", ":"))
        with self.lock:
            self.log.write(line + "\n")

    def call(self, op, dev, method, path, body=None, **extra):
        srv = random.randrange(len(self.hosts))
        status, headers, parsed, t0, t1 = self.request(srv, method, path, body)
        entry = {"t0": round(t0, 4), "t1": round(t1, 4), "srv": srv, "op": op, "dev": dev,
                 "st": status, "ra": bool(headers.get("Retry-After")) if headers else False}
        if status == 0 and parsed:
            entry["err"] = parsed.get("error")
        if self.resent:
            entry["resent"] = self.resent
        entry.update(extra)
        return entry, parsed


def device_path(dev):
    return "/private/otp-devices/" + dev


class Shared:
    """The shared HOTP devices and what the clients believe their next counters are."""

    def __init__(self, state):
        self.conf = state["conf"]
        self.verify = {d: bytes.fromhex(k) for d, k in state["verify"].items()}
        self.next = {d: 0 for d in self.verify}
        self.lock = threading.Lock()


STOP = threading.Event()


def worker(index, client, shared, deadline, seed):
    rng = random.Random(seed)
    owned = {}          # device id -> number of writes so far
    serial = 0
    while time.time() < deadline and not STOP.is_set():
        roll = rng.random()
        if roll < 0.10 or not owned:
            serial += 1
            dev = f"L-{index}-{serial}"
            desc = f"{dev}/0"
            entry, _ = client.call("create", dev, "POST", "/private/otp-devices", {
                "otp_device_id": dev, "otp_device_description": desc,
                "otp_key": b32(new_key()), "otp_algorithm": 1}, desc=desc)
            client.record(entry)
            if 200 <= entry["st"] < 300:
                owned[dev] = 0
        elif roll < 0.33:
            dev = rng.choice(list(owned))
            owned[dev] += 1
            desc = f"{dev}/{owned[dev]}"
            entry, _ = client.call("patch", dev, "PATCH", device_path(dev),
                                   {"otp_device_description": desc}, desc=desc)
            client.record(entry)
        elif roll < 0.38:
            dev = rng.choice(list(owned))
            # Until the outcome is known: 204, or 404 after an attempt that was not answered.
            while time.time() < deadline + 30 and not STOP.is_set():
                entry, _ = client.call("delete", dev, "DELETE", device_path(dev))
                client.record(entry)
                if entry["st"] in (204, 404):
                    break
                time.sleep(0.05)
            del owned[dev]
        elif roll < 0.63:
            dev = rng.choice(list(owned))
            entry, body = client.call("get", dev, "GET", device_path(dev))
            if entry["st"] == 200 and body:
                entry["got"] = body.get("device_description")
            client.record(entry)
        elif roll < 0.65:
            entry, _ = client.call("list", None, "GET", "/private/otp-devices")
            client.record(entry)
        elif roll < 0.82:
            dev = rng.choice(list(shared.conf))
            entry, body = client.call("confirm", dev, "POST", device_path(dev) + "/confirmations", {})
            if entry["st"] == 200 and body:
                entry["ctr"] = body.get("otp_ctr")
                entry["code"] = body.get("pos_confirmation")
            client.record(entry)
        else:
            dev = rng.choice(list(shared.verify))
            with shared.lock:
                counter = shared.next[dev]
            ref = f"{index}-{serial}-{rng.randrange(1 << 30)}"
            entry, body = client.call("verify", dev, "POST", device_path(dev) + "/verifications",
                                      {"code": hotp(shared.verify[dev], counter), "reference": ref},
                                      n=counter, ref=ref)
            if entry["st"] == 200 and body:
                entry["verified"] = body.get("verified")
                entry["reason"] = body.get("reason")
                entry["ctr"] = body.get("otp_ctr")
                if body.get("verified") or body.get("reason") == "replayed":
                    with shared.lock:
                        shared.next[dev] = max(shared.next[dev], counter + 1)
            client.record(entry)


def setup(urls, token, state_path):
    client = Client(urls, token, None, None)
    state = {"conf": {}, "verify": {}}
    for kind, count in (("C", CONF_DEVICES), ("V", VERIFY_DEVICES)):
        for i in range(count):
            dev, key = f"{kind}-{i}", new_key()
            status, _, parsed, _, _ = client.request(0, "POST", "/private/otp-devices", {
                "otp_device_id": dev, "otp_device_description": dev,
                "otp_key": b32(key), "otp_algorithm": 3})
            if status != 204:
                sys.exit(f"load.py: creating {dev}: {status} {parsed}")
            state["conf" if kind == "C" else "verify"][dev] = key.hex()
    with open(state_path, "w") as out:
        json.dump(state, out)


def run(urls, token, state_path, log_path, seconds, threads):
    with open(state_path) as f:
        state = json.load(f)
    shared = Shared(state)
    deadline = time.time() + seconds
    lock = threading.Lock()
    with open(log_path, "a", buffering=1) as log:
        pool = [threading.Thread(target=worker,
                                 args=(i, Client(urls, token, log, lock), shared, deadline,
                                       random.randrange(1 << 62)))
                for i in range(threads)]
        # SIGTERM stops the clients after the request each is in, which is logged.
        signal.signal(signal.SIGTERM, lambda *_: STOP.set())
        for thread in pool:
            thread.start()
        for thread in pool:
            while thread.is_alive():
                thread.join(0.2)


def main(argv):
    if len(argv) >= 5 and argv[1] == "setup":
        setup(argv[2].split(","), argv[3], argv[4])
    elif len(argv) >= 7 and argv[1] == "run":
        threads = int(argv[7]) if len(argv) > 7 else 12
        run(argv[2].split(","), argv[3], argv[4], argv[5], float(argv[6]), threads)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
