#!/usr/bin/env python3
"""Import benchmark (issue #11): `POST /api/projects/{id}/import` of N tasks, each with one
annotation, against a floor. Started by `bench/run.sh --import`; see docs/BENCHMARKS.md.

Each labelport/floor pair runs on fresh databases that labelport created and migrated (its
server is started on an empty data dir, a project is created through the API, and, for
the floor, the server is stopped). labelport: one import request with all N tasks (the
body is encoded before the clock starts), timed from sending it to its response. Floor:
the same rows inserted with one multi-row INSERT per batch in one transaction, by
bench/importfloor.rs (SQLite) or psql COPY (PostgreSQL). Pairs alternate which side runs
first; the median of the pairwise ratios is reported with its min and max.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import LABEL_CONFIG, Client, fmt_s, log, machine, make_task, med, start_labelport, write_doc  # noqa: E402

PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
# Label Studio 1.23.2 importing 5,000 such tasks, measured on this machine (issue #11).
LS_TASKS, LS_SECONDS = 5000, 15.3


def psql(sql, db="postgres"):
    subprocess.run(PSQL + ["-d", db, "-c", sql], check=True, capture_output=True, timeout=300)


class FreshDb:
    """A fresh labelport database (SQLite data dir or PostgreSQL database), with a server on it."""

    def __init__(self, a, work, tag):
        self.a, self.work = a, work
        self.data = os.path.join(work, "lp-data")
        shutil.rmtree(self.data, ignore_errors=True)
        self.pg = None
        if a.postgres:
            self.pg = f"labelport_import_{os.getpid()}_{tag}"
            psql(f"DROP DATABASE IF EXISTS {self.pg}")
            psql(f"CREATE DATABASE {self.pg}")
        url = f"postgres://postgres@127.0.0.1:5432/{self.pg}" if self.pg else None
        self.server, self.token = start_labelport(types.SimpleNamespace(labelport=a.labelport, database_url=url),
                                                  work, work)
        self.client = Client(self.server.port, self.token, timeout=1800)
        self.project = self.client.call("POST", "/api/projects/", {"title": "import", "label_config": LABEL_CONFIG})["id"]
        self.user = self.client.call("GET", "/api/current-user/whoami")["id"]

    def stop(self):
        self.server.stop()

    def drop(self):
        if self.pg:
            psql(f"DROP DATABASE IF EXISTS {self.pg}")


def labelport_run(a, work, body, n, tag):
    db = FreshDb(a, work, tag)
    try:
        t0 = time.monotonic()
        r = db.client.call("POST", f"/api/projects/{db.project}/import", body, timeout=1800)
        dt = time.monotonic() - t0
        if r["task_count"] != n or r["annotation_count"] != n:
            raise RuntimeError(f"import summary {r}, expected {n} tasks and annotations")
        return dt
    finally:
        db.stop()
        db.drop()


def floor_run(a, work, rows, n, tag):
    db = FreshDb(a, work, tag)
    db.stop()
    try:
        if db.pg:
            copy_path = os.path.join(work, "rows.copy.sql")
            write_copy(rows, copy_path, db.project, db.user)
            t0 = time.monotonic()
            subprocess.run(PSQL + ["-d", db.pg, "-1", "-f", copy_path], check=True, capture_output=True, timeout=3600)
            dt = time.monotonic() - t0
            out = subprocess.run(PSQL + ["-d", db.pg, "-At", "-c", "SELECT (SELECT count(*) FROM tasks) || ' ' || "
                                         "(SELECT count(*) FROM annotations) || ' ' || (SELECT count(*) FROM annotation_changes)"],
                                 check=True, capture_output=True, text=True, timeout=60).stdout.split()
        else:
            path = os.path.join(db.data, "labelport.db")
            rows_path = os.path.join(work, "rows.tsv")
            if not os.path.exists(rows_path):
                write_rows(rows, rows_path)
            out = subprocess.run([a.floor, path, rows_path, str(db.project), str(db.user), str(a.batch)],
                                 check=True, capture_output=True, text=True, timeout=3600)
            dt = float(out.stdout.strip())
            import sqlite3

            c = sqlite3.connect(path)
            out = [c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                   for t in ("tasks", "annotations", "annotation_changes")]
            c.close()
        if [int(x) for x in out] != [n, n, n]:
            raise RuntimeError(f"floor stored {out} rows, expected {n} of each")
        return dt
    finally:
        db.drop()


def compact_rows(tasks):
    """Each task's data and result as the compact JSON text labelport stores."""
    compact = lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False)  # noqa: E731
    return [(compact(t["data"]), compact(t["annotations"][0]["result"])) for t in tasks]


def write_rows(rows, path):
    """bench/importfloor.rs's input: data, a tab, result; one task a line."""
    with open(path, "w") as f:
        for data, result in rows:
            f.write(f"{data}\t{result}\n")


def write_copy(rows, path, project, user):
    """psql input: the rows as `COPY … FROM STDIN` (text format), with a fresh database's ids."""
    esc = lambda s: s.replace("\\", "\\\\")  # noqa: E731
    now = int(time.time() * 1e6)
    with open(path, "w") as f:
        f.write(f"UPDATE projects SET next_inner_id = next_inner_id + {len(rows)} WHERE id = {project};\n")
        f.write("COPY tasks (id, project_id, data, meta, inner_id, is_labeled, total_annotations, cancelled_annotations, "
                "total_predictions, created_at, updated_at) FROM STDIN;\n")
        for i, (data, _) in enumerate(rows, 1):
            f.write(f"{i}\t{project}\t{esc(data)}\t{{}}\t{i}\t1\t1\t0\t0\t{now}\t{now}\n")
        f.write("\\.\n")
        f.write("COPY annotations (id, task_id, project_id, result, was_cancelled, ground_truth, completed_by, updated_by, "
                "last_action, bulk_created, created_at, updated_at) FROM STDIN;\n")
        for i, (_, result) in enumerate(rows, 1):
            f.write(f"{i}\t{i}\t{project}\t{esc(result)}\t0\t0\t{user}\t{user}\timported\t1\t{now}\t{now}\n")
        f.write("\\.\n")
        f.write("COPY annotation_changes (project_id, task_id, annotation_id, op, created_at) FROM STDIN;\n")
        for i in range(1, len(rows) + 1):
            f.write(f"{project}\t{i}\t{i}\tupsert\t{now}\n")
        f.write("\\.\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelport", required=True)
    ap.add_argument("--floor", help="bench/importfloor.rs, built (SQLite)")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--repeats", type=int, default=3, help="labelport/floor pairs")
    ap.add_argument("--batch", type=int, default=500, help="rows per INSERT of the floor")
    ap.add_argument("--postgres", action="store_true")
    ap.add_argument("--work", required=True)
    ap.add_argument("--doc")
    ap.add_argument("--json")
    ap.add_argument("--note", default="", help="a sentence for the doc (e.g. how busy the machine was)")
    a = ap.parse_args()
    info = machine(a.work)
    rnd = random.Random(42)
    tasks = [make_task(i, rnd) for i in range(a.n)]
    body = json.dumps(tasks).encode()
    rows = compact_rows(tasks)
    del tasks
    log(f"import body {len(body) / 1e6:.1f} MB for {a.n} tasks")
    ours, floors, ratios = [], [], []
    for r in range(a.repeats):
        order = ("floor", "labelport") if r % 2 else ("labelport", "floor")
        for side in order:
            if side == "labelport":
                ours.append(labelport_run(a, a.work, body, a.n, f"lp{r}"))
                log(f"[labelport] import of {a.n}: {ours[-1]:.3f}s")
            else:
                floors.append(floor_run(a, a.work, rows, a.n, f"fl{r}"))
                log(f"[floor] {floors[-1]:.3f}s")
        ratios.append(ours[-1] / floors[-1])
        log(f"[pair {r + 1}] ratio {ratios[-1]:.2f}")
    db = "postgresql" if a.postgres else "sqlite"
    res = {"machine": info, "db": db, "n": a.n, "body_bytes": len(body), "labelport": ours, "floor": floors,
           "ratios": ratios, "batch": a.batch}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    span = lambda xs: f"{fmt_s(med(xs))} ({fmt_s(min(xs))}–{fmt_s(max(xs))})"  # noqa: E731
    ls_rate, our_rate = LS_TASKS / LS_SECONDS, a.n / med(ours)
    floor_how = ("psql `COPY` of the three tables in one transaction (`psql -1`), timed around psql" if a.postgres else
                 f"bench/importfloor.rs (system libsqlite3 {__import__('sqlite3').sqlite_version}; labelport bundles its "
                 f"own through libsqlite3-sys), one multi-row `INSERT` per {a.batch} rows and table in one "
                 "transaction, timed from opening the database to the commit")
    body_md = "\n".join([
        f"### Import: N={a.n:,}, {db}",
        "",
        f"`bench/run.sh --import --n {a.n}{' --postgres' if a.postgres else ''}`, {info['date']}, commit {info['commit']}; "
        f"{info['nproc']} cores ({info['cpu']}, load average {info['load']} at the start), disk {info['disk']}. {a.note}".rstrip(),
        "",
        f"labelport: one `POST /api/projects/{{id}}/import` of {a.n:,} tasks with one annotation each "
        f"({len(body) / 1e6:.1f} MB of JSON, encoded before the clock starts), timed to the response. "
        f"Floor: the same rows (tasks, annotations, change-feed entries) by {floor_how}. "
        f"{a.repeats} interleaved pairs, each on a fresh database migrated by labelport.",
        "",
        "| metric | labelport | floor | labelport/floor | Label Studio 1.23.2 (issue #11) |",
        "|---|---|---|---|---|",
        f"| import of {a.n:,} tasks (median, min–max) | {span(ours)} | {span(floors)} | "
        f"{med(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | {LS_TASKS:,} in {LS_SECONDS} s |",
        f"| tasks/s | {our_rate:,.0f} | {a.n / med(floors):,.0f} | | {ls_rate:,.0f} (labelport {our_rate / ls_rate:,.0f}× as many) |",
    ])
    print("\n" + body_md + "\n")
    if a.doc:
        write_doc(a.doc, f"import-{db}", body_md)
        log(f"wrote {a.doc} section import-{db}")


if __name__ == "__main__":
    main()
