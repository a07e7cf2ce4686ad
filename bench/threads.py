#!/usr/bin/env python3
"""Where a full sync's wall time goes, per thread: CPU (user, system) and off-CPU time.

    bench/threads.py --labelport target/release/labelport [--n 20000] [--root /dev/shm/x]

Seeds N tasks with one annotation each (as bench.py does), then runs a first full sync into
an empty directory and reads every thread's counters from /proc before and after: user and
system CPU (utime, stime) and the time spent runnable but waiting for a core (schedstat).
Threads are grouped by name (tokio-runtime-worker, sqlx-sqlite-worker, tokio blocking
threads...). The sum of CPU over the wall time says how many cores the sync kept busy: on
2 cores, 2.0 is the ceiling.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared client, seeding and server helpers)

TICK = os.sysconf("SC_CLK_TCK")


def threads(pid):
    """{tid: (name, user s, system s, run-queue wait s)} of a process's live threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                _, waited, _ = f.read().split()
        except FileNotFoundError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (name, int(fields[11]) / TICK, int(fields[12]) / TICK, int(waited) / 1e9)
    return out


def busy(before, after):
    """Per thread-name totals of what happened between two readings."""
    groups = {}
    for tid, (name, user, system, waited) in after.items():
        b = before.get(tid, (name, 0.0, 0.0, 0.0))
        g = groups.setdefault(name, {"threads": 0, "user_s": 0.0, "system_s": 0.0, "runqueue_s": 0.0})
        d = (user - b[1], system - b[2], waited - b[3])
        if sum(d) <= 0:
            continue
        g["threads"] += 1
        g["user_s"] += d[0]
        g["system_s"] += d[1]
        g["runqueue_s"] += d[2]
    return {k: {x: round(y, 3) if isinstance(y, float) else y for x, y in v.items()}
            for k, v in sorted(groups.items()) if v["threads"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelport", required=True)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--root", help="document root (default: a temp dir under /dev/shm)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--database-url")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lp-threads-", dir="/dev/shm" if a.root is None else None)
    root = a.root or os.path.join(work, "root")
    os.makedirs(root, exist_ok=True)
    server, token = bench.start_labelport(a, work, root)
    try:
        cl = bench.Client(server.port, token, timeout=600)
        pid, _ = bench.seed(cl, a.n, 5000, "threads")
        runs = []
        for r in range(a.repeats):
            directory = os.path.join(root, f"out{r}")
            sid = bench.create_storage(cl, pid, directory, f"threads {r}")
            t0 = threads(server.pid)
            w0 = time.monotonic()
            dt, _ = bench.sync(cl, sid, 600, 0.005)
            wall = time.monotonic() - w0
            groups = busy(t0, threads(server.pid))
            cpu = sum(g["user_s"] + g["system_s"] for g in groups.values())
            runs.append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "cores_busy": round(cpu / wall, 2),
                         "threads": groups})
            bench.log(f"sync {r}: {wall:.3f} s wall, {cpu:.3f} s CPU ({cpu / wall:.2f} cores)")
            for name, g in groups.items():
                bench.log(f"    {name:24} x{g['threads']:<3} user {g['user_s']:.3f}  sys {g['system_s']:.3f}"
                          f"  waiting for a core {g['runqueue_s']:.3f}")
            bench.verify_dir(directory, a.n)
            cl.call("DELETE", f"/api/storages/export/localfiles/{sid}")
            shutil.rmtree(directory)
        print(json.dumps({"n": a.n, "runs": runs}, indent=2))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
