"""Azure Blob export storage through the official label-studio-sdk 2.1.2, against Azurite.

Contract: shared/label-studio-api-contract.md, sections 6.1, 6.2, 6.5 and 6.7. The server
reaches Azurite through ``AZURE_STORAGE_USE_EMULATOR`` / ``AZURITE_BLOB_STORAGE_URL``, which
this module sets from ``LABELPORT_TEST_AZURE`` (``scripts/emulators start``) when it is
imported: collection runs before the session's servers start, and they inherit the
environment. Each test makes its own container and reads the blobs back byte for byte.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Optional

import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from conftest import Server
from test_export_storage import (
    assert_api_error,
    assert_export_doc,
    assert_non_field_error,
    choice,
    new_project,
    raw_request,
    unique,
    wait_until,
)

AZURE_ENDPOINT = os.environ.get("LABELPORT_TEST_AZURE")

# Azurite's well-known development account.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

MISSING_CREDENTIALS = (
    "Azure account name and key must be set using environment variables AZURE_BLOB_ACCOUNT_NAME and "
    "AZURE_BLOB_ACCOUNT_KEY or account_name and account_key fields."
)

# contract 6.1: response keys in LS order, plus our export_mode
AZURE_KEYS = [
    "id", "type", "synchronizable", "container", "prefix", "regex_filter", "use_blob_urls", "last_sync",
    "last_sync_count", "last_sync_job", "status", "traceback", "meta", "title", "description", "created_at",
    "can_delete_objects", "project", "export_mode",
]


class Azurite:
    """A container in Azurite, with a Shared Key signed client to look inside it."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint.rstrip("/")
        self.name = f"lp-{uuid.uuid4().hex[:16]}"
        self.key = base64.b64decode(DEV_KEY)

    def _request(self, method: str, path: str, query: Optional[dict] = None) -> tuple[int, bytes, dict]:
        url = f"{self.endpoint}/{self.name}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        date = dt.datetime.now(dt.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
        headers = {"x-ms-date": date, "x-ms-version": "2021-08-06"}
        data = None
        content_type = ""
        if method == "PUT":
            # urllib would add a form Content-Type to a bodyless PUT; set one and sign it.
            data, content_type = b"", "application/octet-stream"
            headers["Content-Type"] = content_type
        parsed = urllib.parse.urlsplit(url)
        resource = f"/{DEV_ACCOUNT}{parsed.path}"
        for k, v in sorted((k.lower(), v) for k, v in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)):
            resource += f"\n{k}:{v}"
        # verb, Content-Encoding, -Language, -Length (empty for 0), -MD5, -Type, Date,
        # If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range
        standard = ["", "", "", "", content_type, "", "", "", "", "", ""]
        to_sign = (
            method + "\n" + "".join(f"{v}\n" for v in standard)
            + "".join(f"{k}:{headers[k]}\n" for k in sorted(h for h in headers if h.startswith("x-ms-")))
            + resource
        )
        signature = base64.b64encode(hmac.new(self.key, to_sign.encode(), hashlib.sha256).digest()).decode()
        headers["Authorization"] = f"SharedKey {DEV_ACCOUNT}:{signature}"
        req = urllib.request.Request(url, method=method, headers=headers, data=data)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def create(self) -> "Azurite":
        status, body, _ = self._request("PUT", "", {"restype": "container"})
        assert status == 201, f"create container: {status} {body!r}"
        return self

    def get(self, blob: str) -> Optional[bytes]:
        status, body, _ = self._request("GET", "/" + urllib.parse.quote(blob, safe="/~"))
        if status == 404:
            return None
        assert status == 200, f"GET {blob}: {status} {body!r}"
        return body

    def names(self) -> list[str]:
        status, body, _ = self._request("GET", "", {"restype": "container", "comp": "list"})
        assert status == 200, f"List Blobs: {status} {body!r}"
        text = body.decode()
        return sorted(part.split("</Name>")[0].replace("&amp;", "&") for part in text.split("<Name>")[1:])


@pytest.fixture
def azure() -> Azurite:
    if not AZURE_ENDPOINT:
        pytest.fail(
            "LABELPORT_TEST_AZURE is not set: run `eval \"$(scripts/emulators start)\"` before scripts/test-sdk",
            pytrace=False,
        )
    return Azurite(AZURE_ENDPOINT).create()


def creds(azure: Azurite) -> dict:
    return {"container": azure.name, "account_name": DEV_ACCOUNT, "account_key": DEV_KEY}


def assert_no_secret(text: str, where: str) -> None:
    for secret in (DEV_KEY, DEV_ACCOUNT, "account_key", "account_name"):
        assert secret not in text, f"{where}: {secret!r} in {text}"


def wait_status(client: LabelStudio, storage_id: int, attempts: int):
    def probe():
        s = client.export_storage.azure.get(storage_id)
        if s.status in ("completed", "failed") and (s.meta or {}).get("attempts") == attempts:
            return s
        return None

    s = wait_until(probe, f"sync #{attempts} of azure storage {storage_id}")
    assert s.status == "completed", f"traceback={s.traceback!r} meta={s.meta!r}"
    return s


def assert_blob_bytes(client: LabelStudio, raw: bytes, ann_id: int, me, where: str) -> None:
    """The blob holds the annotation's document exactly as Python's json.dumps(doc) renders it."""
    assert raw.isascii(), f"{where}: non-ASCII bytes: {raw[:200]!r}"
    doc = json.loads(raw)
    assert_export_doc(client, doc, ann_id, me, where)
    expected = json.dumps(doc).encode("ascii")
    assert raw == expected, f"{where}: not json.dumps of its document:\n{raw[:300]!r}\n{expected[:300]!r}"


def test_azure_storage_lifecycle(client: LabelStudio, azure: Azurite, server: Server):
    offsets = server.log_offsets()
    me = client.users.whoami()
    project = new_project(client)
    task = client.tasks.create(project=project.id, data={"text": "caf\u00e9 \U0001F642"})
    ann_ids = [client.annotations.create(task.id, result=choice(c), lead_time=1).id for c in ("Positive", "Negative")]
    title = unique("azure")

    # create: LS's shape, no secret, synced on creation
    created = client.export_storage.azure.create(
        project=project.id, title=title, prefix="exports/", can_delete_objects=True, **creds(azure)
    )
    assert created.type == "azure" and created.status == "queued", created
    assert (created.container, created.prefix, created.title) == (azure.name, "exports/", title)
    assert created.account_key is None and created.account_name is None
    wait_status(client, created.id, 1)
    expected = sorted(f"exports//{a}" for a in ann_ids)
    wait_until(lambda: azure.names() == expected, f"blobs {expected}")
    for a in ann_ids:
        assert_blob_bytes(client, azure.get(f"exports//{a}"), a, me, f"blob exports//{a}")

    # list, get, raw wire: LS's key order and no secret anywhere
    listed = client.export_storage.azure.list(project=project.id)
    assert [s.id for s in listed] == [created.id]
    got = client.export_storage.azure.get(created.id)
    assert got.container == azure.name and got.account_key is None
    for path in (f"/api/storages/export/azure?project={project.id}", f"/api/storages/export/azure/{created.id}"):
        status, body, _ = raw_request(client, "GET", path)
        assert status == 200
        one = body[0] if isinstance(body, list) else body
        assert list(one) == AZURE_KEYS, f"{path}: {list(one)}"
        assert_no_secret(json.dumps(body), path)

    # update (no connection check, as in LS), validate with and without id
    updated = client.export_storage.azure.update(created.id, title="renamed", description="d")
    assert (updated.title, updated.description, updated.container) == ("renamed", "d", azure.name)
    assert client.export_storage.azure.validate(project=project.id, **creds(azure)) is None
    assert client.export_storage.azure.validate(id=created.id, project=project.id, container=azure.name) is None

    # sync: completes, nothing to rewrite
    synced = client.export_storage.azure.sync(created.id)
    assert synced.id == created.id
    s = wait_status(client, created.id, 2)
    assert s.last_sync_count == 2, s

    # delete: 204 then 404; the blobs stay
    client.export_storage.azure.delete(created.id)
    with pytest.raises(ApiError) as e:
        client.export_storage.azure.get(created.id)
    assert_api_error(e.value, 404, "No AzureBlobExportStorage matches the given query.")
    assert azure.names() == expected

    logs = server.logs_since(offsets)
    for secret in (DEV_KEY, DEV_ACCOUNT):
        assert secret not in logs, f"{secret!r} reached the server log"


def test_azure_auto_export_updates_and_deletes_blobs(client: LabelStudio, azure: Azurite):
    me = client.users.whoami()
    project = new_project(client)
    task = client.tasks.create(project=project.id, data={"text": "auto"})
    created = client.export_storage.azure.create(project=project.id, can_delete_objects=True, **creds(azure))
    wait_status(client, created.id, 1)
    assert azure.names() == []

    ann = client.annotations.create(task.id, result=choice("Positive"), lead_time=1)
    raw = wait_until(lambda: azure.get(str(ann.id)), f"blob {ann.id}")
    assert_blob_bytes(client, raw, ann.id, me, f"blob {ann.id}")

    client.annotations.update(ann.id, result=choice("Negative"))
    wait_until(
        lambda: json.loads(azure.get(str(ann.id)) or b"{}").get("result") == choice("Negative"),
        "the updated blob",
    )

    client.annotations.delete(ann.id)
    wait_until(lambda: azure.names() == [], f"blob {ann.id} to be deleted")


def test_azure_errors_use_label_studios_messages(client: LabelStudio, azure: Azurite):
    project = new_project(client)
    missing = f"nope-{uuid.uuid4().hex[:12]}"

    with pytest.raises(ApiError) as e:
        client.export_storage.azure.create(project=project.id, container=missing, account_name=DEV_ACCOUNT,
                                           account_key=DEV_KEY)
    assert_non_field_error(e.value, f"Container not found: {missing}")

    with pytest.raises(ApiError) as e:
        client.export_storage.azure.validate(project=project.id, container=missing, account_name=DEV_ACCOUNT,
                                             account_key=DEV_KEY)
    assert_non_field_error(e.value, "Error validating storage connection")

    with pytest.raises(ApiError) as e:
        client.export_storage.azure.create(project=project.id, container=azure.name)
    assert_non_field_error(e.value, MISSING_CREDENTIALS)

    with pytest.raises(ApiError) as e:
        client.export_storage.azure.create(project=project.id, container=azure.name, account_name=DEV_ACCOUNT,
                                           account_key=base64.b64encode(b"wrong key").decode())
    body = assert_api_error(e.value, 400, "Validation error")
    assert_no_secret(json.dumps(body), "wrong-key error")
    assert client.export_storage.azure.list(project=project.id) == []
