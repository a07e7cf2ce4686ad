#!/usr/bin/env python3
"""Auto-export lag across processes on one PostgreSQL database (issue #9).

Starts an API-only `labelport serve` (LABELPORT_RUN_WORKER=false) and a separate
`labelport worker` on a fresh PostgreSQL database, seeds a project, completes a first
full sync, then saves annotations through the API process at a steady rate: each
save is exported by the *other* process. Lag = the file holding the change is in
place (inotify) - the save's response. Run once with LISTEN/NOTIFY (the default) and
once with polling only (LABELPORT_PG_LISTEN=false) for comparison.

    python3 bench/multiproc.py --labelport target/release/labelport [--n 2000] [--rate 100]
        [--seconds 20] [--postgres postgres://postgres@127.0.0.1:5432] [--doc docs/BENCHMARKS.md]

Reuses bench/bench.py (client, inotify watcher, lag measurement). Stdlib and `psql` only.
"""
import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def psql(admin_url, sql):
    subprocess.run(["psql", f"{admin_url}/postgres", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                   capture_output=True)


def start(a, kind, work, root, url, token, listen):
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": url, "LABEL_STUDIO_USERNAME": "admin@example.com", "LABEL_STUDIO_USER_TOKEN": token,
        "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": root,
        "SYNC_ON_TARGET_STORAGE_CREATION": "false", "RUST_LOG": env.get("RUST_LOG", "warn"),
        "LABELPORT_PG_LISTEN": "true" if listen else "false", "HOSTNAME": kind,
    })
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    port = bench.free_port()
    if kind == "api":
        env["LABELPORT_RUN_WORKER"] = "false"
        argv = [a.labelport, "serve", "--host", bench.HOST, "--port", str(port), "--data-dir", data]
    else:
        argv = [a.labelport, "worker", "--data-dir", data]
    s = bench.Server(kind, argv, env, port, os.path.join(work, f"{kind}.log"))
    if kind == "api":
        bench.wait_http(port, "/health", 60, s.proc)
    return s


def run(a, listen):
    work = tempfile.mkdtemp(prefix="labelport-multiproc.")
    root = os.path.join(work, "root")
    os.makedirs(root)
    db = f"labelport_bench_{secrets.token_hex(4)}"
    psql(a.postgres, f"CREATE DATABASE {db}")
    url, token, servers = f"{a.postgres}/{db}", secrets.token_hex(20), []
    try:
        # The API process first: it runs the migrations and creates the key the worker shares.
        servers.append(start(a, "api", work, root, url, token, listen))
        servers.append(start(a, "worker", work, root, url, token, listen))
        cl = bench.Client(servers[0].port, token, timeout=120)
        pid, _ = bench.seed(cl, a.n, 1000, "multiproc")
        out = os.path.join(root, "out")
        sid = bench.create_storage(cl, pid, out, "multiproc")
        bench.sync(cl, sid, 600, 0.01)
        ids = bench.annotation_ids(cl, pid, a.n, fast_dir=out)
        mode = "LISTEN/NOTIFY" if listen else "polling only (LABELPORT_POLL_MS=200)"
        bench.log(f"[{mode}] lag at {a.rate}/s for {a.seconds}s, saves to the API process, export by the worker")
        res = bench.lag_test(cl, out, ids, a.rate, a.seconds)
        bench.log(f"[{mode}]   {res}")
        res["mode"] = mode
        return res
    finally:
        for s in servers:
            s.stop()
        psql(a.postgres, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelport", required=True)
    ap.add_argument("--postgres", default=os.environ.get("LABELPORT_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--doc")
    a = ap.parse_args()
    info = bench.machine(tempfile.gettempdir())
    profile = os.path.basename(os.path.dirname(os.path.abspath(a.labelport)))  # target/<profile>/labelport
    rows = [run(a, True), run(a, False)]
    ms = lambda x: "–" if x is None else f"{x * 1000:.1f} ms"  # noqa: E731
    lines = [
        "### Auto-export lag across processes, postgresql",
        "",
        f"{info['date']}, commit {info['commit']}; {info['nproc']} cores ({info['cpu']}), {info['mem']} RAM, "
        f"kernel {info['kernel']}; {profile} build. `bench/multiproc.py --n {a.n} --rate {a.rate:.0f} --seconds {a.seconds:.0f}`: "
        "an API-only `serve` and a `worker` on one fresh database; saves go to the API process, the worker "
        "writes the files. Lag = file in place (inotify) - save response.",
        "",
        "| new work reaches the worker by | saves | p50 | p99 | max | missing |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['saves']} | {ms(r['p50'])} | {ms(r['p99'])} | {ms(r['max'])} | {r['missing']} |")
    body = "\n".join(lines)
    print("\n" + body + "\n")
    if a.doc:
        bench.write_doc(a.doc, "multiproc-postgresql", body)
        bench.log(f"wrote {a.doc} section multiproc-postgresql")


if __name__ == "__main__":
    main()
