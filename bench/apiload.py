#!/usr/bin/env python3
"""API under load (issue #11): fixed-rate reads and writes while a full sync runs. Started by
`bench/run.sh --api-load`; see docs/BENCHMARKS.md.

Seeds N annotated tasks through the import API, creates a local-files storage, starts its full
sync and, at the same moment, one `oha` process per endpoint at its share of the total rate
(`-q`, open loop with `--latency-correction`, so a stalled server shows as latency rather than
as fewer requests):

- `GET /api/storages/export/localfiles?project=`  (the storage list, status of the running sync)
- `GET /api/tasks?project=&page=&page_size=`       (a random page of the project)
- `POST /api/tasks/{id}/annotations/`              (a new annotation on a random task)

Reports per endpoint p50/p99/max latency, transport errors, non-2xx responses and the achieved
rate from oha's JSON output, the same split into requests started while the sync was running
and after (from oha's per-request records, `--db-url`), and when the sync ended. Beside oha's
view (from the moment a request was due to its response, so a client or kernel that is late
counts too), the server's own: how long its handlers took for the same requests, from the
`labelport_http_request_duration_seconds` histogram scraped from `/metrics` before and after the
window, as the share over the target and the bucket that holds the 99th percentile.
"""
import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (  # noqa: E402
    Client, change_result, cpu_seconds, cpu_seconds_of, create_storage, log, machine, machine_busy_seconds, pct,
    read_status, seed, start_labelport, write_doc,
)
from threads import busy, threads  # noqa: E402

# name, target p99 (ms)
ENDPOINTS = (("storages", 5), ("tasks", 5), ("annotations", 20))
# The server's method and route template of each endpoint, as its metrics label them.
ROUTES = {
    "storages": ("GET", "/api/storages/export/{type}"),
    "tasks": ("GET", "/api/tasks"),
    "annotations": ("POST", "/api/tasks/{id}/annotations"),
}
LATENCY = "labelport_http_request_duration_seconds"
LABELS = {
    "storages": "`GET /api/storages/export/localfiles?project=`",
    "tasks": "`GET /api/tasks?project=&page=&page_size=PAGE_SIZE`",
    "annotations": "`POST /api/tasks/{id}/annotations/`",
}


def watch_sync(cl, sid, t0, out, stop, again=None):
    """Polls the storage every 50 ms until its sync ends; notes when, relative to `t0`.
    With `again` (a function that starts the next sync and returns its storage, or None
    once the window is over), keeps a sync running: each one that ends is followed by
    the next, and `out` tells how many ran and how they ended."""
    statuses = []
    while not stop.is_set():
        s = cl.call("GET", f"/api/storages/export/localfiles/{sid}")
        if s["status"] in ("completed", "failed", "completed_with_errors"):
            statuses.append(s["status"])
            out.update(status=s["status"], ended_s=time.monotonic() - t0, meta=s.get("meta"), syncs=len(statuses),
                       statuses={k: statuses.count(k) for k in sorted(set(statuses))})
            sid = again() if again else None
            if sid is None:
                return
            continue
        time.sleep(0.05)


def oha_cmd(a, token, name, rate, work, pid, first_task):
    rnd = random.Random(name)
    base = f"http://127.0.0.1:{a.port}"
    urls = os.path.join(work, f"{name}.urls")
    if name == "storages":
        lines = [f"{base}/api/storages/export/localfiles?project={pid}"]
    elif name == "tasks":
        pages = max(1, a.n // a.page_size)
        lines = [f"{base}/api/tasks?project={pid}&page={rnd.randint(1, pages)}&page_size={a.page_size}"
                 for _ in range(10000)]
    else:
        lines = [f"{base}/api/tasks/{first_task + rnd.randrange(a.n)}/annotations/" for _ in range(10000)]
    with open(urls, "w") as f:
        f.write("\n".join(lines) + "\n")
    cmd = [a.oha, "--no-tui", "--output-format", "json", "-o", os.path.join(work, f"{name}.json"),
           "--db-url", os.path.join(work, f"{name}.db"), "-z", f"{a.seconds}s", "-w", "-q", f"{rate:g}",
           "--latency-correction", "-c", str(a.connections), "-H", f"Authorization: Token {token}",
           "--urls-from-file", urls]
    if name == "annotations":
        cmd += ["-m", "POST", "-T", "application/json", "-d", json.dumps({"result": change_result("api-load")})]
    return cmd


def server_buckets(port):
    """Cumulative counts of the server's latency histogram by (method, route): {le (s): count}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line.startswith(LATENCY + "_bucket{"):
            continue
        labels, value = line[len(LATENCY) + 8:].rsplit("} ", 1)
        kv = dict(part.split("=", 1) for part in labels.split('",'))
        kv = {k: v.strip('"') for k, v in kv.items()}
        le = float("inf") if kv["le"] == "+Inf" else float(kv["le"])
        out.setdefault((kv["method"], kv["route"]), {})[le] = float(value)
    return out


def server_side(before, after, name, target_ms):
    """The server's latency for one endpoint's requests in the window: how many, the share
    over the target (over the largest bucket bound not above it, when the target is not one),
    and the smallest bucket bound holding 99 % of them."""
    key = ROUTES[name]
    b, a = before.get(key, {}), after.get(key, {})
    cum = sorted((le, a[le] - b.get(le, 0.0)) for le in a)
    total = cum[-1][1] if cum else 0.0
    if not total:
        return {"requests": 0, "over_ms": None, "over": None, "p99_at_most_ms": None}
    bound, within = max(((le, c) for le, c in cum if le * 1000 <= target_ms + 1e-9), default=(0.0, 0.0))
    p99 = next(le for le, c in cum if c >= 0.99 * total)
    return {"requests": int(total), "over_ms": bound * 1000, "over": 1 - within / total, "p99_at_most_ms": p99 * 1000}


def cpu_now(server_pid):
    """CPU seconds so far: labelport's, PostgreSQL's, the waited-for children's (oha's), the
    machine's, and the wall clock."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"labelport": cpu_seconds(server_pid), "postgresql": cpu_seconds_of("postgres"),
            "oha": children.ru_utime + children.ru_stime, "machine": machine_busy_seconds(),
            "wall": time.monotonic()}


def cores(before, after):
    """Cores each used on average between two `cpu_now` readings."""
    wall = after["wall"] - before["wall"]
    return {k: (after[k] - before[k]) / wall for k in before if k != "wall"}


def split(db_path, sync_end_s):
    """Latency (ms) of the requests oha recorded, started before and after the sync ended."""
    c = sqlite3.connect(db_path)
    rows = c.execute("SELECT COALESCE(start_latency_correction, start), duration, status FROM oha").fetchall()
    c.close()
    out = {}
    for phase, keep in (("during_sync", lambda s: s < sync_end_s), ("after_sync", lambda s: s >= sync_end_s)):
        lat = [d * 1000 for s, d, _ in rows if keep(s)]
        out[phase] = {"requests": len(lat), "non_2xx": sum(1 for s, _, st in rows if keep(s) and not 200 <= st < 300),
                      "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat, default=None)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelport", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--storage-parent", help="where the storage directory goes (default: --work); the database stays in --work")
    ap.add_argument("--database-url")
    ap.add_argument("--n", type=int, default=100000, help="annotations of the full sync")
    ap.add_argument("--rate", type=float, default=1000, help="requests/s of all endpoints together")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--connections", type=int, default=16, help="connections per oha process")
    ap.add_argument("--shares", default="0.4,0.4,0.2",
                    help="each endpoint's share of the rate, in the order above; 0 leaves one out (to find who costs what)")
    ap.add_argument("--page-size", type=int, default=30, help="a screenful, as a UI asks (the server's default is 100)")
    ap.add_argument("--after-seed-sql", help="PostgreSQL only: SQL run (psql) after seeding, before the load, e.g. to "
                    "restore an older plan for an A/B run on one binary (docs/BENCHMARKS.md, issue #11)")
    ap.add_argument("--sync-loop", action="store_true",
                    help="keep a full sync running for the whole window: the first is the project's storage's, "
                    "each later one a new storage's first sync in a twin project seeded alike (all N documents)")
    ap.add_argument("--doc")
    ap.add_argument("--json")
    ap.add_argument("--note", default="", help="a sentence for the doc (e.g. how busy the machine was)")
    a = ap.parse_args()
    a.plan = [(name, float(share), target) for (name, target), share in zip(ENDPOINTS, a.shares.split(","))
              if float(share) > 0]
    info = machine(a.work)
    root = tempfile.mkdtemp(prefix="labelport-api-load.", dir=a.storage_parent or a.work)
    info["storage"] = subprocess.run(["df", "--output=fstype", root], capture_output=True, text=True).stdout.split()[-1]
    server, token = start_labelport(a, a.work, root)
    a.port = server.port
    try:
        cl = Client(server.port, token, timeout=120)
        log(f"seeding {a.n} annotated tasks")
        pid, _ = seed(cl, a.n, 5000, "api load")
        first = cl.call("GET", f"/api/tasks?project={pid}&page=1&page_size=1")["tasks"][0]["id"]
        last = cl.call("GET", f"/api/tasks?project={pid}&page={a.n}&page_size=1")["tasks"][0]["id"]
        if last - first + 1 != a.n:
            raise RuntimeError(f"task ids {first}..{last} are not {a.n} consecutive ids")
        sid = create_storage(cl, pid, os.path.join(root, "api-load"), "api load")
        twin = None
        if a.sync_loop:
            log(f"seeding a twin project of {a.n} annotated tasks for the syncs after the first")
            twin, _ = seed(cl, a.n, 5000, "api load twin")
        if a.after_seed_sql:
            if not a.database_url:
                raise RuntimeError("--after-seed-sql needs --database-url (PostgreSQL)")
            subprocess.run(["psql", a.database_url, "-qc", a.after_seed_sql], check=True)
            log(f"ran {a.after_seed_sql}")
        procs = {}
        for name, share, _ in a.plan:
            cmd = oha_cmd(a, token, name, a.rate * share, a.work, pid, first)
            procs[name] = (cmd, open(os.path.join(a.work, f"{name}.log"), "wb"))
        rss_before = read_status(server.pid).get("VmRSS")
        buckets_before = server_buckets(server.port)
        cpu_before, threads_before = cpu_now(server.pid), threads(server.pid)
        log(f"full sync of {a.n} with {a.rate:g} requests/s for {a.seconds:g}s")
        t0 = time.monotonic()
        cl.call("POST", f"/api/storages/export/localfiles/{sid}/sync")
        sync_state, stop = {}, threading.Event()
        watch_client = Client(server.port, token)
        again = None
        if a.sync_loop:
            # The window ends about a.seconds after oha starts, right after this.
            window_end = time.monotonic() + a.seconds

            def again():
                # A new storage's first sync (all N documents), of the twin project, whose storages
                # neither the list nor the saves of the mix touch.
                if time.monotonic() >= window_end:
                    return None
                k = sync_state["syncs"]
                new = create_storage(watch_client, twin, os.path.join(root, f"api-load-{k}"), f"api load {k}")
                watch_client.call("POST", f"/api/storages/export/localfiles/{new}/sync")
                return new
        watcher = threading.Thread(target=watch_sync, args=(watch_client, sid, t0, sync_state, stop, again),
                                   daemon=True)
        watcher.start()
        running = {name: subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
                   for name, (cmd, logf) in procs.items()}
        t_oha = time.monotonic() - t0
        for name, p in running.items():
            if p.wait(a.seconds * 4 + 120) != 0:
                raise RuntimeError(f"oha for {name} exited with {p.returncode}; see {a.work}/{name}.log")
        cpu_window = cores(cpu_before, cpu_now(server.pid))
        thread_groups = busy(threads_before, threads(server.pid))
        buckets_after = server_buckets(server.port)
        watcher.join(1800)
        stop.set()
        if "ended_s" not in sync_state:
            raise RuntimeError("the full sync did not end")
        log(f"sync {sync_state['status']} {sync_state['ended_s']:.2f}s after it was requested")
        # oha's clock starts when it is spawned (~t_oha after the sync request).
        sync_end_in_oha = sync_state["ended_s"] - t_oha
        res = {"machine": info, "db": "postgresql" if a.database_url else "sqlite", "n": a.n, "rate": a.rate,
               "seconds": a.seconds, "connections": a.connections, "page_size": a.page_size,
               "sync": sync_state, "oha_started_s": t_oha, "rss_before_kb": rss_before,
               "rss_after_kb": read_status(server.pid).get("VmRSS"), "cpu_cores": cpu_window,
               "window_s": a.seconds, "threads": thread_groups, "endpoints": {}}
        for name, share, target in a.plan:
            with open(os.path.join(a.work, f"{name}.json")) as f:
                o = json.load(f)
            codes = {int(k): v for k, v in o["statusCodeDistribution"].items()}
            p = o["latencyPercentiles"]
            res["endpoints"][name] = {
                "rate": a.rate * share, "target_p99_ms": target,
                "requests": sum(codes.values()) + sum(o["errorDistribution"].values()),
                "achieved_rate": o["summary"]["requestsPerSec"],
                "p50": p["p50"] * 1000, "p99": p["p99"] * 1000, "max": o["summary"]["slowest"] * 1000,
                "errors": sum(o["errorDistribution"].values()), "error_kinds": o["errorDistribution"],
                "non_2xx": sum(v for k, v in codes.items() if not 200 <= k < 300), "status_codes": codes,
                **split(os.path.join(a.work, f"{name}.db"), sync_end_in_oha),
                "server": server_side(buckets_before, buckets_after, name, target),
            }
            log(f"  {name}: {res['endpoints'][name]}")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    body = report(a, res, info)
    print("\n" + body + "\n")
    if a.doc:
        key = f"api-load-{res['db']}" + ("" if a.shares == "0.4,0.4,0.2" else "-shares-" + a.shares.replace(",", "-"))
        key += "-sync-loop" if a.sync_loop else ""
        write_doc(a.doc, key, body)
        log(f"wrote {a.doc} section {key}")
    met = all(e["p99"] < e["target_p99_ms"] and e["errors"] == 0 and e["non_2xx"] == 0 for e in res["endpoints"].values())
    return 0 if met else 1


def report(a, res, info):
    ms = lambda x: "–" if x is None else f"{x:.1f}"  # noqa: E731
    s = res["sync"]
    end_in_window = s["ended_s"] - res["oha_started_s"]
    if s.get("syncs", 1) > 1:
        ended = ", ".join(f"{n} {status}" for status, n in s["statuses"].items())
        sync_line = (f"`--sync-loop`: **{s['syncs']} full syncs back to back** ({ended}): the project's storage's "
                     f"first, then, each time one ended, a new storage's first sync of a twin project seeded alike "
                     f"(all {a.n:,} documents each; the mix's list and saves touch the first project only, whose "
                     f"saves are then exported by automatic export); the last ended {s['ended_s']:.1f} s after "
                     f"the first was requested, {end_in_window:.1f} s into the {a.seconds:g} s window.")
    elif end_in_window < a.seconds:
        sync_line = (f"The sync ({s['status']}) ended {s['ended_s']:.1f} s after it was requested, "
                     f"**{end_in_window:.1f} s into the {a.seconds:g} s window**: only the first part of the window "
                     "ran beside it, hence the split below.")
    else:
        sync_line = (f"The sync ({s['status']}) ran for the whole window and ended {s['ended_s']:.1f} s after "
                     "it was requested.")
    c = res["cpu_cores"]
    cpu_line = (f"CPU in the window, in cores used on average: labelport {c['labelport']:.2f}"
                + (f", PostgreSQL {c['postgresql']:.2f}" if res["db"] == "postgresql" else "")
                + f", oha {c['oha']:.2f}; the machine {c['machine']:.2f} of {info['nproc']} busy. labelport's "
                "threads by name, cores used and how long they waited for a core per second of the window: "
                + "; ".join(f"`{name}` ×{g['threads']} {(g['user_s'] + g['system_s']) / res['window_s']:.2f}, "
                            f"{1000 * g['runqueue_s'] / res['window_s']:.0f} ms/s"
                            for name, g in res["threads"].items()
                            if g["user_s"] + g["system_s"] >= 0.01 * res["window_s"]) + ".")
    rows = ["| endpoint | rate asked / achieved (req/s) | requests | p50 | p99 | max | errors | non-2xx "
            "| p99 during sync / after (requests) | server: p99 within; share over the target | target p99 | met? |",
            "|" + "---|" * 12]
    for name, _, _ in a.plan:
        e = res["endpoints"][name]
        d, f = e["during_sync"], e["after_sync"]
        ok = e["p99"] < e["target_p99_ms"] and e["errors"] == 0 and e["non_2xx"] == 0
        sv = e["server"]
        server = ("–" if sv["p99_at_most_ms"] is None else
                  f"≤ {sv['p99_at_most_ms']:g} ms; {100 * sv['over']:.2f} % over {sv['over_ms']:g} ms")
        rows.append(
            f"| {LABELS[name].replace('PAGE_SIZE', str(a.page_size))} | {e['rate']:g} / {e['achieved_rate']:.0f} | {e['requests']} | "
            f"{ms(e['p50'])} ms | {ms(e['p99'])} ms | {ms(e['max'])} ms | {e['errors']} | {e['non_2xx']} | "
            f"{ms(d['p99'])} ms ({d['requests']}) / {ms(f['p99'])} ms ({f['requests']}) | {server} | "
            f"< {e['target_p99_ms']} ms, no errors | {'yes' if ok else '**no**'} |")
    return "\n".join([
        f"### API under load: {sum(a.rate * share for _, share, _ in a.plan):g} requests/s "
        f"({', '.join(f'{name} {a.rate * share:g}' for name, share, _ in a.plan)}) during "
        f"{'back-to-back full syncs' if a.sync_loop else 'a full sync'} of {a.n:,}, "
        f"{res['db']}",
        "",
        f"`bench/run.sh --api-load --n {a.n} --rate {a.rate:g} --seconds {a.seconds:g}"
        f"{'' if a.shares == '0.4,0.4,0.2' else f' --shares {a.shares}'}"
        f"{' --sync-loop' if a.sync_loop else ''}"
        f"{' --postgres' if res['db'] == 'postgresql' else ''}`, {info['date']}, commit {info['commit']}; "
        f"{info['nproc']} cores ({info['cpu']}, load average {info['load']} at the start), "
        f"database on {info['disk']}, storage directory on {info['storage']}. {a.note}".rstrip(),
        "",
        f"oha {a.seconds:g} s per endpoint, `-q` at its share of the rate, `--latency-correction`, "
        f"{a.connections} connections each; tasks pages and annotation tasks drawn at random from the "
        f"project. {sync_line} *Server*: the same requests timed by labelport's own handlers "
        f"(`{LATENCY}`, buckets 1, 2.5, 5, 10, 25 ms …): the bucket holding their 99th percentile and the "
        "share over the target (over 10 ms for a 20 ms target: the bucket below it); the rest of oha's "
        f"latency was spent outside them (in oha, the kernel, or waiting for a core). {cpu_line}",
        "",
        *rows,
    ])


if __name__ == "__main__":
    sys.exit(main())
