"""File uploads to ``POST /api/projects/{id}/import`` through label-studio-sdk 2.1.2.

``client.projects.import_tasks`` of SDK 2.1.2 only sends JSON bodies; files go through
the SDK's own HTTP client (``files=``, with its authentication, legacy token or PAT), and
through the legacy ``Project.import_tasks(path)`` that ships in the same package
(``files={"file": f}``). Contract §7.2.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk._legacy import Client as LegacyClient

from conftest import Server


def _project(client: LabelStudio) -> int:
    return client.projects.create(title=f"files {uuid.uuid4().hex[:8]}").id


def _upload(client: LabelStudio, project: int, files: dict):
    return client._client_wrapper.httpx_client.request(
        f"api/projects/{project}/import", method="POST", params={"return_task_ids": True}, files=files
    )


def _texts(client: LabelStudio, project: int) -> list[str]:
    return [t.data["text"] for t in client.tasks.list(project=project)]


@pytest.mark.parametrize(
    "name, content",
    [
        ("tasks.json", b'[{"text": "one"}, {"data": {"text": "two"}}]'),
        ("tasks.jsonl", b'{"text": "one"}\n{"data": {"text": "two"}}\n'),
        ("tasks.csv", b"text,n\none,1\ntwo,2\n"),
        ("tasks.tsv", b"text\tn\none\t1\ntwo\t2\n"),
        ("tasks.txt", b"one\ntwo\n"),
    ],
)
def test_a_task_file_uploaded_through_the_sdk_client_is_imported(client: LabelStudio, name: str, content: bytes):
    project = _project(client)
    response = _upload(client, project, {"file": (name, content)})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["task_count"] == 2
    assert body["found_formats"] == {"." + name.rsplit(".", 1)[1]: 1}
    assert "text" in body["data_columns"]
    assert _texts(client, project) == ["one", "two"]


def test_a_malformed_file_is_400_and_imports_nothing(client: LabelStudio):
    project = _project(client)
    response = _upload(client, project, {"good": ("good.txt", b"fine\n"), "bad": ("bad.csv", b"a,b\n1\n")})
    assert response.status_code == 400, response.text
    assert "bad.csv" in response.json()["validation_errors"]["non_field_errors"][0]
    assert _texts(client, project) == []


def test_the_legacy_sdk_imports_a_file_by_path(server: Server, legacy_client: LabelStudio, tmp_path: Path):
    project = _project(legacy_client)
    path = tmp_path / "tasks.csv"
    path.write_text("text,label\nhello,pos\nworld,neg\n")
    legacy = LegacyClient(url=server.base_url, api_key=server.token)
    ids = legacy.get_project(project).import_tasks(str(path))
    assert len(ids) == 2
    assert _texts(legacy_client, project) == ["hello", "world"]
