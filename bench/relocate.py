#!/usr/bin/env python3
"""How long saves wait while a storage with many links changes location or is deleted.

    bench/relocate.py --labelport target/release/labelport [--n 300000] [--delete-only]

Seeds N annotated tasks (SQLite, data dir on /dev/shm), fully syncs one local-files
storage (N links), then, while a client saves annotations back to back, changes the
storage's path twice and deletes it (or, with --delete-only, deletes it right after the
sync, links and all). Prints each request's time and the saves made meanwhile: count,
longest and median. A request that holds SQLite's write lock shows as a long save.
"""
import argparse
import os
import shutil
import statistics
import sys
import threading
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelport", required=True)
    ap.add_argument("--n", type=int, default=300000)
    ap.add_argument("--delete-only", action="store_true")
    a = ap.parse_args()
    root = "/dev/shm/labelport-relocate"
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root + "/work")
    server, token = bench.start_labelport(types.SimpleNamespace(labelport=a.labelport, database_url=None),
                                          root + "/work", root)
    try:
        cl = bench.Client(server.port, token, timeout=600)
        pid, _ = bench.seed(cl, a.n, 5000, "relocate")
        sid = bench.create_storage(cl, pid, root + "/a", "relocate")
        bench.sync(cl, sid, 600, 0.05)
        ids = bench.annotation_ids(cl, pid, a.n, root + "/a")
        plan = [("DELETE", None)] if a.delete_only else [("PATCH", "b"), ("PATCH", "c"), ("DELETE", None)]
        for verb, dest in plan:
            latencies, stop = [], threading.Event()

            def saver():
                c = bench.Client(server.port, token, timeout=60)
                i = 0
                while not stop.is_set():
                    t = time.monotonic()
                    c.call("PATCH", f"/api/annotations/{ids[i % len(ids)]}/", {"result": bench.change_result("x")})
                    latencies.append((time.monotonic() - t) * 1000)
                    i += 1

            thread = threading.Thread(target=saver)
            thread.start()
            time.sleep(0.5)
            before = len(latencies)
            t = time.monotonic()
            if verb == "PATCH":
                os.makedirs(f"{root}/{dest}", exist_ok=True)
                cl.call("PATCH", f"/api/storages/export/localfiles/{sid}", {"path": f"{root}/{dest}"})
            else:
                cl.call("DELETE", f"/api/storages/export/localfiles/{sid}", ok=(204,))
            took = (time.monotonic() - t) * 1000
            time.sleep(0.3)
            stop.set()
            thread.join()
            during = latencies[before:]
            print(f"{verb} {dest or ''}: request {took:.0f} ms; saves meanwhile: {len(during)}, "
                  f"longest {max(during):.0f} ms, median {statistics.median(during):.1f} ms")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
