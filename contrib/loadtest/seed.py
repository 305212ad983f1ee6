#!/usr/bin/env python3
"""Seeds devices for contrib/loadtest.sh over HTTP, on keep-alive connections.

    seed.py URL TOKEN INSTANCE SPEC [SPEC ...]

SPEC is PREFIX:ALGORITHM:COUNT:WIDTH, e.g. a1:1:5000:4 creates a1-0000 … a1-4999 with
algorithm 1. Descriptions are "bench device PREFIX-NNNN". Keys are random.
"""

import base64
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

THREADS = 8


def devices(specs):
    for spec in specs:
        prefix, algorithm, count, width = spec.split(":")
        for i in range(int(count)):
            device_id = f"{prefix}-{i:0{int(width)}d}"
            yield {
                "otp_device_id": device_id,
                "otp_device_description": f"bench device {device_id}",
                "otp_key": base64.b32encode(os.urandom(20)).decode().rstrip("="),
                "otp_algorithm": int(algorithm),
                "otp_ctr": 0,
            }


def main():
    url, token, instance, *specs = sys.argv[1:]
    parsed = urllib.parse.urlsplit(url)
    path = f"/instances/{instance}/private/otp-devices"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [json.dumps(d).encode() for d in devices(specs)]
    failures = []

    def worker(part):
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        for body in part:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 204:
                failures.append(f"{response.status} {data[:200]!r}")
        conn.close()

    started = time.monotonic()
    threads = [
        threading.Thread(target=worker, args=(bodies[i::THREADS],)) for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if failures:
        print(f"seeding {instance}: {len(failures)} failures, first: {failures[0]}", file=sys.stderr)
        sys.exit(1)
    print(f"seeded {len(bodies)} devices in {instance} in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
