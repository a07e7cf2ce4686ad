"""Redis export storage through the official label-studio-sdk 2.1.2 (``export_storage.redis``).

Contract: shared/label-studio-api-contract.md, sections 6.1, 6.2, 6.6 and 6.7; issue 8.

The module starts its own password-protected redis-server on a free loopback port
(persistence off), and its own labelport per backend with ``SSRF_PROTECTION_ENABLED=false``
so that server may be reached on loopback. The session's shared server (SSRF protection
on, Label Studio's default) is used to check that loopback hosts are refused.
Values are read back with a minimal RESP client, byte for byte.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from conftest import (
    BACKENDS,
    Server,
    start_server,
    _free_port,
    http_json,
    make_client,
)
from test_export_storage import (
    DOC_KEYS,
    TERMINAL,
    assert_api_error,
    assert_non_field_error,
    choice,
    new_project,
    wait_until,
)

DB_REQUIRED = "Please explicitly pass a redis db id to prevent accidentally overwriting existing database!"
REDIS_KEYS = [
    "id", "type", "synchronizable", "path", "host", "port", "regex_filter", "use_blob_urls",
    "last_sync", "last_sync_count", "last_sync_job", "status", "traceback", "meta", "title",
    "description", "created_at", "can_delete_objects", "db", "project", "export_mode",
]
POLL_TIMEOUT_S = 30.0


# ---------------------------------------------------------------------------
# a redis-server of our own, and a minimal RESP client
# ---------------------------------------------------------------------------


class Resp:
    """Just enough of the Redis protocol to read back what labelport wrote."""

    def __init__(self, port: int, password: Optional[str], db: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        if password is not None:
            assert self.call("AUTH", password) == "OK"
        assert self.call("SELECT", str(db)) == "OK"

    def close(self) -> None:
        self.sock.close()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def call(self, *args: str):
        out = b"*%d\r\n" % len(args)
        for a in args:
            data = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(out)
        return self._reply()

    def get(self, key: str) -> Optional[bytes]:
        return self.call("GET", key)

    def keys(self) -> set[str]:
        return {k.decode() for k in self.call("KEYS", "*")}


class OwnRedis:
    def __init__(self, port: int, password: str, proc: subprocess.Popen):
        self.port = port
        self.password = password
        self.proc = proc

    def db(self, n: int) -> Resp:
        return Resp(self.port, self.password, n)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[OwnRedis]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (scripts/emulators installs it)", pytrace=False)
    port = _free_port()
    password = "sdk-" + secrets.token_hex(12)
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--requirepass", password],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            Resp(port, password, 1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}", pytrace=False)
            time.sleep(0.05)
    try:
        yield OwnRedis(port, password, proc)
    finally:
        proc.kill()
        proc.wait(timeout=10)


_next_db = iter(range(1, 16))


@pytest.fixture
def redis_db(redis_server: OwnRedis) -> Iterator[tuple[int, Resp]]:
    """A fresh database number of the module's redis-server, and a client on it."""
    n = next(_next_db)
    conn = redis_server.db(n)
    conn.call("FLUSHDB")
    try:
        yield n, conn
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# labelports of this module's own: one as the suite's (SSRF protection off, the
# redis-servers are on loopback), one with protection on (Label Studio's default)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def loopback_server(request, server_bin) -> Iterator[Server]:
    yield from start_server(request.param, server_bin)


@pytest.fixture(scope="module", params=BACKENDS)
def protected_server(request, server_bin) -> Iterator[Server]:
    """A labelport with SSRF protection on, Label Studio's default."""
    yield from start_server(request.param, server_bin, {"SSRF_PROTECTION_ENABLED": "true"})


@pytest.fixture
def rclient(loopback_server: Server) -> LabelStudio:
    return make_client(loopback_server, loopback_server.token)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def raw(client: LabelStudio, method: str, path: str, body: object = None):
    wrapper = client._client_wrapper
    auth = {"Authorization": wrapper.get_headers()["Authorization"]}
    return http_json(method, wrapper.get_base_url() + path, headers=auth, body=body)


def wait_done(client: LabelStudio, storage_id: int, attempts: int):
    def probe():
        s = client.export_storage.redis.get(storage_id)
        if s.status in TERMINAL and (s.meta or {}).get("attempts") == attempts:
            return s
        return None

    s = wait_until(probe, f"sync #{attempts} of redis storage {storage_id}", timeout=POLL_TIMEOUT_S)
    assert s.status == "completed", f"status={s.status!r} traceback={s.traceback!r} meta={s.meta!r}"
    return s


def assert_value(conn: Resp, ann_id: int) -> dict:
    """The value under the bare annotation id is the annotation document, ASCII-only JSON."""
    value = conn.get(str(ann_id))
    assert value is not None, f"no key {ann_id}"
    doc = json.loads(value)
    assert list(doc) == DOC_KEYS, list(doc)
    assert doc["id"] == ann_id
    assert value == json.dumps(doc).encode("ascii"), value[:200]
    return doc


def populate(client: LabelStudio) -> tuple[object, list[int], list[int]]:
    project = new_project(client)
    summary = client.projects.import_tasks(
        project.id,
        request=[
            {"data": {"text": "one \u00e9"}, "annotations": [{"result": choice("Positive")}]},
            {"data": {"text": "two"}, "annotations": [{"result": choice("Negative")}]},
        ],
        return_task_ids=True,
    )
    ids: list[int] = []
    for task_id in summary.task_ids:
        ids += [a.id for a in client.annotations.list(task_id)]
    return project, list(summary.task_ids), ids


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------


def test_redis_storage_end_to_end(rclient: LabelStudio, redis_server: OwnRedis, redis_db):
    n, conn = redis_db
    client = rclient
    project, tasks, ann_ids = populate(client)
    common = dict(project=project.id, host="127.0.0.1", port=str(redis_server.port), db=n)

    # validate: right password passes; a wrong one gets Label Studio's generic message
    client.export_storage.redis.validate(**common, password=redis_server.password)
    with pytest.raises(ApiError) as exc:
        client.export_storage.redis.validate(**common, password="wrong-" + redis_server.password)
    assert_non_field_error(exc.value, "Error validating storage connection")
    assert redis_server.password not in json.dumps(exc.value.body)

    # create: the raw error text on a wrong password, never the password itself
    with pytest.raises(ApiError) as exc:
        client.export_storage.redis.create(**common, password="wrong-pw-xyz", path="p")
    body = assert_api_error(exc.value, 400, "Validation error")
    (message,) = body["validation_errors"]["non_field_errors"]
    assert message.startswith("Cannot authenticate to Redis 127.0.0.1:"), message
    assert "wrong-pw-xyz" not in json.dumps(body)

    s = client.export_storage.redis.create(
        **common, password=redis_server.password, path="not/a/prefix", title="redis out", can_delete_objects=True
    )
    assert s.status == "queued" and s.db == n and s.port == str(redis_server.port) and s.host == "127.0.0.1"
    assert s.password is None
    s = wait_done(client, s.id, attempts=1)
    assert s.last_sync_count == len(ann_ids)
    assert conn.keys() == {str(a) for a in ann_ids}, "bare annotation ids; path is not a prefix"
    for a in ann_ids:
        assert_value(conn, a)

    # get / list / aggregate list: Label Studio's keys in order, no password anywhere
    status, got, _ = raw(client, "GET", f"/api/storages/export/redis/{s.id}")
    assert status == 200 and list(got) == REDIS_KEYS, got
    assert got["path"] == "not/a/prefix"
    listed = client.export_storage.redis.list(project=project.id)
    assert [x.id for x in listed] == [s.id]
    status, everything, _ = raw(client, "GET", f"/api/storages/export?project={project.id}")
    for text in (json.dumps(got), json.dumps(everything), listed[0].json()):
        assert redis_server.password not in text
    assert all(x.password is None for x in listed)

    # update (PATCH, no connection check); validate by id fills the stored password
    u = client.export_storage.redis.update(s.id, title="renamed", description="d")
    assert (u.title, u.description, u.db, u.password) == ("renamed", "d", n, None)
    client.export_storage.redis.validate(id=s.id, **common)

    # auto-export on create and update, deletion with can_delete_objects
    task = client.tasks.create(project=project.id, data={"text": "later"})
    ann = client.annotations.create(task.id, result=choice("Positive"), lead_time=2.5)
    wait_until(lambda: conn.get(str(ann.id)), "auto-export of a new annotation")
    client.annotations.update(ann.id, result=choice("Negative"))
    wait_until(
        lambda: json.loads(conn.get(str(ann.id)) or b"{}").get("result") == choice("Negative"),
        "auto-export of an updated annotation",
    )
    assert_value(conn, ann.id)
    client.annotations.delete(ann.id)
    wait_until(lambda: conn.get(str(ann.id)) is None, "deletion of the key with can_delete_objects")

    # sync: a key removed by hand is written again (the database's key count changed)
    conn.call("DEL", str(ann_ids[0]))
    synced = client.export_storage.redis.sync(s.id)
    assert synced.id == s.id
    wait_done(client, s.id, attempts=2)
    wait_until(lambda: conn.get(str(ann_ids[0])), "the key restored by a sync")
    assert conn.keys() == {str(a) for a in ann_ids}

    # delete: the storage goes, the keys stay
    client.export_storage.redis.delete(s.id)
    with pytest.raises(ApiError) as exc:
        client.export_storage.redis.get(s.id)
    assert exc.value.status_code == 404
    assert conn.keys() == {str(a) for a in ann_ids}


def test_redis_db_zero_is_refused_with_label_studios_message(rclient: LabelStudio, redis_server: OwnRedis):
    project = new_project(rclient)
    for call in (rclient.export_storage.redis.create, rclient.export_storage.redis.validate):
        with pytest.raises(ApiError) as exc:
            call(project=project.id, host="127.0.0.1", port=str(redis_server.port), db=0,
                 password=redis_server.password)
        assert_non_field_error(exc.value, DB_REQUIRED)
    assert rclient.export_storage.redis.list(project=project.id) == []


def test_redis_form_and_defaults(rclient: LabelStudio, redis_server: OwnRedis):
    status, form, _ = raw(rclient, "GET", "/api/storages/export/redis/form")
    assert status == 200
    assert form == [{"columnCount": 2, "fields": [
        {"type": "text", "name": "db", "label": "Database Number (db)", "placeholder": 1},
        {"type": "text", "name": "path", "label": "Path"},
        {"type": "password", "name": "password", "label": "Password", "autoComplete": "new-password"},
        {"type": "text", "name": "host", "label": "Host", "placeholder": "localhost"},
        {"type": "text", "name": "port", "label": "Port"},
    ]}]
    project = new_project(rclient)
    # db defaults to 2 (the project has no annotation: nothing is written there)
    s = rclient.export_storage.redis.create(
        project=project.id, host="127.0.0.1", port=str(redis_server.port), password=redis_server.password
    )
    assert s.db == 2
    wait_done(rclient, s.id, attempts=1)
    rclient.export_storage.redis.delete(s.id)


def test_redis_loopback_hosts_are_refused_with_ssrf_protection_on(protected_server: Server):
    client = make_client(protected_server, protected_server.token)
    project = new_project(client)
    for host, block in (("127.0.0.1", "127.0.0.0/8"), ("10.0.0.1", "10.0.0.0/8")):
        kwargs = dict(project=project.id, host=host, port="6379", db=3)
        with pytest.raises(ApiError) as exc:
            client.export_storage.redis.create(**kwargs)
        assert_non_field_error(exc.value, f"URL resolves to a reserved network address (block: {block})")
        with pytest.raises(ApiError) as exc:
            client.export_storage.redis.validate(**kwargs)
        assert_non_field_error(exc.value, "Error validating storage connection")
    assert client.export_storage.redis.list(project=project.id) == []
