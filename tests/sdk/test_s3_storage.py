"""S3 export storage through the official label-studio-sdk 2.1.2, against moto.

Contract: shared/label-studio-api-contract.md section 6 (6.1 fields, 6.2/6.3 validation,
6.3 what is written). Objects are read back with boto3 (from the emulators' venv, see
s3_objects.py) and compared byte for byte with Python's ``json.dumps`` of the document.
Each test makes its own bucket on the emulator of the run (``LABELPORT_TEST_S3``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from conftest import REPO_ROOT, Server

POLL_TIMEOUT_S = 60.0
KEY_ID = "AKIASDKTESTKEY000001"
SECRET = "sdk-secret-access-key-never-shown"
TOKEN = "sdk-session-token-never-shown"
SECRETS = (KEY_ID, SECRET, TOKEN)
EMU_PY = REPO_ROOT / ".venv-emu" / "bin" / "python"
S3_OBJECTS = Path(__file__).with_name("s3_objects.py")

# contract 6.1: S3 response keys in Label Studio's order (write-only ones never appear)
S3_KEYS = [
    "id", "type", "synchronizable", "last_sync", "last_sync_count", "last_sync_job", "status",
    "traceback", "meta", "title", "description", "created_at", "can_delete_objects", "bucket",
    "prefix", "regex_filter", "use_blob_urls", "aws_sse_kms_key_id", "region_name", "s3_endpoint",
    "project", "export_mode",
]


def endpoint() -> str:
    url = os.environ.get("LABELPORT_TEST_S3")
    if not url:
        pytest.fail("LABELPORT_TEST_S3 is not set: run ./scripts/test (it starts the emulators)", pytrace=False)
    return url


def s3(*args: str) -> dict:
    out = subprocess.run(
        [str(EMU_PY), str(S3_OBJECTS), endpoint(), *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def new_bucket() -> str:
    name = f"sdk-{uuid.uuid4().hex[:16]}"
    s3("create", name)
    return name


def objects(bucket: str) -> dict[str, bytes]:
    return {k: base64.b64decode(v["body"]) for k, v in s3("dump", bucket).items()}


def wait_until(probe, what: str):
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def wait_done(client: LabelStudio, storage_id: int):
    def probe():
        s = client.export_storage.s3.get(id=storage_id)
        return s if s.status in ("completed", "completed_with_errors", "failed") else None

    s = wait_until(probe, f"S3 storage {storage_id} to finish syncing")
    assert s.status == "completed", s
    return s


def populate(client: LabelStudio, n: int = 3):
    project = client.projects.create(title=f"s3 {uuid.uuid4().hex[:6]}")
    tasks = [
        {"data": {"text": f"h\u00e9llo {i} \U0001F642 \"q\""},
         "annotations": [{"result": [{"from_name": "s", "to_name": "t", "type": "choices",
                                      "value": {"choices": ["Positive"]}}]}]}
        for i in range(n)
    ]
    client.projects.import_tasks(id=project.id, request=tasks)
    annotation_ids = sorted(a["id"] for t in client.tasks.list(project=project.id, fields="all") for a in t.annotations)
    return project, annotation_ids


def create(client: LabelStudio, project_id: int, bucket: str, **kwargs):
    params = dict(
        project=project_id, bucket=bucket, s3endpoint=endpoint(), region_name="us-east-1",
        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, aws_session_token=TOKEN, title="to s3",
    )
    params.update(kwargs)
    return client.export_storage.s3.create(**params)


def test_s3_list_create_validate_get_update_sync_delete(client: LabelStudio, server: Server):
    offsets = server.log_offsets()
    bucket = new_bucket()
    project, annotation_ids = populate(client)

    # validate (nothing stored), then create (syncs at once)
    client.export_storage.s3.validate(project=project.id, bucket=bucket, s3endpoint=endpoint(),
                                      aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    assert client.export_storage.s3.list(project=project.id) == []
    storage = create(client, project.id, bucket, prefix="exports", can_delete_objects=True)
    assert storage.type == "s3" and storage.bucket == bucket and storage.prefix == "exports"
    assert storage.status == "queued"
    done = wait_done(client, storage.id)
    assert done.last_sync_count == len(annotation_ids)

    # what is written: exports/<id>, the compact json.dumps of the document
    found = objects(bucket)
    assert sorted(found) == sorted(f"exports/{i}" for i in annotation_ids)
    for key, raw in found.items():
        doc = json.loads(raw)
        assert raw == json.dumps(doc).encode(), key
        assert doc["id"] == int(key.split("/")[1])
    dumped = s3("dump", bucket)
    assert all(v["content_type"] == "application/json" for v in dumped.values())

    # list / get / raw responses never carry a secret
    listed = client.export_storage.s3.list(project=project.id)
    assert [s.id for s in listed] == [storage.id]
    got = client.export_storage.s3.get(id=storage.id)
    assert got.bucket == bucket and got.s3endpoint == endpoint()

    # update keeps the secrets: a partial update, then a sync through them
    updated = client.export_storage.s3.update(id=storage.id, title="renamed")
    assert updated.title == "renamed"
    tasks = list(client.tasks.list(project=project.id))
    new = client.annotations.create(id=tasks[0].id, result=[{"from_name": "s", "to_name": "t", "type": "choices",
                                                              "value": {"choices": ["Negative"]}}])
    wait_until(lambda: f"exports/{new.id}" in objects(bucket), "auto-export of the new annotation")
    client.annotations.delete(id=new.id)
    wait_until(lambda: f"exports/{new.id}" not in objects(bucket), "deletion of the object")
    client.export_storage.s3.sync(id=storage.id)
    assert wait_done(client, storage.id).meta["sync_mode"] == "incremental"

    # validate with an id fills the stored secrets
    client.export_storage.s3.validate(id=storage.id, project=project.id, bucket=bucket, s3endpoint=endpoint())

    client.export_storage.s3.delete(id=storage.id)
    with pytest.raises(ApiError) as e:
        client.export_storage.s3.get(id=storage.id)
    assert e.value.status_code == 404
    assert sorted(objects(bucket)) == sorted(f"exports/{i}" for i in annotation_ids), "objects stay"

    logs = server.logs_since(offsets)
    for secret in SECRETS:
        assert secret not in logs, "a secret reached the server log"


def test_s3_responses_have_label_studios_keys_and_no_secrets(client: LabelStudio):
    bucket = new_bucket()
    project, _ = populate(client, 1)
    storage = create(client, project.id, bucket)
    raw = client.export_storage.s3.with_raw_response.get(id=storage.id)
    text = raw.response.text if hasattr(raw, "response") else raw._response.text
    assert list(json.loads(text).keys()) == S3_KEYS
    for secret in SECRETS:
        assert secret not in text
    wait_done(client, storage.id)


def test_s3_errors_use_label_studios_messages(client: LabelStudio):
    project, _ = populate(client, 1)
    with pytest.raises(ApiError) as e:
        create(client, project.id, "no-such-bucket-sdk")
    assert e.value.status_code == 400
    assert e.value.body["validation_errors"]["non_field_errors"] == ["Cannot find bucket no-such-bucket-sdk in S3"]
    with pytest.raises(ApiError) as e:
        client.export_storage.s3.validate(project=project.id, bucket="bad bucket!", s3endpoint=endpoint())
    assert e.value.status_code == 400
    assert e.value.body["validation_errors"]["bucket"][0].startswith('Invalid bucket name "bad bucket!"')


def test_s3_full_sync_restores_a_removed_object(client: LabelStudio):
    bucket = new_bucket()
    project, annotation_ids = populate(client, 4)
    storage = create(client, project.id, bucket)
    wait_done(client, storage.id)
    s3("delete", bucket, str(annotation_ids[1]))
    client.export_storage.s3.sync(id=storage.id, request_options={"additional_query_parameters": {"full": "true"}})
    done = wait_done(client, storage.id)
    assert done.meta["files_written"] == 1
    assert sorted(objects(bucket)) == sorted(str(i) for i in annotation_ids)
