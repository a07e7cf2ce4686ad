#!/usr/bin/env python3
"""S3 export benchmark: a labelport full sync of N annotations to an S3 endpoint
against a floor measured in the same run, interleaved.

Endpoints: moto (the emulator the tests use) and, when installed, s3s-fs (a fast
S3 server in Rust: `cargo install s3s-fs@0.14.1 --locked --features binary`).
Floor: bench/s3floor.rs, N unsigned PUTs of the same keys and sizes from as many
threads as labelport has requests in flight (32), over keep-alive connections.

For each endpoint and repeat: floor into a fresh bucket, then a labelport storage on
another fresh bucket, timed from `POST .../sync` to `completed`. Then a re-sync with
nothing changed (`?full=true`), whose requests are counted from moto's request log:
it must do no PUT. Run through bench/run.sh --target s3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the local-files harness: client, seeding, servers)

HOST = "127.0.0.1"
REQUEST_RE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) /([^/ ?]+)')


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def http(method: str, url: str, body: bytes | None = None) -> bytes:
    req = urllib.request.Request(url, data=body if body is not None else (b"" if method == "PUT" else None),
                                 method=method)
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def list_sizes(endpoint: str, bucket: str) -> dict[str, int]:
    out, token = {}, None
    while True:
        url = f"{endpoint}/{bucket}?list-type=2&max-keys=1000"
        if token:
            url += "&continuation-token=" + urllib.request.quote(token, safe="")
        text = http("GET", url).decode()
        for key, size in re.findall(r"<Key>([^<]+)</Key>.*?<Size>(\d+)</Size>", text, re.S):
            out[key] = int(size)
        m = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", text)
        if not m:
            return out
        token = m.group(1)


class Endpoint:
    def __init__(self, name: str, argv: list[str], port: int, log_path: str, counts_requests: bool):
        self.name, self.port, self.log_path, self.counts_requests = name, port, log_path, counts_requests
        self.url = f"http://{HOST}:{port}"
        self.logf = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True)
        bench.wait_http(port, "/", 60, self.proc)

    def new_bucket(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        http("PUT", f"{self.url}/{name}")
        return name

    def log_size(self) -> int:
        self.logf.flush()
        return os.path.getsize(self.log_path)

    def requests_since(self, offset: int, bucket: str) -> dict[str, int]:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        counts: dict[str, int] = {}
        for method, b in REQUEST_RE.findall(text):
            if b == bucket:
                counts[method] = counts.get(method, 0) + 1
        return counts

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.logf.close()


def start_endpoints(a, work) -> list[Endpoint]:
    eps = []
    moto = os.path.join(a.repo, ".venv-emu", "bin", "moto_server")
    if "moto" in a.endpoints:
        port = bench.free_port()
        eps.append(Endpoint("moto", [moto, "-H", HOST, "-p", str(port)], port, os.path.join(work, "moto.log"), True))
    if "s3s-fs" in a.endpoints:
        binary = a.s3s_fs or shutil.which("s3s-fs")
        if not binary or not os.path.exists(binary):
            log("== s3s-fs not installed; skipping it (cargo install s3s-fs@0.14.1 --locked --features binary)")
        else:
            root = os.path.join(a.fast_root, f"s3s-{uuid.uuid4().hex[:6]}")
            os.makedirs(root)
            port = bench.free_port()
            eps.append(Endpoint("s3s-fs", [binary, "--host", HOST, "--port", str(port), root], port,
                                os.path.join(work, "s3s-fs.log"), False))
    return eps


def wait_status(cl, sid, timeout_s):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        s = cl.call("GET", f"/api/storages/export/s3/{sid}")
        if s["status"] in ("completed", "failed", "completed_with_errors"):
            return s
        time.sleep(0.01)
    raise RuntimeError(f"S3 storage {sid} did not finish within {timeout_s}s")


def labelport_sync(cl, pid, ep: Endpoint, bucket: str, timeout_s: float, full: bool = False, sid=None,
                   signed: bool = True):
    if sid is None:
        body = {"project": pid, "bucket": bucket, "s3_endpoint": ep.url, "title": f"bench {bucket}"}
        if signed:
            body.update({"aws_access_key_id": "bench", "aws_secret_access_key": "bench"})
        sid = cl.call("POST", "/api/storages/export/s3", body)["id"]
    t0 = time.monotonic()
    cl.call("POST", f"/api/storages/export/s3/{sid}/sync" + ("?full=true" if full else ""))
    s = wait_status(cl, sid, timeout_s)
    dt = time.monotonic() - t0
    if s["status"] != "completed":
        raise RuntimeError(f"S3 sync ended {s['status']}: {s.get('traceback')}")
    return sid, dt, s


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_floor(a, ep: Endpoint, manifest: str, bucket: str) -> float:
    out = subprocess.run([a.floor, manifest, f"{HOST}:{ep.port}", bucket, str(a.concurrency)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelport", required=True)
    ap.add_argument("--floor", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--endpoints", default="moto,s3s-fs")
    ap.add_argument("--s3s-fs")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--database-url")
    ap.add_argument("--work", required=True)
    ap.add_argument("--fast-root", default="/dev/shm")
    ap.add_argument("--json")
    ap.add_argument("--doc")
    ap.add_argument("--with-label-studio", action="store_true")
    ap.add_argument("--ls-venv")
    ap.add_argument("--ls-n", type=int, default=2000)
    a = ap.parse_args()
    a.endpoints = [e.strip() for e in a.endpoints.split(",") if e.strip()]

    root = tempfile.mkdtemp(prefix="lp-s3-root-", dir=a.work)
    os.environ["SSRF_PROTECTION_ENABLED"] = "false"
    os.environ["LABELPORT_TARGET_CONCURRENCY"] = str(a.concurrency)
    # Storages without keys send unsigned requests; no metadata service to ask here.
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ.pop(var, None)
    server, token = bench.start_labelport(a, a.work, root)
    eps = start_endpoints(a, a.work)
    results = {"n": a.n, "repeats": a.repeats, "concurrency": a.concurrency, "endpoints": {}}
    try:
        cl = bench.Client(server.port, token, timeout=600)
        log(f"== seeding {a.n} annotated tasks")
        pid, _ = bench.seed(cl, a.n, 5000, "s3 bench")
        for ep in eps:
            # moto takes any key pair: signed (as in production) and unsigned (like the
            # floor). s3s-fs runs without keys here, so it takes unsigned requests only.
            modes = [True, False] if ep.counts_requests else [False]
            for signed in modes:
                label = f"{ep.name}, {'SigV4-signed' if signed else 'unsigned'}"
                log(f"== {label}: warm-up sync (also gives the manifest of keys and sizes)")
                warm = ep.new_bucket()
                labelport_sync(cl, pid, ep, warm, 3600, signed=signed)
                sizes = list_sizes(ep.url, warm)
                assert len(sizes) == a.n, f"{len(sizes)} objects, expected {a.n}"
                manifest = os.path.join(a.work, f"manifest-{ep.name}.txt")
                with open(manifest, "w") as f:
                    f.writelines(f"{k} {v}\n" for k, v in sizes.items())
                floor_t, ours_t, requests, resync, cpu = [], [], [], [], []
                for r in range(a.repeats):
                    fb = ep.new_bucket()
                    floor_t.append(run_floor(a, ep, manifest, fb))
                    lb = ep.new_bucket()
                    offset = ep.log_size()
                    cpu0 = cpu_seconds(server.pid)
                    sid, dt, _ = labelport_sync(cl, pid, ep, lb, 3600, signed=signed)
                    cpu.append(cpu_seconds(server.pid) - cpu0)
                    ours_t.append(dt)
                    if ep.counts_requests:
                        requests.append(ep.requests_since(offset, lb))
                        offset = ep.log_size()
                        _, rdt, st = labelport_sync(cl, pid, ep, lb, 3600, full=True, sid=sid)
                        time.sleep(0.5)
                        resync.append({"seconds": rdt, "requests": ep.requests_since(offset, lb),
                                       "files_written": st["meta"].get("files_written")})
                    log(f"   repeat {r + 1}: floor {floor_t[-1]:.2f} s, labelport {dt:.2f} s "
                        f"({a.n / dt:.0f} objects/s), ratio {dt / floor_t[-1]:.2f}")
                results["endpoints"][label] = {
                    "endpoint": ep.name, "floor_s": floor_t, "labelport_s": ours_t,
                    "ratio_median": bench.med([o / f for o, f in zip(ours_t, floor_t)]),
                    "labelport_objects_per_s": a.n / bench.med(ours_t),
                    "floor_objects_per_s": a.n / bench.med(floor_t),
                    "requests": requests, "resync": resync, "labelport_cpu_s": cpu,
                }
        if a.with_label_studio:
            server.stop()
            results["label_studio"] = label_studio_run(a, root, [e for e in eps if e.counts_requests])
    finally:
        for ep in eps:
            ep.stop()
        server.stop()
    text = table(results)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    if a.doc:
        bench.write_doc(a.doc, "s3", text)


def label_studio_run(a, root, eps) -> dict:
    """Label Studio 1.23.2's S3 export of the same kind of project to the same endpoint."""
    server, token = bench.start_label_studio(a, a.work, root)
    out = {"n": a.ls_n, "endpoints": {}}
    try:
        cl = bench.Client(server.port, token, timeout=7200)
        log(f"== Label Studio: seeding {a.ls_n} annotated tasks")
        pid, _ = bench.seed(cl, a.ls_n, 1000, "s3 bench (Label Studio)")
        for ep in eps:
            bucket = ep.new_bucket()
            sid = cl.call("POST", "/api/storages/export/s3", {
                "project": pid, "bucket": bucket, "s3_endpoint": ep.url, "region_name": "us-east-1",
                "aws_access_key_id": "bench", "aws_secret_access_key": "bench", "title": f"bench {bucket}",
            })["id"]
            offset = ep.log_size()
            t0 = time.monotonic()
            cl.call("POST", f"/api/storages/export/s3/{sid}/sync", timeout=7200)
            end = time.monotonic() + 7200
            while time.monotonic() < end:
                s = cl.call("GET", f"/api/storages/export/s3/{sid}")
                if s["status"] in ("completed", "failed", "completed_with_errors"):
                    break
                time.sleep(0.2)
            dt = time.monotonic() - t0
            found = len(list_sizes(ep.url, bucket))
            requests = ep.requests_since(offset, bucket)
            log(f"   Label Studio to {ep.name}: {dt:.1f} s, {found} objects, status {s['status']}")
            out["endpoints"][ep.name] = {"seconds": dt, "objects": found, "status": s["status"], "requests": requests}
    finally:
        server.stop()
    return out


def table(res) -> str:
    m = bench.machine("/dev/shm")
    lines = [
        f"S3 full sync of {res['n']} annotations, {res['repeats']} interleaved repeats, "
        f"{res['concurrency']} requests in flight (labelport and floor); {m['date']}, commit {m['commit']}, "
        f"{m['nproc']} cores ({m['cpu']}), {m['mem']} memory.",
        "",
        "| endpoint | floor (median) | labelport (median) | labelport / floor | objects/s (labelport) "
        "| labelport CPU per 1,000 objects | requests per annotation | re-sync, nothing changed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in res["endpoints"].items():
        n = res["n"]
        if e["requests"]:
            per = bench.med([sum(r.values()) / n for r in e["requests"]])
            kinds = e["requests"][-1]
            reqs = f"{per:.3f} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})"
            last = e["resync"][-1]
            rs = f"{last['seconds']:.2f} s, {last['requests'].get('PUT', 0)} PUT, " \
                 f"{', '.join(f'{k} {v}' for k, v in sorted(last['requests'].items()) if k != 'PUT')}"
        else:
            reqs, rs = "(not counted)", "(not counted)"
        lines.append(
            f"| {name} | {bench.med(e['floor_s']):.2f} s | {bench.med(e['labelport_s']):.2f} s | "
            f"{e['ratio_median']:.2f}× | {e['labelport_objects_per_s']:.0f} | "
            f"{bench.med(e['labelport_cpu_s']) * 1000 / n:.2f} s | {reqs} | {rs} |"
        )
    ls = res.get("label_studio")
    if ls:
        lines += ["", f"Label Studio 1.23.2, the same endpoint, {ls['n']} annotations (one sync, sequential PUTs):", "",
                  "| endpoint | Label Studio | objects/s | requests per annotation | labelport objects/s | labelport faster by |",
                  "|---|---|---|---|---|---|"]
        for name, e in ls["endpoints"].items():
            ours = res["endpoints"].get(f"{name}, SigV4-signed", {}).get("labelport_objects_per_s") or 0
            theirs = e["objects"] / e["seconds"] if e["seconds"] else 0
            per = sum(e["requests"].values()) / ls["n"] if ls["n"] else 0
            lines.append(f"| {name} | {e['seconds']:.1f} s ({e['status']}) | {theirs:.0f} | {per:.2f} | "
                         f"{ours:.0f} | {ours / theirs if theirs else float('nan'):.0f}× |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
