#!/usr/bin/env python3
"""Load benchmark (issue #9): many clients create, update and delete annotations while a
full sync runs. Started by `bench/run.sh --load`; see docs/BENCHMARKS.md.

Reports request latency p50/p99 per operation, 5xx count, and export lag (from a PATCH's
response to its marker in the exported file, watched with inotify), then checks that
once quiet the directory holds exactly the annotations of the database.
"""
import argparse
import json
import os
import random
import secrets
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Client, Watcher, change_result, log, pct, seed, start_labelport, wait_completed  # noqa: E402


def rnd3(x):
    return None if x is None else round(x, 3)


def client_run(cl, i, clients, ops, tasks, owned, watcher, stats, lock):
    rnd = random.Random(i)
    mine = list(owned[i::clients])
    for n in range(ops):
        roll = rnd.randrange(10)
        marker = f"load-{i}-{n}-{secrets.token_hex(3)}"
        body = {"result": change_result(marker)}
        if roll < 4 or not mine:
            op, method, path, ok = "create", "POST", f"/api/tasks/{rnd.choice(tasks)}/annotations/", (201,)
        elif roll < 8:
            aid = rnd.choice(mine)
            op, method, path, ok = "update", "PATCH", f"/api/annotations/{aid}/", (200,)
            watcher.want(str(aid), marker)
        else:
            aid = mine.pop(rnd.randrange(len(mine)))
            op, method, path, ok, body = "delete", "DELETE", f"/api/annotations/{aid}/", (204,), None
        t0 = time.monotonic()
        try:
            r = cl.call(method, path, body, timeout=120, ok=ok)
            err = None
        except RuntimeError as e:
            r, err = None, str(e)
        t1 = time.monotonic()
        with lock:
            stats["latency"].setdefault(op, []).append(t1 - t0)
            if err:
                stats["errors"].append(err)
                if " -> 5" in err:
                    stats["5xx"] += 1
            elif op == "update":
                stats["sent"][marker] = t1
        if op == "create" and r:
            mine.append(r["id"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--labelport", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--database-url")
    p.add_argument("--n", type=int, default=20000, help="annotations seeded before the sync")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--ops", type=int, default=50, help="operations per client")
    p.add_argument("--json")
    a = p.parse_args()

    root = os.path.join(a.work, "root")
    out = os.path.join(root, "load")
    os.makedirs(out, exist_ok=True)
    server, token = start_labelport(a, a.work, root)
    try:
        cl = Client(server.port, token)
        log(f"seeding {a.n} annotated tasks")
        pid, _ = seed(cl, a.n, 1000, "load")
        tasks, owned, page = [], [], 1
        while True:
            r = cl.call("GET", f"/api/tasks/?project={pid}&page={page}&page_size=1000&fields=all", ok=(200, 404))
            if not r or not r.get("tasks"):
                break
            for t in r["tasks"]:
                tasks.append(t["id"])
                owned.extend(x["id"] for x in t.get("annotations", []))
            page += 1
        sid = cl.call("POST", "/api/storages/export/localfiles",
                      {"project": pid, "path": out, "title": "load", "can_delete_objects": True})["id"]
        watcher = Watcher(out)
        stats = {"latency": {}, "errors": [], "5xx": 0, "sent": {}}
        lock = threading.Lock()
        log(f"full sync of {a.n} with {a.clients} clients x {a.ops} operations")
        t0 = time.monotonic()
        cl.call("POST", f"/api/storages/export/localfiles/{sid}/sync")
        threads = [threading.Thread(target=client_run, daemon=True,
                                    args=(Client(server.port, token), i, a.clients, a.ops, tasks, owned, watcher,
                                          stats, lock)) for i in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(1800)
        load_s = time.monotonic() - t0
        s = wait_completed(cl, sid, 1800, poll=0.05)
        sync_s = time.monotonic() - t0
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if cl.call("GET", f"/api/storages/export/localfiles/{sid}/lag")["pending_changes"] == 0:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        watcher.close()
        lags = [max(0.0, watcher.seen[m] - t) for m, t in stats["sent"].items() if m in watcher.seen]
        # Once quiet, the directory holds exactly the database's annotations.
        in_db, page = set(), 1
        while True:
            r = cl.call("GET", f"/api/tasks/?project={pid}&page={page}&page_size=1000&fields=all", ok=(200, 404))
            if not r or not r.get("tasks"):
                break
            for t in r["tasks"]:
                in_db.update(str(x["id"]) for x in t.get("annotations", []))
            page += 1
        on_disk = {e.name for e in os.scandir(out) if not e.name.startswith(".")}
        result = {
            "clients": a.clients, "ops_per_client": a.ops, "seeded": a.n, "sync_status": s["status"],
            "load_seconds": round(load_s, 2), "sync_seconds": round(sync_s, 2),
            "requests": sum(len(v) for v in stats["latency"].values()), "errors": len(stats["errors"]),
            "5xx": stats["5xx"],
            "latency_ms": {op: {"p50": round(pct(v, 50) * 1000, 1), "p99": round(pct(v, 99) * 1000, 1), "n": len(v)}
                           for op, v in sorted(stats["latency"].items())},
            "export_lag_s": {"p50": rnd3(pct(lags, 50)), "p99": rnd3(pct(lags, 99)), "max": rnd3(max(lags, default=None)),
                             "measured": len(lags), "updates": len(stats["sent"])},
            "storage_equals_database": on_disk == in_db,
            "missing": len(in_db - on_disk), "extra": len(on_disk - in_db),
        }
        print(json.dumps(result, indent=2))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(result, f, indent=2)
        for e in stats["errors"][:5]:
            log("error:", e)
        return 0 if result["5xx"] == 0 and result["storage_equals_database"] else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
