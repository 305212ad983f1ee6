#!/usr/bin/env python3
"""Turns the outputs of contrib/loadtest.sh's runs into its summary table.

    report.py RESULTS.tsv HEADER.txt

RESULTS.tsv has one line per scenario: key, label, tool (wrk|oha|pgbench), output file,
server CPU seconds spent during the run, the server's peak RSS (kB) during the run, the
database transactions during the run. HEADER.txt is printed above the table.
The scenario whose key is "ceiling" is the ceiling the ratios of the reads refer to; the one
whose key is "pgbench" (PostgreSQL's own rate for a one-statement UPDATE ... RETURNING) is the
ceiling of the writes ("confirm", "hot", "pgbench-hot").
"""

import glob
import json
import re
import sys

# Scenarios whose ratio refers to the write ceiling (pgbench) instead of the constant route.
WRITES = ("pgbench", "pgbench-hot", "pgbench-audit", "confirm", "hot")

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unparsable latency {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_wrk(text):
    result = {"non2xx": 0, "socket_errors": 0}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not rps:
        raise ValueError("no Requests/sec in wrk output")
    result["rps"] = float(rps.group(1))
    total = re.search(r"(\d+) requests in", text)
    result["requests"] = int(total.group(1)) if total else 0
    for pct, key in (("50", "p50"), ("99", "p99")):
        match = re.search(rf"^\s+{pct}%\s+(\S+)\s*$", text, re.MULTILINE)
        if not match:
            raise ValueError(f"no {pct}% latency in wrk output (run with --latency)")
        result[key] = to_ms(match.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        result["non2xx"] = int(non2xx.group(1))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if errors:
        result["socket_errors"] = sum(int(g) for g in errors.groups())
    return result


def parse_oha(text):
    data = json.loads(text)
    summary = data["summary"]
    statuses = data.get("statusCodeDistribution", {})
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))
    total = sum(statuses.values())
    percentiles = data["latencyPercentiles"]
    return {
        "rps": float(summary["requestsPerSec"]),
        "requests": total,
        "p50": float(percentiles["p50"]) * 1000.0,
        "p99": float(percentiles["p99"]) * 1000.0,
        "non2xx": total - ok,
        "socket_errors": sum(data.get("errorDistribution", {}).values()),
    }


def parse_pgbench(text, output):
    tps = re.search(r"^tps = ([\d.]+)", text, re.MULTILINE)
    if not tps:
        raise ValueError(f"no tps in pgbench output {output}: {text[-500:]!r}")
    processed = re.search(r"number of transactions actually processed: (\d+)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    # One line per transaction: client_id transaction_no time_us script_no epoch epoch_us.
    latencies = []
    for log in glob.glob(output + ".log.*"):
        with open(log, encoding="utf-8") as lines:
            for line in lines:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]) / 1000.0)
    latencies.sort()

    def pct(p):
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))]

    return {
        "rps": float(tps.group(1)),
        "requests": int(processed.group(1)) if processed else len(latencies),
        "p50": pct(0.50),
        "p99": pct(0.99),
        "non2xx": int(failed.group(1)) if failed else 0,
        "socket_errors": 0,
    }


def main():
    results_path, header_path = sys.argv[1:3]
    rows = []
    for line in open(results_path, encoding="utf-8"):
        if not line.strip():
            continue
        key, label, tool, output, cpu, rss_kb, xacts = line.rstrip("\n").split("\t")
        text = open(output, encoding="utf-8").read()
        if tool == "pgbench":
            parsed = parse_pgbench(text, output)
        elif tool == "wrk":
            parsed = parse_wrk(text)
        else:
            parsed = parse_oha(text)
        parsed.update(
            key=key, label=label, cpu=float(cpu), rss=int(rss_kb) / 1024, xacts=int(xacts)
        )
        rows.append(parsed)
    ceiling = next((r["rps"] for r in rows if r["key"] == "ceiling"), None)
    pg_ceiling = next((r["rps"] for r in rows if r["key"] == "pgbench"), None)

    def ratio_of(r):
        reference = pg_ceiling if r["key"] in WRITES else ceiling
        return r["rps"] / reference if reference else None

    out = [open(header_path, encoding="utf-8").read().rstrip("\n"), ""]
    head = (
        f"{'scenario':<44} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8} "
        f"{'errors':>6} {'ratio':>9} {'CPU us/req':>10} {'DB tx/req':>9} {'RSS MiB':>7}"
    )
    out.append(head)
    out.append("-" * len(head))
    for r in rows:
        ratio = ratio_of(r)
        ratio = f"{ratio:.2f} {'pg' if r['key'] in WRITES else 'c'}" if ratio is not None else "-"
        pgbench = r["key"].startswith("pgbench")
        cpu_per_req = (r["cpu"] * 1e6 / r["requests"]) if r["requests"] else 0.0
        cpu = "-" if pgbench else f"{cpu_per_req:.1f}"
        rss = "-" if pgbench else f"{r['rss']:.1f}"
        # The warm-up's requests are not counted, the database's transactions during the run are.
        tx = f"{r['xacts'] / r['requests']:.3f}" if r["requests"] else "-"
        out.append(
            f"{r['label']:<44} {r['rps']:>9.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} "
            f"{r['non2xx']:>8} {r['socket_errors']:>6} {ratio:>9} {cpu:>10} {tx:>9} {rss:>7}"
        )
    out.append("")
    out.append(
        "ratio: requests/s over the constant-JSON ceiling's (c), or for the writes over "
        "pgbench's rate for the one-statement UPDATE on 1,000 rows (pg); non-2xx: answers with "
        "status >= 400 (pgbench: failed transactions); errors: socket errors (connect, read, "
        "write, timeout); CPU us/req: the server process's CPU time (user+system, PostgreSQL "
        "not included) per request; DB tx/req: transactions the database committed or rolled "
        "back during the run per request (background re-reads included; approximate: busy "
        "backends report their statistics up to seconds late, so some of the warm-up's may be "
        "counted); RSS MiB: the server's peak VmRSS during the run."
    )

    def goal(key, text, minimum, p99_below=None):
        r = next((r for r in rows if r["key"] == key), None)
        ratio = ratio_of(r) if r else None
        if r is None or ratio is None:
            return
        met = (
            ratio >= minimum
            and (p99_below is None or r["p99"] < p99_below)
            and r["non2xx"] == 0
            and r["socket_errors"] == 0
        )
        out.append(
            f"goal ({text}): {'met' if met else 'NOT met'} (ratio {ratio:.2f}, p99 "
            f"{r['p99']:.2f} ms, non-2xx {r['non2xx']}, errors {r['socket_errors']})"
        )

    goal("confirm", "(f) >= 0.50 x pgbench, p99 < 10 ms, no non-2xx", 0.50, 10.0)
    confirm = next((r for r in rows if r["key"] == "confirm"), None)
    audited = next((r for r in rows if r["key"] == "pgbench-audit"), None)
    if confirm and audited and audited["rps"]:
        out.append(
            f"(f) over pgbench running the audited statement (UPDATE + audit_append): "
            f"{confirm['rps'] / audited['rps']:.2f}"
        )
    goal("list", "(d) >= 0.35 x ceiling, no non-2xx", 0.35)
    goal("get2", "(c) >= 0.55 x ceiling, p99 < 4 ms, no non-2xx", 0.55, 4.0)
    get1 = next((r for r in rows if r["key"] == "get1"), None)
    if get1 and ceiling:
        met = (
            get1["rps"] / ceiling >= 0.40
            and get1["p99"] < 5.0
            and get1["non2xx"] == 0
            and get1["socket_errors"] == 0
        )
        out.append(
            f"target (GET one >= 0.40 x ceiling, p99 < 5 ms, no non-2xx): "
            f"{'met' if met else 'NOT met'} "
            f"(ratio {get1['rps'] / ceiling:.2f}, p99 {get1['p99']:.2f} ms, "
            f"non-2xx {get1['non2xx']}, errors {get1['socket_errors']})"
        )
    print("\n".join(out))


if __name__ == "__main__":
    main()
