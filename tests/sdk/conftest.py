"""Fixtures for the label-studio-sdk end-to-end suite.

Every test runs against a real `labelport serve` process, once per database backend
(``LABELPORT_SDK_BACKENDS``, default ``sqlite,postgres``) and, for tests that take the
``client`` fixture, once per authentication kind:

* ``token``: ``LabelStudio(api_key=<legacy 40-hex key>)`` -> ``Authorization: Token <key>``
* ``pat``:   ``LabelStudio(api_key=<JWT personal access token>)`` -> the SDK calls
  ``POST /api/token/refresh/`` itself and sends ``Authorization: Bearer <access>``.

One server is started per backend for the whole session; tests create their own projects.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Iterator, Optional

import pytest
from label_studio_sdk import LabelStudio

REPO_ROOT = Path(__file__).resolve().parents[2]

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin12345"

PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432"
PG_HOST = "127.0.0.1"
PG_USER = "postgres"

HEALTH_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 20_000

KNOWN_BACKENDS = ("sqlite", "postgres")
AUTH_KINDS = ("token", "pat")


def _backends() -> list[str]:
    raw = os.environ.get("LABELPORT_SDK_BACKENDS", "sqlite,postgres")
    names = [b.strip() for b in raw.split(",") if b.strip()]
    unknown = [b for b in names if b not in KNOWN_BACKENDS]
    if unknown or not names:
        raise pytest.UsageError(
            f"LABELPORT_SDK_BACKENDS={raw!r}: expected a comma list of {', '.join(KNOWN_BACKENDS)}"
        )
    return names


BACKENDS = _backends()


def pytest_configure(config):
    # Noise from inside label-studio-sdk 2.1.2 (it calls pydantic's deprecated parse_obj).
    config.addinivalue_line("filterwarnings", "ignore:The `parse_obj` method is deprecated:DeprecationWarning")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _read_tail(path: Path, start: int = 0, limit: int = LOG_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return "<no log file>"
    text = _ANSI_RE.sub("", data.decode("utf-8", errors="replace"))
    if len(text) > limit:
        text = f"... [{len(text) - limit} chars cut] ...\n" + text[-limit:]
    return text


def _psql(sql: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("postgres backend selected but the `psql` CLI is not on PATH", pytrace=False)
    res = subprocess.run(
        [psql, "-h", PG_HOST, "-U", PG_USER, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode != 0:
        pytest.fail(
            f"psql failed ({res.returncode}) running {sql!r} against {PG_ADMIN_URL}/postgres:\n"
            f"{res.stderr.strip()}",
            pytrace=False,
        )


def http_json(
    method: str,
    url: str,
    *,
    headers: Optional[dict] = None,
    body: object = None,
    timeout: float = 10.0,
) -> tuple[int, object, dict]:
    """Plain HTTP request outside the SDK. Returns (status, parsed JSON or raw text, headers)."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, rh = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        status, raw, rh = e.code, e.read(), dict(e.headers)
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed: object = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return status, parsed, rh


# ---------------------------------------------------------------------------
# server process
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    backend: str
    base_url: str
    token: str
    data_dir: Path
    files_dir: Path
    stdout_path: Path
    stderr_path: Path
    proc: subprocess.Popen
    database_url: Optional[str] = None
    # The admin's current personal access token (JWT); created lazily, replaced when a test revokes it.
    pat: Optional[str] = None

    def log_offsets(self) -> tuple[int, int]:
        return (_size(self.stdout_path), _size(self.stderr_path))

    def logs_since(self, offsets: tuple[int, int] = (0, 0)) -> str:
        out = _read_tail(self.stdout_path, offsets[0])
        err = _read_tail(self.stderr_path, offsets[1])
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return (
            f"labelport ({self.backend}, {self.base_url}, {state})\n"
            f"--- stdout ({self.stdout_path}) ---\n{out}\n"
            f"--- stderr ({self.stderr_path}) ---\n{err}"
        )


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.fixture(scope="session")
def server_bin() -> Path:
    env_bin = os.environ.get("LABELPORT_BIN")
    path = Path(env_bin) if env_bin else REPO_ROOT / "target" / "debug" / "labelport"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"labelport binary not found at {path} "
            f"({'from LABELPORT_BIN' if env_bin else 'default location'}); "
            "build it first with `cargo build --bin labelport` or set LABELPORT_BIN",
            pytrace=False,
        )
    return path


def _wait_healthy(proc: subprocess.Popen, base_url: str, stderr_path: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    last = "no attempt"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"labelport exited with code {proc.returncode} before becoming healthy.\n"
                f"--- stderr ---\n{_read_tail(stderr_path)}",
                pytrace=False,
            )
        try:
            status, body, _ = http_json("GET", f"{base_url}/health", timeout=2.0)
            if status == 200 and body == {"status": "UP"}:
                return
            last = f"HTTP {status}: {body!r}"
        except (OSError, urllib.error.URLError) as e:
            last = repr(e)
        time.sleep(0.1)
    pytest.fail(
        f"labelport did not answer 200 {{\"status\":\"UP\"}} on {base_url}/health within "
        f"{HEALTH_TIMEOUT_S:.0f}s (last: {last}).\n--- stderr ---\n{_read_tail(stderr_path)}",
        pytrace=False,
    )


def _stop(proc: subprocess.Popen) -> Optional[int]:
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)
        return None


@pytest.fixture(scope="session", params=BACKENDS)
def server(request, server_bin) -> Iterator[Server]:
    yield from start_server(request.param, server_bin)


def start_server(backend: str, server_bin: Path, env_overrides: Optional[dict] = None) -> Iterator[Server]:
    """Runs a `labelport serve` on `backend` (a fresh PostgreSQL database when asked) until
    the generator is closed. `env_overrides` change the server's environment, e.g.
    `{"SSRF_PROTECTION_ENABLED": "true"}` for a server that refuses loopback targets."""
    tmp = Path(tempfile.mkdtemp(prefix=f"labelport-sdk-{backend}-"))
    data_dir = tmp / "data"
    files_dir = tmp / "files"
    data_dir.mkdir()
    files_dir.mkdir()
    token = secrets.token_hex(20)  # 40 hex chars

    env = dict(os.environ)
    env.update(
        {
            "LABEL_STUDIO_USERNAME": ADMIN_EMAIL,
            "LABEL_STUDIO_PASSWORD": ADMIN_PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(files_dir),
            # Debug logs of labelport itself, so tests can check no secret is ever logged.
            "RUST_LOG": "warn,labelport=debug",
            # The storage emulators listen on loopback (scripts/emulators); production
            # keeps Label Studio's default (on).
            "SSRF_PROTECTION_ENABLED": "false",
            # Backtraces drown the one-line error causes in the failure excerpts; opt in with
            # LABELPORT_SDK_RUST_BACKTRACE=1.
            "RUST_BACKTRACE": os.environ.get("LABELPORT_SDK_RUST_BACKTRACE", "0"),
            "RUST_LIB_BACKTRACE": os.environ.get("LABELPORT_SDK_RUST_BACKTRACE", "0"),
        }
    )
    env.pop("DATABASE_URL", None)
    # Point the cloud clients at the emulators of this run, by their own conventions.
    if os.environ.get("LABELPORT_TEST_GCS"):
        env["STORAGE_EMULATOR_HOST"] = os.environ["LABELPORT_TEST_GCS"]
    if os.environ.get("LABELPORT_TEST_AZURE"):
        env["AZURE_STORAGE_USE_EMULATOR"] = "true"
        env["AZURITE_BLOB_STORAGE_URL"] = os.environ["LABELPORT_TEST_AZURE"]
    env.update(env_overrides or {})

    db_name = None
    database_url = None
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    stdout_path = tmp / "server.stdout.log"
    stderr_path = tmp / "server.stderr.log"
    proc = None
    try:
        if backend == "postgres":
            name = f"labelport_sdk_{secrets.token_hex(6)}"
            _psql(f'CREATE DATABASE "{name}"')
            db_name = name
            database_url = f"{PG_ADMIN_URL}/{db_name}"
            env["DATABASE_URL"] = database_url

        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [
                    str(server_bin),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(data_dir),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=tmp,
            )
        _wait_healthy(proc, base_url, stderr_path)
        yield Server(
            backend=backend,
            base_url=base_url,
            token=token,
            data_dir=data_dir,
            files_dir=files_dir,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            proc=proc,
            database_url=database_url,
        )
    finally:
        rc = _stop(proc) if proc is not None else 0
        if rc not in (0, -signal.SIGTERM):
            warnings.warn(
                f"labelport ({backend}) did not shut down cleanly on SIGTERM: "
                f"{'killed after ' + str(STOP_TIMEOUT_S) + ' s' if rc is None else 'exit status ' + str(rc)}; "
                f"stderr tail:\n{_read_tail(stderr_path, limit=4000)}"
            )
        try:
            if db_name is not None:
                _psql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        finally:
            if os.environ.get("LABELPORT_SDK_KEEP_TMP"):
                print(f"\nkept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------


def create_pat(server: Server) -> str:
    """POST /api/token/ with the legacy token; expects 201 {"token": <jwt>}."""
    status, body, _ = http_json(
        "POST",
        f"{server.base_url}/api/token/",
        headers={"Authorization": f"Token {server.token}"},
    )
    if status != 201 or not isinstance(body, dict) or not isinstance(body.get("token"), str):
        pytest.fail(
            f"POST /api/token/ with the legacy token: expected 201 {{\"token\": <jwt>}}, "
            f"got {status} {body!r}",
            pytrace=False,
        )
    return body["token"]


@pytest.fixture
def pat_token(server: Server) -> str:
    """The admin's personal access token (JWT refresh token), created once per server."""
    if server.pat is None:
        server.pat = create_pat(server)
    return server.pat


@pytest.fixture(params=AUTH_KINDS)
def auth_kind(request) -> str:
    return request.param


# The SDK retries 5xx/408/409/429 twice by default, which would hide server errors (and can
# replay non-idempotent POSTs). Every client in this suite therefore makes exactly one attempt.
SDK_MAX_RETRIES = 0


def make_client(server: Server, api_key: str, **kwargs) -> LabelStudio:
    kwargs.setdefault("max_retries", SDK_MAX_RETRIES)
    kwargs.setdefault("timeout", 30)
    return LabelStudio(base_url=server.base_url, api_key=api_key, **kwargs)


@pytest.fixture
def legacy_client(server: Server) -> LabelStudio:
    return make_client(server, server.token)


@pytest.fixture
def pat_client(server: Server, pat_token: str) -> LabelStudio:
    return make_client(server, pat_token)


@pytest.fixture
def client(request, server: Server, auth_kind: str) -> LabelStudio:
    """SDK client for the parametrised auth kind (legacy token or PAT)."""
    if auth_kind == "token":
        return request.getfixturevalue("legacy_client")
    return request.getfixturevalue("pat_client")


@pytest.fixture(autouse=True)
def _server_log_marker(request):
    """Remember where the server logs stood when the test started (for failure reports)."""
    if "server" in request.fixturenames:
        srv: Server = request.getfixturevalue("server")
        request.node.stash[_LOG_KEY] = (srv, srv.log_offsets())
    yield


_LOG_KEY = pytest.StashKey[tuple]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _LOG_KEY in item.stash:
        srv, offsets = item.stash[_LOG_KEY]
        report.sections.append((f"labelport server log during {report.when}", srv.logs_since(offsets)))
