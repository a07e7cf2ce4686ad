#!/usr/bin/env python3
"""CPU per request of single API endpoints (issue #11). Started by `bench/run.sh
--endpoint-cpu`; see docs/BENCHMARKS.md.

Seeds N annotated tasks through the import API, then for each endpoint runs `oha` without a
rate limit (closed loop, `--connections` connections) for `--seconds`, ROUNDS times, and
reports the requests per second, labelport's CPU time (user + system, from /proc) per
request and the median latency. Unlike the p99 of the rate-limited mix, the CPU a request
costs hardly moves from run to run, so it shows the effect of a change on a noisy machine.

- `tasks`:     `GET /api/tasks?project=&page=&page_size=30` (a random page)
- `tasks_all`: the same with `fields=all` (annotations and predictions included)
- `task`:      `GET /api/tasks/{id}/` (a random task)
- `storages`:  `GET /api/storages/export/localfiles?project=`
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (  # noqa: E402
    Client, cpu_seconds, create_storage, log, machine, seed, start_labelport, write_doc,
)

ENDPOINTS = ("tasks", "tasks_all", "task", "storages")


def urls(name, base, pid, n, first_task):
    rnd = random.Random(name)
    pages = max(1, n // 30)
    if name == "tasks":
        return [f"{base}/api/tasks?project={pid}&page={rnd.randint(1, pages)}&page_size=30" for _ in range(5000)]
    if name == "tasks_all":
        return [f"{base}/api/tasks?project={pid}&page={rnd.randint(1, pages)}&page_size=30&fields=all"
                for _ in range(5000)]
    if name == "task":
        return [f"{base}/api/tasks/{first_task + rnd.randrange(n)}/" for _ in range(5000)]
    return [f"{base}/api/storages/export/localfiles?project={pid}"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelport", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--database-url")
    ap.add_argument("--n", type=int, default=20000, help="annotated tasks seeded")
    ap.add_argument("--seconds", type=float, default=8, help="per endpoint and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--endpoints", default=",".join(ENDPOINTS))
    ap.add_argument("--json")
    ap.add_argument("--doc")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    info = machine(a.work)
    root = tempfile.mkdtemp(prefix="labelport-endpoint-cpu.", dir=a.work)
    server, token = start_labelport(a, a.work, root)
    try:
        cl = Client(server.port, token, timeout=120)
        log(f"seeding {a.n} annotated tasks")
        pid, _ = seed(cl, a.n, 5000, "endpoint cpu")
        first = cl.call("GET", f"/api/tasks?project={pid}&page=1&page_size=1")["tasks"][0]["id"]
        create_storage(cl, pid, os.path.join(root, "storage"), "endpoint cpu")
        base = f"http://127.0.0.1:{server.port}"
        res = {"machine": info, "db": "postgresql" if a.database_url else "sqlite", "n": a.n,
               "seconds": a.seconds, "rounds": a.rounds, "connections": a.connections, "endpoints": {}}
        for name in a.endpoints.split(","):
            path = os.path.join(a.work, f"{name}.urls")
            with open(path, "w") as f:
                f.write("\n".join(urls(name, base, pid, a.n, first)) + "\n")
            rounds = []
            for r in range(a.rounds):
                before = cpu_seconds(server.pid)
                out = subprocess.run([a.oha, "--no-tui", "--output-format", "json", "-z", f"{a.seconds:g}s",
                                      "-c", str(a.connections), "-H", f"Authorization: Token {token}",
                                      "--urls-from-file", path], capture_output=True, text=True, check=True)
                used = cpu_seconds(server.pid) - before
                summary = json.loads(out.stdout)
                ok = summary["statusCodeDistribution"]
                if set(ok) != {"200"}:
                    raise RuntimeError(f"{name}: status codes {ok}")
                requests = sum(ok.values())
                rounds.append({"rps": requests / a.seconds, "cpu_us": 1e6 * used / requests,
                               "p50_ms": 1000 * summary["latencyPercentiles"]["p50"]})
                log(f"  {name} round {r + 1}: {rounds[-1]['rps']:.0f} req/s, {rounds[-1]['cpu_us']:.0f} us CPU "
                    f"per request, p50 {rounds[-1]['p50_ms']:.2f} ms")
            res["endpoints"][name] = {k: statistics.median(x[k] for x in rounds) for k in ("rps", "cpu_us", "p50_ms")}
            res["endpoints"][name]["cpu_us_range"] = [min(x["cpu_us"] for x in rounds), max(x["cpu_us"] for x in rounds)]
    finally:
        server.stop()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    title = f"### CPU per request, {res['db']}"
    rows = ["| endpoint | requests/s | labelport CPU per request (median, range) | p50 |", "|---|---|---|---|"]
    for name, e in res["endpoints"].items():
        lo, hi = e["cpu_us_range"]
        rows.append(f"| `{name}` | {e['rps']:.0f} | {e['cpu_us']:.0f} µs ({lo:.0f}–{hi:.0f}) | {e['p50_ms']:.2f} ms |")
    m = res["machine"]
    head = (f"{a.n:,} annotated tasks; `oha -c {a.connections}` without a rate limit, {a.seconds:g} s per endpoint, "
            f"{a.rounds} rounds (medians); {m['date']}, commit {m['commit']}; {m['nproc']} cores ({m['cpu']}). "
            f"{a.note}").strip()
    body = "\n".join([title, "", head, "", *rows, ""])
    print(body)
    if a.doc:
        write_doc(a.doc, f"endpoint-cpu-{res['db']}", body)


if __name__ == "__main__":
    main()
