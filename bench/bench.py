#!/usr/bin/env python3
"""labelport benchmark client (stdlib only). Started by bench/run.sh; see docs/BENCHMARKS.md.

Runs the same workload against labelport and, optionally, Label Studio 1.23.2:
seed N tasks with one annotation each through the import API, then measure
full sync (interleaved with the floor program), incremental re-sync after 1 and
100 changes, auto-export lag at a steady save rate, and the server's peak RSS
during the full sync. Everything talks to 127.0.0.1 only; every loop is bounded.
"""
import argparse
import ctypes
import ctypes.util
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
LOG = print


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- HTTP
class Client:
    """A tiny JSON client; one persistent connection per thread, reconnect once on failure."""

    def __init__(self, port, token, timeout=60):
        self.port, self.token, self.timeout = port, token, timeout
        self.local = threading.local()

    def _conn(self, timeout):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
            self.local.conn = c
        c.timeout = timeout
        if c.sock is not None:
            c.sock.settimeout(timeout)
        return c

    def call(self, method, path, body=None, timeout=None, ok=(200, 201, 204)):
        timeout = timeout or self.timeout
        # bytes: a body encoded beforehand (so that a timed call does not include the encoding).
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        last = None
        for attempt in range(2):
            c = self._conn(timeout)
            try:
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                raw = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                    self.local.conn = None
                if r.status not in ok:
                    raise RuntimeError(f"{method} {path} -> {r.status}: {raw[:500]!r}")
                return json.loads(raw) if raw.strip() else None
            except (http.client.HTTPException, ConnectionError, socket.timeout, OSError) as e:
                last = e
                c.close()
                self.local.conn = None
                if isinstance(e, socket.timeout):
                    break
        raise RuntimeError(f"{method} {path} failed: {last!r}")


def wait_http(port, path, deadline_s, proc=None):
    end = time.time() + deadline_s
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} during start")
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=2)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status < 500:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server on port {port} not healthy after {deadline_s}s")


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


# --------------------------------------------------------------------------- CPU
def cpu_seconds(pid):
    """User + system CPU time of the process (all threads) so far; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(name):
    """CPU time so far of every live process called `name` (e.g. all of PostgreSQL's)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != name:
                        continue
            except OSError:
                continue
            total += cpu_seconds(entry)
    return total


def machine_busy_seconds():
    """CPU time the machine's cores spent on anything but idling and waiting for I/O, so far."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- memory
def read_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "VmHWM", "RssAnon", "RssFile")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0])  # kB
    except OSError:
        pass
    return out


def reset_hwm(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    def __init__(self, pid, interval=0.02):
        self.pid, self.interval, self.peak, self.peak_anon, self.peak_file = pid, interval, 0, 0, 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            st = read_status(self.pid)
            self.peak = max(self.peak, st.get("VmRSS", 0))
            self.peak_anon = max(self.peak_anon, st.get("RssAnon", 0))
            self.peak_file = max(self.peak_file, st.get("RssFile", 0))
            time.sleep(self.interval)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.t.join(5)


# --------------------------------------------------------------------------- inotify
# IN_CREATE: a file linked in complete (O_TMPFILE + linkat) makes no other event.
IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100


class Watcher:
    """Records, per file name, when a renamed/written file first contains a marker."""

    def __init__(self, directory):
        self.dir = directory
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, directory.encode(), IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self.expect = {}  # name -> marker
        self.seen = {}  # marker -> time
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def want(self, name, marker):
        with self.lock:
            self.expect[name] = marker

    def check(self, name, now):
        with self.lock:
            marker = self.expect.get(name)
        if marker is None or marker in self.seen:
            return
        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                if marker.encode() in f.read():
                    self.seen[marker] = now
        except OSError:
            pass

    def run(self):
        import select

        buf = b""
        while not self.stop.is_set():
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if not r:
                continue
            try:
                buf += os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            now = time.monotonic()
            while len(buf) >= 16:
                _wd, _mask, _cookie, ln = struct.unpack("iIII", buf[:16])
                if len(buf) < 16 + ln:
                    break
                name = buf[16 : 16 + ln].rstrip(b"\0").decode()
                buf = buf[16 + ln :]
                if not name.startswith("."):
                    self.check(name, now)

    def close(self):
        self.stop.set()
        self.t.join(5)
        os.close(self.fd)


# --------------------------------------------------------------------------- seed data
WORDS = (
    "the model labels each sentence with a sentiment and marks the named entities such as people "
    "places organisations products dates and amounts so that reviewers can audit every decision quickly"
).split()


def make_task(i, rnd):
    text = " ".join(rnd.choice(WORDS) for _ in range(14))
    spans = []
    pos = 0
    for k in range(1):
        start = text.find(" ", pos + 10) + 1
        end = text.find(" ", start + 3)
        if start <= 0 or end <= 0:
            break
        spans.append(
            {
                "id": f"r{i}-{k}",
                "from_name": "label",
                "to_name": "text",
                "type": "labels",
                "origin": "manual",
                "value": {"start": start, "end": end, "text": text[start:end], "labels": [rnd.choice(["PER", "ORG", "LOC"])]},
            }
        )
        pos = end
    result = spans + [
        {"id": f"s{i}", "from_name": "sentiment", "to_name": "text", "type": "choices", "origin": "manual",
         "value": {"choices": [rnd.choice(["Positive", "Negative", "Neutral"])]}}
    ]
    return {"data": {"text": text, "source": f"review-{i}"}, "annotations": [{"result": result}]}


def change_result(marker):
    return [{"id": "chg", "from_name": "sentiment", "to_name": "text", "type": "choices", "origin": "manual",
             "value": {"choices": ["Positive"]}, "meta": {"bench": marker}}]


LABEL_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Labels name="label" toName="text"><Label value="PER"/><Label value="ORG"/><Label value="LOC"/></Labels>
  <Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/><Choice value="Neutral"/></Choices>
</View>"""


def seed(cl, n, chunk, title):
    p = cl.call("POST", "/api/projects/", {"title": title, "label_config": LABEL_CONFIG})
    pid = p["id"]
    rnd = random.Random(42)
    t0 = time.time()
    done = 0
    while done < n:
        k = min(chunk, n - done)
        tasks = [make_task(done + j, rnd) for j in range(k)]
        cl.call("POST", f"/api/projects/{pid}/import", tasks, timeout=1800)
        done += k
        if done % (chunk * 10) == 0 or done == n:
            log(f"  seeded {done}/{n} ({done / (time.time() - t0):.0f} tasks/s)")
    return pid, time.time() - t0


def annotation_ids(cl, pid, n, fast_dir=None):
    """Annotation ids of the project: from a full-sync directory when we have one (cheap)."""
    if fast_dir:
        ids = sorted(int(e.name) for e in os.scandir(fast_dir) if e.name.isdigit())
        if ids:
            return ids
    ids, page = [], 1
    while len(ids) < n and page < 100000:
        r = cl.call("GET", f"/api/tasks/?project={pid}&page={page}&page_size=1000&fields=all", ok=(200, 404))
        if not r or not r.get("tasks"):
            break
        for t in r["tasks"]:
            ids.extend(a["id"] for a in t.get("annotations", []))
        page += 1
    return sorted(ids)


# --------------------------------------------------------------------------- measurements
def wait_completed(cl, sid, timeout_s, poll=0.005):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        s = cl.call("GET", f"/api/storages/export/localfiles/{sid}")
        if s["status"] in ("completed", "failed", "completed_with_errors"):
            return s
        time.sleep(poll)
    raise RuntimeError(f"storage {sid} did not complete within {timeout_s}s")


def create_storage(cl, pid, path, title):
    os.makedirs(path, exist_ok=True)
    return cl.call("POST", "/api/storages/export/localfiles", {"project": pid, "path": path, "title": title})["id"]


def sync(cl, sid, timeout_s, poll):
    t0 = time.monotonic()
    s = cl.call("POST", f"/api/storages/export/localfiles/{sid}/sync", timeout=timeout_s)
    if s["status"] not in ("completed", "failed"):
        s = wait_completed(cl, sid, timeout_s, poll)
    dt = time.monotonic() - t0
    if s["status"] != "completed":
        raise RuntimeError(f"sync of storage {sid} ended {s['status']}: {s.get('traceback')}")
    return dt, s


def verify_dir(path, n, sample=200):
    names = [e.name for e in os.scandir(path) if not e.name.startswith(".")]
    if len(names) != n:
        raise RuntimeError(f"{path}: {len(names)} files, expected {n}")
    for name in random.Random(1).sample(names, min(sample, len(names))):
        with open(os.path.join(path, name)) as f:
            d = json.load(f)
        if str(d["id"]) != name or "task" not in d:
            raise RuntimeError(f"{path}/{name}: unexpected document")
    return names


def write_manifest(path, manifest):
    sizes = []
    with open(manifest, "w") as out:
        for e in os.scandir(path):
            if not e.name.startswith("."):
                sz = e.stat().st_size
                sizes.append(sz)
                out.write(f"{e.name} {sz}\n")
    return sizes


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


def run_floor(floor_bin, manifest, path, threads, mode="tmpfile"):
    rmtree(path)
    os.makedirs(path)
    os.sync()
    t0 = time.monotonic()
    out = subprocess.run([floor_bin, manifest, path, str(threads), mode], capture_output=True, text=True, timeout=3600)
    dt = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"floor failed: {out.stderr}")
    return dt, float(out.stdout.strip())


def med(xs):
    return statistics.median(xs) if xs else None


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def lag_test(cl, storage_dir, ids, rate, duration, threads=6):
    """Open-loop saves at `rate`/s over distinct annotations; lag = file in place - response."""
    total = int(rate * duration)
    targets = random.Random(7).sample(ids, min(total, len(ids)))
    total = len(targets)
    w = Watcher(storage_dir)
    resp = {}
    errors = []
    nxt = [0]
    lock = threading.Lock()
    t_start = time.monotonic() + 0.2

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= total:
                return
            when = t_start + i / rate
            d = when - time.monotonic()
            if d > 0:
                time.sleep(d)
            aid = targets[i]
            marker = f"lag-{i}-{secrets.token_hex(4)}"
            w.want(str(aid), marker)
            try:
                cl.call("PATCH", f"/api/annotations/{aid}/", {"result": change_result(marker)}, timeout=30)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
                continue
            resp[marker] = time.monotonic()

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(duration * 10 + 120)
    t_end_send = time.monotonic()
    end = time.monotonic() + 30
    while time.monotonic() < end and len(w.seen) < len(resp):
        time.sleep(0.05)
    w.close()
    lags = [max(0.0, w.seen[m] - t) for m, t in resp.items() if m in w.seen]
    achieved = len(resp) / max(1e-9, (t_end_send - t_start))
    return {
        "saves": len(resp), "errors": len(errors), "missing": len(resp) - len(lags),
        "achieved_rate": achieved, "p50": pct(lags, 50), "p99": pct(lags, 99), "max": max(lags) if lags else None,
    }


def incremental(cl, sid, ids, k, repeats, storage_dir, timeout_s, poll):
    times, writes = [], []
    rnd = random.Random(100 + k)
    for r in range(repeats):
        chosen = rnd.sample(ids, k)
        markers = {}
        for aid in chosen:
            m = f"inc{k}-{r}-{secrets.token_hex(4)}"
            markers[aid] = m
            cl.call("PATCH", f"/api/annotations/{aid}/", {"result": change_result(m)})
        dt, s = sync(cl, sid, timeout_s, poll)
        for aid, m in markers.items():
            with open(os.path.join(storage_dir, str(aid))) as f:
                if m not in f.read():
                    raise RuntimeError(f"incremental sync: {aid} lacks its change")
        times.append(dt)
        writes.append((s.get("meta") or {}).get("files_written"))
    return {"median": med(times), "min": min(times), "max": max(times), "files_written": writes}


# --------------------------------------------------------------------------- servers
class Server:
    def __init__(self, kind, argv, env, port, log_path, cwd=None):
        self.kind, self.port = kind, port
        self.logf = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.logf, stderr=subprocess.STDOUT, cwd=cwd,
                                     start_new_session=True)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.logf.close()


def rss_pid(server):
    """The process whose memory counts: the server itself, or LS's single python child."""
    return server.pid


def start_labelport(a, work, root, token=None):
    token = token or secrets.token_hex(20)
    port = free_port()
    env = dict(os.environ)
    env.update({
        "LABEL_STUDIO_USERNAME": "admin@example.com", "LABEL_STUDIO_USER_TOKEN": token,
        "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": root,
        "SYNC_ON_TARGET_STORAGE_CREATION": "false", "RUST_LOG": env.get("RUST_LOG", "warn"),
    })
    if a.database_url:
        env["DATABASE_URL"] = a.database_url
    else:
        env.pop("DATABASE_URL", None)
    data = os.path.join(work, "lp-data")
    os.makedirs(data, exist_ok=True)
    s = Server("labelport", [a.labelport, "serve", "--host", HOST, "--port", str(port), "--data-dir", data],
               env, port, os.path.join(work, "labelport.log"))
    wait_http(port, "/health", 60, s.proc)
    return s, token


def start_label_studio(a, work, root):
    token = secrets.token_hex(20)
    port = free_port()
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    base = os.path.join(work, "ls-data")
    os.makedirs(base, exist_ok=True)
    env.update({
        "LABEL_STUDIO_USERNAME": "admin@example.com", "LABEL_STUDIO_PASSWORD": "benchpass123",
        "LABEL_STUDIO_USER_TOKEN": token, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": root,
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": root,
        "SYNC_ON_TARGET_STORAGE_CREATION": "false", "LABEL_STUDIO_BASE_DATA_DIR": base,
        "DJANGO_DB": "sqlite", "COLLECT_ANALYTICS": "false", "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "DEBUG": "false", "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    s = Server("label-studio", [os.path.join(a.ls_venv, "bin", "label-studio"), "start", "--no-browser",
                                "--internal-host", HOST, "--port", str(port), "--data-dir", base],
               env, port, os.path.join(work, "label-studio.log"), cwd=work)
    wait_http(port, "/health", 600, s.proc)
    return s, token


# --------------------------------------------------------------------------- workload
def workload(a, kind, server, token, root, n, floor_pairs, repeats, poll, sync_timeout, restart=None):
    cl = Client(server.port, token, timeout=120)
    res = {"kind": kind, "n": n}
    log(f"[{kind}] seeding {n} tasks")
    pid, res["seed_s"] = seed(cl, n, a.chunk, f"bench {kind} {n}")
    res["rss_after_seed_kb"] = read_status(rss_pid(server)).get("VmRSS")
    if restart is not None:
        # Memory held since the import (allocator arenas) is not the sync's: start afresh.
        server = restart()
        cl = Client(server.port, token, timeout=120)
        res["restarted_before_sync"] = True
    res["idle_rss_kb"] = read_status(rss_pid(server)).get("VmRSS")
    full, floors, ratios, peaks = [], [], [], []
    resyncs, resync_ratios = [], []
    sizes = None
    manifest = os.path.join(root, "manifest.txt")
    keep_sid = keep_dir = None
    runs = max(1, floor_pairs)
    for r in range(runs):
        path = os.path.join(root, f"{kind}-full-{r}")
        rmtree(path)
        floor_first = bool(r % 2) and sizes is not None and a.floor and kind == "labelport"
        if floor_first:  # A B B A …: neither side always runs second
            fpath = os.path.join(root, f"floor-{r}")
            fdt, finner = run_floor(a.floor, manifest, fpath, a.floor_threads, a.floor_mode)
            floors.append(fdt)
            log(f"[floor] {fdt:.3f}s (inner {finner:.3f}s)")
        sid = create_storage(cl, pid, path, f"bench full {r}")
        os.sync()
        rp = rss_pid(server)
        reset_hwm(rp)
        perf = None
        if os.environ.get("BENCH_PERF") and r == 0 and kind == "labelport":
            # Profiling aid: sample the server's stacks during the first full sync.
            perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-o", os.environ["BENCH_PERF"], "-p",
                                     str(rp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        with RssSampler(rp) as sampler:
            dt, s = sync(cl, sid, sync_timeout, poll)
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        hwm = read_status(rp).get("VmHWM", 0)
        peaks.append(max(sampler.peak, hwm))
        res.setdefault("peak_anon_kb", []).append(sampler.peak_anon)
        res.setdefault("peak_file_kb", []).append(sampler.peak_file)
        verify_dir(path, n)
        full.append(dt)
        log(f"[{kind}] full sync {r + 1}/{runs}: {dt:.3f}s (meta.duration {s['meta'].get('duration')}), "
            f"peak RSS {peaks[-1] / 1024:.1f} MB (sampled anon {sampler.peak_anon / 1024:.1f} MB, file {sampler.peak_file / 1024:.1f} MB)")
        if sizes is None:
            sizes = write_manifest(path, manifest)
            res["doc_bytes_mean"] = statistics.mean(sizes)
        if a.floor and kind == "labelport":
            if not floor_first:
                fpath = os.path.join(root, f"floor-{r}")
                fdt, finner = run_floor(a.floor, manifest, fpath, a.floor_threads, a.floor_mode)
                floors.append(fdt)
                log(f"[floor] {fdt:.3f}s (inner {finner:.3f}s)")
            ratios.append(dt / floors[-1])
            log(f"[pair {r + 1}] ratio {ratios[-1]:.2f}")
            # Issue 11's second target: every file deleted by hand, then a sync, against
            # the same pair's floor (which writes the same files into a new directory).
            for entry in os.scandir(path):
                os.unlink(entry.path)
            os.sync()
            rdt, _ = sync(cl, sid, sync_timeout, poll)
            verify_dir(path, n)
            resyncs.append(rdt)
            resync_ratios.append(rdt / floors[-1])
            log(f"[{kind}] re-sync after deleting every file {r + 1}/{runs}: {rdt:.3f}s, ratio {resync_ratios[-1]:.2f}")
        # Directories are kept until the end: deleting 100k files right before a timed run
        # slows the next inode allocations (ext4 recently_deleted scans) and would bias the pair.
        if r < runs - 1:
            cl.call("DELETE", f"/api/storages/export/localfiles/{sid}")
        else:
            keep_sid, keep_dir = sid, path
    res["full"] = {"median": med(full), "min": min(full), "max": max(full), "runs": full}
    res["peak_rss_kb"] = max(peaks)
    if floors:
        res["floor"] = {"median": med(floors), "min": min(floors), "max": max(floors), "runs": floors}
        res["ratio"] = {"median": med(ratios), "min": min(ratios), "max": max(ratios), "runs": ratios}
    if resyncs:
        res["resync_after_delete"] = {"median": med(resyncs), "min": min(resyncs), "max": max(resyncs), "runs": resyncs}
        res["resync_ratio"] = {"median": med(resync_ratios), "min": min(resync_ratios), "max": max(resync_ratios),
                               "runs": resync_ratios}
    ids = annotation_ids(cl, pid, n, keep_dir)
    if not a.skip_incremental:
        for k in (0, 1, 100):
            log(f"[{kind}] incremental re-sync after {k} change(s)")
            res[f"inc{k}"] = incremental(cl, keep_sid, ids, k, a.inc_repeats if kind == "labelport" else 1,
                                         keep_dir, sync_timeout, poll)
            log(f"[{kind}]   {res[f'inc{k}']}")
    if not a.skip_lag:
        secs = a.lag_seconds if kind == "labelport" else a.ls_lag_seconds
        log(f"[{kind}] auto-export lag at {a.rate}/s for {secs}s")
        res["lag"] = lag_test(cl, keep_dir, ids, a.rate, secs)
        log(f"[{kind}]   {res['lag']}")
    return res


# --------------------------------------------------------------------------- report
def fmt_s(x):
    if x is None:
        return "–"
    if x < 1:
        return f"{x * 1000:.1f} ms"
    return f"{x:.2f} s"


def rng(d):
    return f"{fmt_s(d['median'])} ({fmt_s(d['min'])}–{fmt_s(d['max'])})"


def table(ours, ls, meta):
    n = ours["n"]
    rows = []
    hdr = ["metric", f"labelport (N={n})", "floor", "ours/floor", f"Label Studio 1.23.2 (N={ls['n']})" if ls else "Label Studio", "LS/ours", "target", "met?"]
    rows.append(hdr)
    fr = ours.get("ratio")
    ls_full = ls["full"]["median"] if ls else None
    ls_rate = ls["n"] / ls_full if ls else None
    our_rate = n / ours["full"]["median"]
    target_ok = lambda c: "yes" if c else "**no**"  # noqa: E731
    rows.append([
        "full sync (median, min–max)", rng(ours["full"]), rng(ours["floor"]) if fr else "–",
        f"{fr['median']:.2f} ({fr['min']:.2f}–{fr['max']:.2f})" if fr else "–",
        rng(ls["full"]) if ls else "–", f"{our_rate / ls_rate:.0f}× per annotation" if ls else "–",
        "≤ 1.25× floor (N=100k)", (target_ok(fr["median"] <= 1.25) + ("" if n >= 100_000 else f" (at N={n})")) if fr else "–",
    ])
    rr = ours.get("resync_after_delete")
    if rr:
        q = ours["resync_ratio"]
        rows.append([
            "re-sync after every file was deleted by hand", rng(rr), rng(ours["floor"]),
            f"{q['median']:.2f} ({q['min']:.2f}–{q['max']:.2f})", "–", "–", "≤ 1.5× floor",
            target_ok(q["median"] <= 1.5) + ("" if n >= 100_000 else f" (at N={n})"),
        ])
    rows.append(["full sync throughput", f"{our_rate:,.0f} ann/s", f"{n / ours['floor']['median']:,.0f} files/s" if fr else "–", "",
                 f"{ls_rate:,.1f} ann/s" if ls else "–", "", "", ""])
    for k, tgt in ((0, None), (1, 0.1), (100, None)):
        o = ours.get(f"inc{k}")
        l_ = ls.get(f"inc{k}") if ls else None
        label = "re-sync with nothing changed" if k == 0 else f"incremental re-sync after {k} change{'s' if k > 1 else ''}"
        rows.append([
            label, rng(o) if o else "–", "", "",
            rng(l_) if l_ else "–", f"{l_['median'] / o['median']:.0f}×" if (o and l_) else "–",
            "< 100 ms (N=100k)" if tgt else "",
            (target_ok(o["median"] < tgt) + ("" if n >= 100_000 else f" (at N={n})")) if (o and tgt) else "",
        ])
    lo, ll = ours.get("lag"), (ls.get("lag") if ls else None)

    def lagcell(x):
        if not x:
            return "–"
        return (f"p50 {fmt_s(x['p50'])}, p99 {fmt_s(x['p99'])}, max {fmt_s(x['max'])} "
                f"({x['saves']} saves at {x['achieved_rate']:.0f}/s; {x['missing']} missing, {x['errors']} errors)")

    rows.append(["auto-export lag (save response → file in place)", lagcell(lo), "", "", lagcell(ll), "",
                 "p99 < 50 ms at 200 saves/s", target_ok(lo["p99"] is not None and lo["p99"] < 0.05 and lo["missing"] == 0) if lo else ""])
    rows.append(["server RSS before the full sync" + (" (restarted after seeding)" if ours.get("restarted_before_sync") else " (after seeding)"),
                 f"{(ours.get('idle_rss_kb') or 0) / 1024:.1f} MB", "", "", f"{(ls.get('idle_rss_kb') or 0) / 1024:.1f} MB" if ls else "–", "", "", ""])
    rows.append(["server peak RSS during full sync", f"{ours['peak_rss_kb'] / 1024:.1f} MB", "", "",
                 f"{ls['peak_rss_kb'] / 1024:.1f} MB" if ls else "–", "", "< 150 MB (N=1M)",
                 target_ok(ours["peak_rss_kb"] < 150 * 1024) + ("" if n >= 1_000_000 else f" (at N={n})")])
    rows.append(["  of which anonymous / file-backed (sampled peaks)",
                 f"{max(ours.get('peak_anon_kb') or [0]) / 1024:.1f} MB / {max(ours.get('peak_file_kb') or [0]) / 1024:.1f} MB",
                 "", "", "", "", "", ""])
    rows.append(["seeding via import (not a target)", fmt_s(ours["seed_s"]), "", "", fmt_s(ls["seed_s"]) if ls else "–", "", "", ""])
    rows.append(["mean exported document", f"{ours.get('doc_bytes_mean', 0):.0f} B", "", "", f"{ls.get('doc_bytes_mean', 0):.0f} B" if ls else "–", "", "~1.5 KB", ""])
    out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows[1:]]
    return "\n".join(out)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


def commit_label():
    """The checkout's commit; with LABELPORT_BIN, said to be the checkout's, not the binary's."""
    label = sh("git rev-parse --short HEAD")
    binary = os.environ.get("LABELPORT_BIN")
    if binary:
        built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(binary))) if os.path.exists(binary) else "?"
        return f"{label} checked out, binary {binary} (built {built}; LABELPORT_BIN, not necessarily from this commit)"
    if sh("git status --porcelain -- src Cargo.toml"):
        label += " (+ uncommitted changes)"
    return label


def machine(root):
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit_label(),
        "nproc": sh("nproc"),
        "cpu": sh("lscpu | sed -n 's/^Model name:[ ]*//p' | head -1"),
        "mem": sh("free -h | awk '/^Mem:/{print $2}'"),
        "disk": sh(f"df -hT {root} | tail -1 | awk '{{print $1\" (\"$2\", \"$3\" total)\"}}'"),
        "kernel": sh("uname -r"),
        # 1/5/15-minute load average when the run started: a shared machine's other work shows here.
        "load": sh("cut -d' ' -f1-3 /proc/loadavg"),
    }


def doc_markers(section_key):
    """The comments that delimit a generated section of the doc."""
    return f"<!-- bench:{section_key}:begin -->", f"<!-- bench:{section_key}:end -->"


def doc_section(path, section_key):
    """The current body of a generated section of the doc ("" when there is none)."""
    begin, end = doc_markers(section_key)
    text = open(path).read() if os.path.exists(path) else ""
    if begin not in text or end not in text:
        return ""
    return text.split(begin, 1)[1].split(end, 1)[0]


def write_doc(path, section_key, body):
    begin, end = doc_markers(section_key)
    block = f"{begin}\n{body}\n{end}"
    text = open(path).read() if os.path.exists(path) else ""
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        text = pre + block + post
    else:
        marker = "<!-- bench:results -->"
        if marker in text:
            text = text.replace(marker, marker + "\n\n" + block, 1)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelport", required=True)
    ap.add_argument("--floor")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--floor-threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--floor-mode", choices=["tmpfile", "rename"], default="tmpfile",
                    help="tmpfile: O_TMPFILE + link, as labelport writes new files; rename: temp file + rename")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--inc-repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--lag-seconds", type=float, default=15)
    ap.add_argument("--database-url")
    ap.add_argument("--with-label-studio", action="store_true")
    ap.add_argument("--ls-only", action="store_true", help="skip labelport (debugging the LS side)")
    ap.add_argument("--ls-venv")
    ap.add_argument("--ls-n", type=int, default=10000)
    ap.add_argument("--ls-repeats", type=int, default=1)
    ap.add_argument("--ls-lag-seconds", type=float, default=5)
    ap.add_argument("--skip-incremental", action="store_true")
    ap.add_argument("--restart-before-sync", action="store_true",
                    help="restart labelport between seeding and the syncs (memory measurement without the import's heap)")
    ap.add_argument("--skip-lag", action="store_true")
    ap.add_argument("--work", required=True)
    ap.add_argument("--doc")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.no_floor:
        a.floor = None

    root = os.path.join(a.work, "root")
    os.makedirs(root, exist_ok=True)
    info = machine(root)
    servers = []

    def cleanup(*_):
        for s in servers:
            s.stop()
        sys.exit(130)

    signal.signal(signal.SIGTERM, cleanup)
    ours = ls = None
    try:
        if not a.ls_only:
            s, token = start_labelport(a, a.work, root)
            servers.append(s)
            def restart():
                old = servers.pop()
                old.stop()
                new, _ = start_labelport(a, a.work, root, token)
                servers.append(new)
                return new

            ours = workload(a, "labelport", s, token, root, a.n, a.repeats, a.repeats, 0.005, 7200,
                            restart if a.restart_before_sync else None)
            s = servers.pop()
            s.stop()
            for e in os.scandir(root):
                if e.is_dir():
                    rmtree(e.path)
        if a.with_label_studio:
            log("starting Label Studio 1.23.2")
            s, token = start_label_studio(a, a.work, root)
            servers.append(s)
            ls = workload(a, "label-studio", s, token, root, a.ls_n, a.ls_repeats, 1, 0.2, 7200)
            s.stop()
            servers.remove(s)
    finally:
        for s in servers:
            s.stop()
    results = {"machine": info, "db": "postgresql" if a.database_url else "sqlite", "labelport": ours, "label_studio": ls,
               "floor_threads": a.floor_threads, "rate": a.rate, "lag_seconds": a.lag_seconds}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    if ours is None:
        print(json.dumps(ls, indent=2))
        return
    tbl = table(ours, ls, info)
    db = results["db"]
    # Runs on a real disk get a title and a section of their own beside the tmpfs runs of the same N.
    on_disk = not info["disk"].startswith("tmpfs")
    title = (f"N={ours['n']:,}, {db}" + (f", with Label Studio at N={ls['n']:,}" if ls else "")
             + (", temp+rename floor" if a.floor and a.floor_mode == "rename" else "")
             + (f", on {info['disk'].split(' ')[0]}" if on_disk else ""))
    body = "\n".join([
        f"### {title}",
        "",
        f"{info['date']}, commit {info['commit']}; {info['nproc']} cores ({info['cpu']}), {info['mem']} RAM, "
        f"disk {info['disk']}, kernel {info['kernel']}. Full sync: {a.repeats} interleaved labelport/floor pairs "
        f"(fresh storage and directory each)" + (f", floor with {a.floor_threads} threads, {a.floor_mode} mode" if a.floor else ", no floor")
        + ("; server restarted after seeding" if a.restart_before_sync else "")
        + ("" if a.skip_incremental else f"; incremental: {a.inc_repeats} runs each")
        + ("" if a.skip_lag else f"; lag: {a.rate:.0f} saves/s for {a.lag_seconds:.0f} s") + ".",
        "",
        tbl,
    ])
    print("\n" + body + "\n")
    if a.doc:
        key = (f"n{ours['n']}-{db}" + ("-ls" if ls else "") + ("-floor-rename" if a.floor and a.floor_mode == "rename" else "")
               + ("-disk" if on_disk else ""))
        write_doc(a.doc, key, body)
        log(f"wrote {a.doc} section {key}")


if __name__ == "__main__":
    main()
