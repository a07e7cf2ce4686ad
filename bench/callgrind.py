#!/usr/bin/env python3
"""Instruction counts of a full sync, per annotation, under valgrind's callgrind.

    bench/callgrind.py --labelport target/release/labelport [--n 2000] [--postgres URL]

Seeds N tasks with one annotation each (as bench.py does), then counts the instructions
labelport executes (every thread, kernel excluded) from the `sync` request until the
storage reports `completed`: a first sync into an empty directory, then a re-sync after
every file was deleted by hand. Unlike wall-clock times these counts repeat to a fraction
of a percent on a busy machine, so a change's effect on CPU per annotation is visible
without interleaving. Prints a JSON summary and the top functions (inclusive) of each
sync; keeps the callgrind.out files in --work for callgrind_annotate / kcachegrind.
"""
import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared client, seeding and server helpers)


def control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, stdout=subprocess.DEVNULL)


def total_instructions(out_file):
    """The `totals:` line of one callgrind dump (Ir only)."""
    with open(out_file, "rb") as f:
        for line in f:
            if line.startswith(b"totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def top_functions(out_file, k):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", f"--threshold=90", out_file],
                         check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)", line)
        if m:
            rows.append((float(m.group(2)), m.group(3).strip()[:140]))
    return rows[:k]


def measured_sync(cl, pid, sid, out_dir, label, n):
    """Counts one sync of storage `sid`; returns (instructions, dump file)."""
    before = set(os.listdir(out_dir))
    control(pid, "--zero")
    control(pid, "--instr=on")
    t0 = time.monotonic()
    # Polled once a second: under callgrind a sync takes ~50x longer, and frequent
    # status requests would count as sync work.
    _, status = bench.sync(cl, sid, 3600, 1.0)
    dt = time.monotonic() - t0
    control(pid, "--instr=off")
    control(pid, "--dump=" + label)
    for _ in range(100):
        new = [f for f in set(os.listdir(out_dir)) - before if f.startswith("callgrind.out")]
        if new:
            break
        time.sleep(0.1)
    dump = os.path.join(out_dir, sorted(new)[-1])
    ir = total_instructions(dump)
    bench.log(f"  {label}: {ir / n:,.0f} instructions per annotation ({ir:,} in all, {dt:.1f} s under callgrind)"
              f", {status.get('meta', {}).get('files_written')} written")
    return ir, dump


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelport", required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--database-url")
    ap.add_argument("--work")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="lp-callgrind-")
    os.makedirs(work, exist_ok=True)
    root = os.path.join(work, "root")
    os.makedirs(root, exist_ok=True)
    token = secrets.token_hex(20)
    port = bench.free_port()
    env = dict(os.environ)
    env.update({"LABEL_STUDIO_USERNAME": "admin@example.com", "LABEL_STUDIO_USER_TOKEN": token,
                "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": root,
                "SYNC_ON_TARGET_STORAGE_CREATION": "false", "RUST_LOG": "warn"})
    if a.database_url:
        env["DATABASE_URL"] = a.database_url
    else:
        env.pop("DATABASE_URL", None)
    data = os.path.join(work, "data")
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={work}/callgrind.out.%p",
            a.labelport, "serve", "--host", bench.HOST, "--port", str(port), "--data-dir", data]
    server = bench.Server("labelport", argv, env, port, os.path.join(work, "server.log"))
    try:
        bench.wait_http(port, "/health", 300, server.proc)
        cl = bench.Client(port, token, timeout=600)
        bench.log(f"seeding {a.n} tasks (under valgrind, uninstrumented)")
        pid, _ = bench.seed(cl, a.n, 1000, "callgrind")
        directory = os.path.join(root, "out")
        sid = bench.create_storage(cl, pid, directory, "callgrind")
        first, first_dump = measured_sync(cl, server.pid, sid, work, "first-sync", a.n)
        bench.verify_dir(directory, a.n)
        shutil.rmtree(directory)
        os.makedirs(directory)
        again, again_dump = measured_sync(cl, server.pid, sid, work, "resync-after-delete", a.n)
        bench.verify_dir(directory, a.n)
    finally:
        server.stop()
    summary = {"n": a.n, "database": "postgresql" if a.database_url else "sqlite",
               "first_sync_per_annotation": round(first / a.n),
               "resync_after_delete_per_annotation": round(again / a.n),
               "work": work}
    for label, dump in (("first sync", first_dump), ("re-sync after delete", again_dump)):
        print(f"\n# top functions, inclusive, {label}")
        for pct, name in top_functions(dump, a.top):
            print(f"{pct:6.2f}%  {name}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
