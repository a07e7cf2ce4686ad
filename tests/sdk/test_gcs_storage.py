"""GCS export storage through the official label-studio-sdk 2.1.2 (``export_storage.gcs``),
against fake-gcs-server.

Contract: shared/label-studio-api-contract.md, sections 6.1, 6.2, 6.4 and 6.7. Each test that
takes ``client`` runs for every backend x auth kind.

The server reaches the emulator through ``STORAGE_EMULATOR_HOST`` (Google's convention), which
conftest.py sets from ``LABELPORT_TEST_GCS`` (printed by ``scripts/emulators start``). Objects are
read back straight from the emulator.
"""

from __future__ import annotations

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

from conftest import Server, http_json
from test_export_storage import (
    RICH_DATA,
    assert_export_doc,
    assert_non_field_error,
    choice,
    new_project,
    unique,
    wait_until,
)

GCS_URL = os.environ.get("LABELPORT_TEST_GCS")

# contract 6.1: response keys in LS order (plus our export_mode)
GCS_KEYS = [
    "id", "type", "synchronizable", "bucket", "prefix", "regex_filter", "use_blob_urls",
    "google_project_id", "last_sync", "last_sync_count", "last_sync_job", "status", "traceback",
    "meta", "title", "description", "created_at", "can_delete_objects", "project", "export_mode",
]

# Valid JSON, never used against the emulator; must never come back.
CREDENTIALS = json.dumps({
    "type": "service_account",
    "project_id": "labelport-sdk",
    "private_key_id": "feedfacecafebeef0001",
    "private_key": "-----BEGIN PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3Z2dTakFnRUFBb0lCQVFD\n-----END PRIVATE KEY-----\n",
    "client_email": "exporter@labelport-sdk.iam.gserviceaccount.com",
    "token_uri": "https://oauth2.googleapis.com/token",
})
SECRET_MARKERS = ["feedfacecafebeef0001", "TUlJRXZRSUJBREFOQmdrcWhraUc5dzBC", "PRIVATE KEY"]


@pytest.fixture
def gcs() -> str:
    if not GCS_URL:
        pytest.fail(
            "LABELPORT_TEST_GCS is not set: run `eval \"$(scripts/emulators start)\"` before scripts/test-sdk",
            pytrace=False,
        )
    return GCS_URL


@pytest.fixture
def bucket(gcs: str) -> str:
    name = f"lp-sdk-{uuid.uuid4().hex[:16]}"
    status, body, _ = http_json("POST", f"{gcs}/storage/v1/b", body={"name": name})
    assert status == 200, f"create bucket {name}: {status} {body!r}"
    return name


def object_bytes(gcs: str, bucket: str, name: str) -> Optional[bytes]:
    url = f"{gcs}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def object_names(gcs: str, bucket: str) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        query = f"?pageToken={urllib.parse.quote(token)}" if token else ""
        status, body, _ = http_json("GET", f"{gcs}/storage/v1/b/{bucket}/o{query}")
        assert status == 200, f"list {bucket}: {status} {body!r}"
        names += [item["name"] for item in body.get("items", [])]
        token = body.get("nextPageToken")
        if not token:
            return sorted(names)


def wait_gcs_done(client: LabelStudio, storage_id: int, *, attempts: int):
    """Polls GET until the storage has finished sync number `attempts`; requires `completed`."""

    def probe():
        s = client.export_storage.gcs.get(storage_id)
        if s.status in ("completed", "failed") and (s.meta or {}).get("attempts") == attempts:
            return s
        return None

    s = wait_until(probe, f"sync #{attempts} of gcs storage {storage_id}")
    assert s.status == "completed", f"status={s.status!r} traceback={s.traceback!r} meta={s.meta!r}"
    return s


def assert_no_secret(text: str, where: str) -> None:
    assert "google_application_credentials" not in text, f"{where}: {text}"
    for marker in SECRET_MARKERS:
        assert marker not in text, f"{where}: a secret came back: {text}"


def annotated_project(client: LabelStudio, n: int):
    project = new_project(client)
    ids = []
    for i in range(n):
        task = client.tasks.create(project=project.id, data=RICH_DATA if i == 0 else {"text": f"t{i}"})
        ids.append(client.annotations.create(task.id, result=choice("Positive"), lead_time=1.5).id)
    return project, ids


def test_gcs_create_list_get_update_validate_sync_delete(client: LabelStudio, server: Server, gcs: str, bucket: str):
    offsets = server.log_offsets()
    project, ann_ids = annotated_project(client, 2)

    created = client.export_storage.gcs.create(
        project=project.id,
        bucket=bucket,
        prefix="exports",
        google_application_credentials=CREDENTIALS,
        google_project_id="labelport-sdk",
        title=unique("gcs"),
        can_delete_objects=True,
    )
    assert created.type == "gcs" and created.bucket == bucket and created.prefix == "exports"
    assert created.google_project_id == "labelport-sdk"
    assert created.google_application_credentials is None
    done = wait_gcs_done(client, created.id, attempts=1)
    assert done.last_sync_count == 2

    listed = client.export_storage.gcs.list(project=project.id)
    assert [s.id for s in listed] == [created.id]
    got = client.export_storage.gcs.get(created.id)
    assert got.bucket == bucket

    updated = client.export_storage.gcs.update(created.id, title="renamed", description="d")
    assert updated.title == "renamed" and updated.description == "d"

    # validate with the id only: the stored credentials are used (contract 6.2)
    client.export_storage.gcs.validate(id=created.id, project=project.id, bucket=bucket, prefix="exports")

    synced = client.export_storage.gcs.sync(created.id)
    assert synced.id == created.id
    wait_gcs_done(client, created.id, attempts=2)
    assert object_names(gcs, bucket) == sorted(f"exports/{i}" for i in ann_ids)

    # The raw wire: LS's key order, no secret anywhere.
    wrapper = client._client_wrapper
    auth = {"Authorization": wrapper.get_headers()["Authorization"]}
    base = wrapper.get_base_url()
    for path in (f"/api/storages/export/gcs/{created.id}", f"/api/storages/export/gcs?project={project.id}"):
        status, body, _ = http_json("GET", base + path, headers=auth)
        assert status == 200, f"{path}: {status} {body!r}"
        one = body[0] if isinstance(body, list) else body
        assert list(one) == GCS_KEYS, f"{path}: keys {list(one)}"
        assert_no_secret(json.dumps(body), path)

    client.export_storage.gcs.delete(created.id)
    with pytest.raises(ApiError) as e:
        client.export_storage.gcs.get(created.id)
    assert e.value.status_code == 404

    # Nor in the server's log lines (labelport logs at debug level in this suite).
    logs = server.logs_since(offsets)
    for marker in SECRET_MARKERS:
        assert marker not in logs, f"a secret in the server log: {marker!r}"


def test_gcs_objects_are_json_dumps_of_each_annotation(client: LabelStudio, gcs: str, bucket: str):
    project, ann_ids = annotated_project(client, 3)
    me = client.users.whoami()

    storage = client.export_storage.gcs.create(project=project.id, bucket=bucket, prefix="a/", title=unique("gcs"))
    wait_gcs_done(client, storage.id, attempts=1)

    # contract 6.3/6.4: `<prefix>/<key>` with the prefix verbatim; body = json.dumps(doc)
    assert object_names(gcs, bucket) == sorted(f"a//{i}" for i in ann_ids)
    for ann_id in ann_ids:
        raw = object_bytes(gcs, bucket, f"a//{ann_id}")
        assert raw is not None, f"a//{ann_id} missing"
        doc = json.loads(raw)
        assert raw == json.dumps(doc).encode("ascii"), f"a//{ann_id}: not json.dumps(doc): {raw[:200]!r}"
        assert_export_doc(client, doc, ann_id, me, f"gs://{bucket}/a//{ann_id}")


def test_gcs_auto_export_update_and_delete(client: LabelStudio, gcs: str, bucket: str):
    project = new_project(client)
    task = client.tasks.create(project=project.id, data={"text": "auto"})
    storage = client.export_storage.gcs.create(
        project=project.id, bucket=bucket, title=unique("gcs"), can_delete_objects=True
    )
    wait_gcs_done(client, storage.id, attempts=1)

    ann = client.annotations.create(task.id, result=choice("Positive"))
    wait_until(lambda: object_bytes(gcs, bucket, str(ann.id)), f"object {ann.id} after create")

    client.annotations.update(ann.id, result=choice("Negative"))
    wait_until(
        lambda: b"Negative" in (object_bytes(gcs, bucket, str(ann.id)) or b""),
        f"object {ann.id} after update",
    )

    # Beyond Label Studio (which cannot delete on GCS): the object goes with the annotation.
    client.annotations.delete(ann.id)
    wait_until(lambda: object_bytes(gcs, bucket, str(ann.id)) is None, f"object {ann.id} after delete")


def test_gcs_invalid_credentials_and_missing_bucket(client: LabelStudio, gcs: str, bucket: str):
    project = new_project(client)

    # contract 6.4: LS's message with Python's json error, on create and on validate
    for call in (client.export_storage.gcs.create, client.export_storage.gcs.validate):
        with pytest.raises(ApiError) as e:
            call(project=project.id, bucket=bucket, google_application_credentials="not json")
        assert_non_field_error(
            e.value,
            "Google Application Credentials must be valid JSON string. Expecting value: line 1 column 1 (char 0)",
        )

    # A missing bucket: the cause on create, LS's generic message on validate (contract 6.2)
    missing = f"no-such-{uuid.uuid4().hex[:12]}"
    with pytest.raises(ApiError) as e:
        client.export_storage.gcs.create(project=project.id, bucket=missing, title="x")
    body = e.value.body
    assert e.value.status_code == 400, body
    message = body["validation_errors"]["non_field_errors"][0]
    assert message.startswith(f"Cannot find bucket {missing} in GCS"), message
    with pytest.raises(ApiError) as e:
        client.export_storage.gcs.validate(project=project.id, bucket=missing)
    assert_non_field_error(e.value, "Error validating storage connection")
    assert client.export_storage.gcs.list(project=project.id) == []
