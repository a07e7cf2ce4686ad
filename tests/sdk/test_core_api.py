"""Core REST API through the official label-studio-sdk 2.1.2.

Contract: shared/label-studio-api-contract.md, sections 0, 1, 2, 7 and 9.
Each test that takes ``client`` runs for every backend x auth kind (legacy token, PAT).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
import uuid

import jwt
import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from conftest import ADMIN_EMAIL, Server, create_pat, http_json, make_client

LABEL_CONFIG = (
    '<View>'
    '<Text name="text" value="$text"/>'
    '<Choices name="sentiment" toName="text">'
    '<Choice value="Positive"/><Choice value="Negative"/>'
    '</Choices>'
    '</View>'
)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def choice(value: str) -> list[dict]:
    return [
        {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [value]},
        }
    ]


def unique_title(prefix: str = "sdk") -> str:
    return f"{prefix} {uuid.uuid4().hex[:12]}"


def new_project(client: LabelStudio, **kwargs):
    kwargs.setdefault("title", unique_title())
    kwargs.setdefault("label_config", LABEL_CONFIG)
    return client.projects.create(**kwargs)


# contract 0.2: ISO 8601, UTC, `T`, microseconds (dropped when 0), `Z`
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$")


def assert_utc_datetime(value, what: str) -> dt.datetime:
    """A model timestamp. The SDK parses it unless its union-typed models pick a variant without
    that field (e.g. tasks.update), in which case the raw string is checked against 0.2."""
    if isinstance(value, str):
        assert TIMESTAMP_RE.match(value), f"{what}: not in the contract 0.2 format: {value!r}"
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime), f"{what}: not a timestamp: {value!r}"
    assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0), f"{what}: not UTC: {value!r}"
    return value


def raw_request(client: LabelStudio, method: str, path: str, body: object = None):
    """Plain HTTP with the SDK client's own auth header (Token or Bearer), for wire-level checks."""
    wrapper = client._client_wrapper
    auth = {"Authorization": wrapper.get_headers()["Authorization"]}
    return http_json(method, wrapper.get_base_url() + path, headers=auth, body=body)


def assert_api_error(exc: ApiError, status: int, detail: str | None = None) -> None:
    """The SDK raised for `status`; the body has the LS error shape of contract section 2.1."""
    assert exc.status_code == status, f"expected HTTP {status}, got {exc.status_code}: {exc.body!r}"
    body = exc.body
    assert isinstance(body, dict), f"error body is not a JSON object: {body!r}"
    for key in ("id", "status_code", "version", "detail", "exc_info"):
        assert key in body, f"error body lacks {key!r}: {body!r}"
    assert isinstance(body["id"], str) and UUID_RE.match(body["id"]), body
    assert body["status_code"] == status, body
    assert isinstance(body["version"], str) and body["version"], body
    assert body["exc_info"] is None, body
    if detail is not None:
        assert body["detail"] == detail, body


# ---------------------------------------------------------------------------
# projects
# ---------------------------------------------------------------------------


def test_project_create_get_update_delete(client: LabelStudio):
    title = unique_title("crud")
    created = client.projects.create(
        title=title, description="a description", label_config=LABEL_CONFIG
    )
    assert isinstance(created.id, int)
    assert created.title == title
    assert created.description == "a description"
    assert created.label_config == LABEL_CONFIG
    assert_utc_datetime(created.created_at, "project.created_at")
    assert created.created_by is not None and created.created_by.email == ADMIN_EMAIL

    got = client.projects.get(created.id)
    assert got.id == created.id
    assert got.title == title
    assert got.description == "a description"
    assert got.label_config == LABEL_CONFIG
    assert got.task_number == 0
    # ProjectExt helper parses the stored label config
    assert [c.name for c in got.get_label_interface().controls] == ["sentiment"]

    new_title = unique_title("renamed")
    updated = client.projects.update(created.id, title=new_title)
    assert updated.id == created.id
    assert updated.title == new_title
    assert updated.description == "a description"
    assert updated.label_config == LABEL_CONFIG

    again = client.projects.get(created.id)
    assert again.title == new_title
    assert again.description == "a description"

    client.projects.delete(created.id)
    with pytest.raises(ApiError) as ei:
        client.projects.get(created.id)
    assert_api_error(ei.value, 404, "No Project matches the given query.")

    ids = [p.id for p in client.projects.list()]
    assert created.id not in ids


def test_project_update_other_fields(client: LabelStudio):
    p = new_project(client, description="before")
    new_config = LABEL_CONFIG.replace('<Choice value="Negative"/>', '<Choice value="Negative"/><Choice value="Neutral"/>')
    updated = client.projects.update(
        p.id, description="after", label_config=new_config, maximum_annotations=3, expert_instruction="be careful"
    )
    assert updated.title == p.title
    assert updated.description == "after"
    assert updated.label_config == new_config
    assert updated.maximum_annotations == 3
    assert updated.expert_instruction == "be careful"
    got = client.projects.get(p.id)
    assert (got.description, got.label_config, got.maximum_annotations, got.expert_instruction) == (
        "after",
        new_config,
        3,
        "be careful",
    )


def test_project_list_filters(client: LabelStudio):
    """`ids` and `title` filters (contract 7.1, [S]) as sent by the SDK."""
    marker = uuid.uuid4().hex[:10]
    a = client.projects.create(title=f"filter {marker} alpha")
    b = client.projects.create(title=f"filter {marker} beta")
    c = client.projects.create(title=unique_title("other"))
    assert {p.id for p in client.projects.list(ids=f"{a.id},{c.id}")} == {a.id, c.id}
    assert {p.id for p in client.projects.list(title=marker.upper())} == {a.id, b.id}


def test_project_defaults(client: LabelStudio):
    p = client.projects.create(title=unique_title("defaults"))
    assert p.description == ""
    assert p.label_config == "<View></View>"
    assert p.maximum_annotations == 1
    assert p.color == "#FFFFFF"
    assert p.sampling == "Sequential sampling"


def test_project_get_unknown_is_404(client: LabelStudio):
    with pytest.raises(ApiError) as ei:
        client.projects.get(987654321)
    assert_api_error(ei.value, 404, "No Project matches the given query.")


def test_project_list_contains_new_and_paginates(client: LabelStudio):
    created = [new_project(client, description=f"list {i}") for i in range(5)]
    created_ids = {p.id for p in created}

    # default page size
    listed = list(client.projects.list())
    listed_ids = [p.id for p in listed]
    assert created_ids <= set(listed_ids)
    assert len(listed_ids) == len(set(listed_ids)), "duplicate projects across pages"
    by_id = {p.id: p for p in listed}
    for p in created:
        assert by_id[p.id].title == p.title
        assert by_id[p.id].description == p.description

    # small pages: the SDK iterator must walk every page and stop cleanly at the end
    pager = client.projects.list(page_size=2)
    assert pager.response.count == len(listed_ids)
    assert len(pager.items) == 2
    assert pager.response.previous is None
    assert pager.response.next is not None and "page=2" in pager.response.next
    paged_ids = [p.id for p in pager]
    assert len(paged_ids) == len(set(paged_ids)), "duplicate projects across pages"
    assert set(paged_ids) == set(listed_ids)

    # newest first
    newest_first = [i for i in listed_ids if i in created_ids]
    assert newest_first == sorted(created_ids, reverse=True)


# ---------------------------------------------------------------------------
# import + task listing
# ---------------------------------------------------------------------------


def test_import_tasks_summary_and_list(client: LabelStudio):
    project = new_project(client)
    tasks = [
        {"data": {"text": "plain task", "n": 1}},
        {
            "data": {"text": "annotated task", "n": 2},
            "annotations": [{"result": choice("Positive")}],
        },
        {"text": "x", "n": 3},  # a bare data object: the whole object becomes `data`
    ]
    raw = client.projects.with_raw_response.import_tasks(project.id, request=tasks)
    assert raw.status_code == 201
    summary = raw.data
    assert summary.task_count == 3
    assert summary.annotation_count == 1
    body = raw.response.json()
    assert body["prediction_count"] == 0
    assert isinstance(body["duration"], float)
    for key in ("file_upload_ids", "could_be_tasks_list", "found_formats", "data_columns"):
        assert key in body, f"import summary lacks {key!r}: {body}"

    pager = client.tasks.list(project=project.id)
    assert pager.response.total == 3
    assert pager.response.total_annotations == 1
    assert pager.response.total_predictions == 0
    listed = list(pager)
    assert len(listed) == 3
    by_n = {t.data["n"]: t for t in listed}
    assert by_n[1].data == {"text": "plain task", "n": 1}
    assert by_n[2].data == {"text": "annotated task", "n": 2}
    assert by_n[3].data == {"text": "x", "n": 3}
    for t in listed:
        assert t.project == project.id
        assert_utc_datetime(t.created_at, "task.created_at")
    assert sorted(t.inner_id for t in listed) == [1, 2, 3]

    annotated = by_n[2]
    assert annotated.total_annotations == 1
    assert annotated.is_labeled is True
    assert annotated.annotations is not None and len(annotated.annotations) == 1
    assert annotated.annotations[0]["result"] == choice("Positive")
    assert by_n[1].total_annotations == 0
    assert by_n[1].annotations == []

    anns = client.annotations.list(annotated.id)
    assert len(anns) == 1
    assert anns[0].result == choice("Positive")
    assert anns[0].task == annotated.id

    assert client.projects.get(project.id).task_number == 3


def test_import_meta_and_predictions(client: LabelStudio):
    project = new_project(client)
    raw = client.projects.with_raw_response.import_tasks(
        project.id,
        request=[
            {"data": {"text": "with meta"}, "meta": {"source": "import", "batch": 7}},
            {
                "data": {"text": "with prediction"},
                "predictions": [{"result": choice("Negative"), "score": 0.25, "model_version": "m1"}],
            },
        ],
    )
    body = raw.response.json()
    assert (body["task_count"], body["annotation_count"], body["prediction_count"]) == (2, 0, 1), body
    pager = client.tasks.list(project=project.id)
    assert pager.response.total == 2
    assert pager.response.total_predictions == 1
    by_text = {t.data["text"]: t for t in pager}
    assert by_text["with meta"].meta == {"source": "import", "batch": 7}
    predicted = by_text["with prediction"]
    assert predicted.total_predictions == 1
    assert predicted.total_annotations == 0
    assert len(predicted.predictions) == 1
    assert predicted.predictions[0].result == choice("Negative")
    assert predicted.predictions[0].score == 0.25
    assert predicted.predictions[0].model_version == "m1"


def test_task_list_fields_task_only(client: LabelStudio):
    """Without fields=all the list items carry no annotations/predictions (contract 7.3)."""
    project = new_project(client)
    client.projects.import_tasks(
        project.id, request=[{"data": {"text": "a"}, "annotations": [{"result": choice("Positive")}]}]
    )
    status, body, _ = raw_request(client, "GET", f"/api/tasks/?project={project.id}&fields=task_only")
    assert status == 200, body
    items = body["tasks"]
    assert len(items) == 1
    assert "annotations" not in items[0] and "predictions" not in items[0], sorted(items[0])
    assert items[0]["total_annotations"] == 1
    assert items[0]["data"] == {"text": "a"}
    status, body, _ = raw_request(client, "GET", f"/api/tasks/?project={project.id}&fields=all")
    assert status == 200, body
    full = body["tasks"]
    assert [a["result"] for a in full[0]["annotations"]] == [choice("Positive")]
    assert full[0]["predictions"] == []


def test_import_return_task_ids(client: LabelStudio):
    project = new_project(client)
    summary = client.projects.import_tasks(
        project.id,
        request=[{"data": {"text": f"t{i}"}} for i in range(4)],
        return_task_ids=True,
    )
    assert summary.task_count == 4
    task_ids = getattr(summary, "task_ids", None)
    assert isinstance(task_ids, list) and len(task_ids) == 4
    listed = {t.id: t.data["text"] for t in client.tasks.list(project=project.id)}
    assert set(listed) == set(task_ids)


def test_import_empty_list_is_400(client: LabelStudio):
    project = new_project(client)
    with pytest.raises(ApiError) as ei:
        client.projects.import_tasks(project.id, request=[])
    assert_api_error(ei.value, 400, "Validation error")
    assert ei.value.body["validation_errors"] == {"non_field_errors": ["load_tasks: No tasks added"]}


def test_import_into_unknown_project_is_404(client: LabelStudio):
    with pytest.raises(ApiError) as ei:
        client.projects.import_tasks(987654321, request=[{"data": {"text": "x"}}])
    assert ei.value.status_code == 404


def test_task_list_pagination_130(client: LabelStudio):
    project = new_project(client)
    n_tasks = 130
    summary = client.projects.import_tasks(
        project.id, request=[{"data": {"text": f"task {i}", "n": i}} for i in range(n_tasks)]
    )
    assert summary.task_count == n_tasks

    # default page size (100): two pages, then the SDK stops on an empty page or a 404
    pager = client.tasks.list(project=project.id)
    assert pager.response.total == n_tasks
    assert len(pager.items) == 100
    tasks = list(pager)
    assert len(tasks) == n_tasks
    assert len({t.id for t in tasks}) == n_tasks, "duplicate tasks across pages"
    assert sorted(t.data["n"] for t in tasks) == list(range(n_tasks))
    for t in tasks:
        assert t.data == {"text": f"task {t.data['n']}", "n": t.data["n"]}

    # explicit page size: 50 + 50 + 30
    pager = client.tasks.list(project=project.id, page_size=50)
    assert pager.response.total == n_tasks
    assert len(pager.items) == 50
    tasks50 = list(pager)
    assert len(tasks50) == n_tasks
    assert {t.id for t in tasks50} == {t.id for t in tasks}

    # a page beyond the end: 404 "Invalid page." (the iterator swallows it, a direct call raises)
    with pytest.raises(ApiError) as ei:
        client.tasks.list(project=project.id, page=3, page_size=100)
    assert_api_error(ei.value, 404, "Invalid page.")

    assert client.projects.get(project.id).task_number == n_tasks

    # tasks of other projects are not listed
    other = new_project(client)
    assert list(client.tasks.list(project=other.id)) == []


def test_task_list_unknown_project_is_404(client: LabelStudio):
    with pytest.raises(ApiError) as ei:
        list(client.tasks.list(project=987654321))
    # the SDK pager swallows 404 only while iterating; the first page is fetched eagerly
    assert_api_error(ei.value, 404, "No Project matches the given query.")


# ---------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------


def test_task_create_get_update_delete(client: LabelStudio):
    project = new_project(client)
    created = client.tasks.create(project=project.id, data={"text": "created via sdk", "k": [1, 2]})
    assert isinstance(created.id, int)
    assert created.project == project.id
    assert created.data == {"text": "created via sdk", "k": [1, 2]}
    assert created.meta == {}
    assert created.inner_id == 1
    assert created.total_annotations == 0
    assert created.is_labeled is False
    assert_utc_datetime(created.created_at, "task.created_at")
    created_updated_at = assert_utc_datetime(created.updated_at, "task.updated_at")

    second = client.tasks.create(project=project.id, data={"text": "second"}, meta={"source": "sdk"})
    assert second.inner_id == 2
    assert second.meta == {"source": "sdk"}

    got = client.tasks.get(str(created.id))
    assert got.id == created.id
    assert got.data == {"text": "created via sdk", "k": [1, 2]}
    assert got.project == project.id
    assert got.annotations == []
    assert got.predictions == []

    updated = client.tasks.update(str(created.id), data={"text": "updated via sdk"})
    assert updated.id == created.id
    assert updated.data == {"text": "updated via sdk"}
    assert updated.annotations == [] and updated.predictions == []
    assert assert_utc_datetime(updated.updated_at, "task.updated_at") >= created_updated_at
    meta_only = client.tasks.update(str(created.id), meta={"reviewed": True})
    assert meta_only.meta == {"reviewed": True}
    assert meta_only.data == {"text": "updated via sdk"}
    assert client.tasks.get(str(created.id)).data == {"text": "updated via sdk"}
    # the other task is untouched
    assert client.tasks.get(str(second.id)).data == {"text": "second"}

    ann = client.annotations.create(created.id, result=choice("Negative"))

    client.tasks.delete(str(created.id))
    with pytest.raises(ApiError) as ei:
        client.tasks.get(str(created.id))
    assert_api_error(ei.value, 404, "No Task matches the given query.")
    # annotations go with their task
    with pytest.raises(ApiError) as ei:
        client.annotations.get(ann.id)
    assert_api_error(ei.value, 404, "No Annotation matches the given query.")

    remaining = [t.id for t in client.tasks.list(project=project.id)]
    assert remaining == [second.id]


RICH_DATA = {
    "text": "héllo ✓ 日本語 \u2028 \"quoted\" \\ back\nslash",
    "nested": {"list": [1, 2.5, -3, True, False, None, "s"], "empty": {}, "deep": {"a": {"b": [[]]}}},
    "big": 9007199254740993,
    "neg": -42,
    "float": 0.1,
    "emoji": "🙂",
}


def test_rich_data_roundtrip(client: LabelStudio):
    """Task data and annotation results come back exactly as sent (JSON values, unicode, big ints)."""
    project = new_project(client)
    task = client.tasks.create(project=project.id, data=RICH_DATA)
    assert task.data == RICH_DATA
    assert client.tasks.get(str(task.id)).data == RICH_DATA
    client.projects.import_tasks(project.id, request=[{"data": RICH_DATA}, dict(RICH_DATA)])
    listed = list(client.tasks.list(project=project.id))
    assert [t.data for t in listed] == [RICH_DATA] * 3

    result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Positive"]},
               "meta": {"note": RICH_DATA["text"], "n": RICH_DATA["big"]}, "id": "r-ü1"}]
    ann = client.annotations.create(task.id, result=result)
    assert ann.result == result
    assert client.annotations.get(ann.id).result == result


def test_task_create_without_data_is_400(client: LabelStudio, server: Server):
    # The SDK requires `data`, so go around it for the validation error.
    project = new_project(client)
    status, body, _ = http_json(
        "POST",
        f"{server.base_url}/api/tasks/",
        headers={"Authorization": f"Token {server.token}"},
        body={"project": project.id},
    )
    assert status == 400, body
    assert body["validation_errors"] == {"data": ["This field is required."]}


def test_delete_project_deletes_its_tasks(client: LabelStudio):
    project = new_project(client)
    task = client.tasks.create(project=project.id, data={"text": "doomed"})
    ann = client.annotations.create(task.id, result=choice("Positive"))
    client.projects.delete(project.id)
    with pytest.raises(ApiError) as ei:
        client.tasks.get(str(task.id))
    assert_api_error(ei.value, 404, "No Task matches the given query.")
    with pytest.raises(ApiError) as ei:
        client.annotations.get(ann.id)
    assert_api_error(ei.value, 404, "No Annotation matches the given query.")


# ---------------------------------------------------------------------------
# annotations
# ---------------------------------------------------------------------------


def test_annotation_create_list_get_update_delete(client: LabelStudio):
    me = client.users.whoami()
    project = new_project(client)
    task = client.tasks.create(project=project.id, data={"text": "to annotate"})

    created = client.annotations.create(task.id, result=choice("Positive"), lead_time=1.5)
    assert isinstance(created.id, int)
    assert created.result == choice("Positive")
    assert created.lead_time == 1.5
    assert created.task == task.id
    assert created.project == project.id
    assert created.completed_by == me.id
    assert created.was_cancelled is False
    assert created.ground_truth is False
    assert_utc_datetime(created.created_at, "annotation.created_at")
    ann_updated_at = assert_utc_datetime(created.updated_at, "annotation.updated_at")

    t = client.tasks.get(str(task.id))
    assert t.total_annotations == 1
    assert t.is_labeled is True
    assert [a["id"] for a in t.annotations] == [created.id]

    second = client.annotations.create(task.id, result=choice("Negative"))
    listed = client.annotations.list(task.id)
    assert [a.id for a in listed] == [created.id, second.id]
    assert listed[0].result == choice("Positive")
    assert listed[1].result == choice("Negative")

    got = client.annotations.get(created.id)
    assert got.id == created.id
    assert got.result == choice("Positive")
    assert got.lead_time == 1.5
    assert got.task == task.id

    time.sleep(0.01)  # make sure a refreshed updated_at is distinguishable
    updated = client.annotations.update(created.id, result=choice("Negative"), lead_time=3.0)
    assert updated.id == created.id
    assert updated.result == choice("Negative")
    assert updated.lead_time == 3.0
    assert updated.task == task.id
    assert assert_utc_datetime(updated.updated_at, "annotation.updated_at") > ann_updated_at
    assert updated.updated_by == me.id

    got = client.annotations.get(created.id)
    assert got.result == choice("Negative")
    assert got.lead_time == 3.0

    # partial update: only lead_time
    client.annotations.update(created.id, lead_time=4.25)
    got = client.annotations.get(created.id)
    assert got.lead_time == 4.25
    assert got.result == choice("Negative")

    client.annotations.delete(created.id)
    with pytest.raises(ApiError) as ei:
        client.annotations.get(created.id)
    assert_api_error(ei.value, 404, "No Annotation matches the given query.")
    assert [a.id for a in client.annotations.list(task.id)] == [second.id]
    assert client.tasks.get(str(task.id)).total_annotations == 1


def test_annotation_lead_time_mixed_with_null(client: LabelStudio):
    """Annotations with and without lead_time, interleaved (statement reuse with NULL vs float)."""
    project = new_project(client)
    task = client.tasks.create(project=project.id, data={"text": "timing"})
    expected = []
    for lead_time in (None, 1.5, None, 2.75, 7.0, None, 0.5):
        kwargs = {} if lead_time is None else {"lead_time": lead_time}
        a = client.annotations.create(task.id, result=choice("Positive"), **kwargs)
        assert a.lead_time == lead_time
        expected.append((a.id, lead_time))
    assert [(a.id, a.lead_time) for a in client.annotations.list(task.id)] == expected

    no_time = expected[0][0]
    assert client.annotations.update(no_time, lead_time=9.5).lead_time == 9.5
    assert client.annotations.get(no_time).lead_time == 9.5
    assert client.annotations.update(no_time, result=choice("Negative")).lead_time == 9.5


def test_cancelled_annotation_not_in_task_annotation_list(client: LabelStudio):
    project = new_project(client)
    task = client.tasks.create(project=project.id, data={"text": "skip me"})
    kept = client.annotations.create(task.id, result=choice("Positive"))
    skipped = client.annotations.create(task.id, result=[], was_cancelled=True)
    assert skipped.was_cancelled is True
    assert [a.id for a in client.annotations.list(task.id)] == [kept.id]
    # but the task detail lists all annotations, cancelled included
    detail = client.tasks.get(str(task.id))
    assert sorted(a["id"] for a in detail.annotations) == sorted([kept.id, skipped.id])
    assert detail.cancelled_annotations == 1
    assert detail.total_annotations == 1


def test_annotation_on_unknown_task_is_404(client: LabelStudio):
    with pytest.raises(ApiError) as ei:
        client.annotations.create(987654321, result=choice("Positive"))
    assert_api_error(ei.value, 404, "No Task matches the given query.")


# ---------------------------------------------------------------------------
# users / auth
# ---------------------------------------------------------------------------


def test_whoami(client: LabelStudio):
    me = client.users.whoami()
    assert me.email == ADMIN_EMAIL
    assert isinstance(me.id, int)
    assert me.initials == "ad"
    assert me.active_organization is not None
    assert_utc_datetime(me.date_joined, "whoami.date_joined")


def test_get_current_user(client: LabelStudio):
    # Enterprise-only in LS 1.23.2; the contract recommends serving the whoami object here (7.5).
    me = client.users.whoami()
    cur = client.users.get_current_user()
    assert cur.email == ADMIN_EMAIL
    assert cur.id == me.id
    assert isinstance(cur.username, str)


def test_get_legacy_token(client: LabelStudio, server: Server):
    assert client.users.get_token().token == server.token


def test_pat_list_blacklist_and_recreate(server: Server, pat_token: str):
    """PAT lifecycle through the SDK's tokens client (contract 1.2)."""
    admin = make_client(server, server.token)
    header_payload = pat_token.rsplit(".", 1)[0]
    assert [t.token for t in admin.tokens.list()] == [header_payload]

    refreshed = admin.tokens.refresh(refresh=pat_token)
    assert jwt.decode(refreshed.access, options={"verify_signature": False})["token_type"] == "access"

    admin.tokens.blacklist(refresh=pat_token)
    server.pat = None  # later tests get a fresh PAT even if this test fails below
    with pytest.raises(ApiError) as ei:
        make_client(server, pat_token).users.whoami()
    assert ei.value.status_code == 401
    assert ei.value.body["detail"] == "Token is blacklisted", ei.value.body
    assert admin.tokens.list() == []

    # a new PAT can be created now; later tests use it
    server.pat = create_pat(server)
    assert server.pat != pat_token
    assert make_client(server, server.pat).users.whoami().email == ADMIN_EMAIL


def test_sdk_auth_mode(client: LabelStudio, auth_kind: str, server: Server, pat_token: str):
    """The SDK really takes the intended auth path (legacy Token vs. PAT -> refresh -> Bearer)."""
    tokens = client._client_wrapper._tokens_client
    headers = client._client_wrapper.get_headers()
    if auth_kind == "token":
        assert tokens._use_legacy_token is True
        assert headers["Authorization"] == f"Token {server.token}"
        return
    claims = jwt.decode(pat_token, options={"verify_signature": False})
    assert claims["token_type"] == "refresh"
    assert isinstance(claims["exp"], int) and claims["exp"] > time.time() + 86400 * 365
    assert isinstance(claims["user_id"], str)
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])
    assert tokens._use_legacy_token is False
    # get_headers() refreshed the access token through POST /api/token/refresh/
    assert headers["Authorization"].startswith("Bearer ")
    access = headers["Authorization"][len("Bearer "):]
    a = jwt.decode(access, options={"verify_signature": False})
    assert a["token_type"] == "access"
    assert 0 < a["exp"] - time.time() <= 300 + 5
    assert a["user_id"] == claims["user_id"]
    assert client.users.whoami().email == ADMIN_EMAIL


def test_pat_cannot_be_used_as_bearer(server: Server, pat_token: str):
    status, body, _ = http_json(
        "GET",
        f"{server.base_url}/api/current-user/whoami",
        headers={"Authorization": f"Bearer {pat_token}"},
    )
    assert status == 401, body
    assert body["detail"] == "Authentication credentials were not provided."


def test_second_pat_is_409(server: Server, pat_token: str):
    status, body, _ = http_json(
        "POST",
        f"{server.base_url}/api/token/",
        headers={"Authorization": f"Token {server.token}"},
    )
    assert status == 409, body
    assert body["detail"] == "You already have a valid token. Please revoke it before creating a new one."


def test_invalid_token_is_401(server: Server, auth_kind: str):
    if auth_kind == "token":
        bad = make_client(server, "0123456789abcdef" * 2 + "deadbeef")
        with pytest.raises(ApiError) as ei:
            bad.users.whoami()
        assert_api_error(ei.value, 401, "Invalid token.")
        with pytest.raises(ApiError) as ei:
            bad.projects.list()
        assert_api_error(ei.value, 401, "Invalid token.")
    else:
        # A well-formed, unexpired refresh JWT signed with the wrong key: the SDK's own
        # POST /api/token/refresh/ must be refused with 401.
        forged = jwt.encode(
            {
                "token_type": "refresh",
                "exp": int(time.time()) + 3600,
                "iat": int(time.time()),
                "jti": uuid.uuid4().hex,
                "user_id": "1",
            },
            "not-the-server-secret-" + secrets.token_hex(16),
            algorithm="HS256",
        )
        bad = make_client(server, forged)
        with pytest.raises(ApiError) as ei:
            bad.users.whoami()
        assert ei.value.status_code == 401, ei.value.body
        assert ei.value.body["detail"] == "Token is invalid", ei.value.body


def test_missing_credentials_is_401(server: Server):
    status, body, headers = http_json("GET", f"{server.base_url}/api/projects/")
    assert status == 401, body
    assert body["detail"] == "Authentication credentials were not provided."
    assert body["status_code"] == 401
    assert {k.lower(): v for k, v in headers.items()}.get("www-authenticate") == "Token"


def test_x_api_key_header(server: Server):
    """The SDK's X-Api-Key mode sends the legacy key in X-Api-Key instead of Authorization."""
    c = make_client(server, server.token, headers={"X-Api-Key": server.token})
    assert "Authorization" not in c._client_wrapper.get_headers()
    assert c.users.whoami().email == ADMIN_EMAIL
    p = c.projects.create(title=unique_title("xapikey"))
    assert c.projects.get(p.id).title == p.title


# ---------------------------------------------------------------------------
# wire shapes (contract 7.x key lists), fetched with the SDK client's own auth header
# ---------------------------------------------------------------------------

PROJECT_KEYS = """id title description label_config expert_instruction show_instruction show_skip_button
enable_empty_annotation show_annotation_history organization color maximum_annotations is_published
model_version is_draft created_by created_at min_annotations_to_start_training
start_training_on_annotation_update show_collab_predictions num_tasks_with_annotations task_number
useful_annotation_number ground_truth_number skipped_annotations_number total_annotations_number
total_predictions_number sampling show_ground_truth_first annotator_evaluation_enabled show_overlap_first
overlap_cohort_percentage task_data_login task_data_password control_weights parsed_label_config
evaluate_predictions_automatically config_has_control_tags skip_queue reveal_preannotations_interactively
pinned_at finished_task_number queue_total queue_done config_suitable_for_bulk_annotation state""".split()

TASK_LIST_KEYS = """id drafts annotators inner_id cancelled_annotations total_annotations total_predictions
annotations_results predictions_results file_upload storage_filename annotations_ids
predictions_model_versions updated_by data meta created_at updated_at is_labeled overlap comment_count
unresolved_comment_count last_comment_updated_at project comment_authors""".split()

TASK_LIST_ALL_EXTRA_KEYS = "predictions annotations completed_at predictions_score avg_lead_time draft_exists".split()

TASK_DETAIL_KEYS = """id predictions annotations drafts annotators inner_id cancelled_annotations total_annotations
total_predictions completed_at annotations_results predictions_results predictions_score file_upload
storage_filename annotations_ids predictions_model_versions avg_lead_time draft_exists updated_by data meta
created_at updated_at is_labeled overlap comment_count unresolved_comment_count last_comment_updated_at
project comment_authors""".split()

TASK_CREATE_KEYS = """id data meta created_at updated_at is_labeled overlap inner_id total_annotations
cancelled_annotations total_predictions comment_count unresolved_comment_count last_comment_updated_at
project updated_by file_upload comment_authors""".split()

ANNOTATION_KEYS = """id result created_username created_ago completed_by was_cancelled ground_truth created_at
updated_at draft_created_at lead_time import_id last_action bulk_created task project updated_by
parent_prediction parent_annotation last_created_by""".split()

WHOAMI_KEYS = """id first_name last_name username email last_activity custom_hotkeys avatar initials phone
active_organization active_organization_meta allow_newsletters date_joined permissions""".split()


def missing(obj: dict, keys: list[str]) -> list[str]:
    return [k for k in keys if k not in obj]


def test_wire_key_sets(client: LabelStudio):
    project = new_project(client)
    status, proj, _ = raw_request(client, "GET", f"/api/projects/{project.id}/")
    assert status == 200, proj
    assert missing(proj, PROJECT_KEYS) == [], "project object"
    assert proj["created_by"] == {
        "id": proj["created_by"]["id"],
        "first_name": "",
        "last_name": "",
        "email": ADMIN_EMAIL,
        "avatar": None,
    }

    status, task, _ = raw_request(client, "POST", "/api/tasks/", {"project": project.id, "data": {"text": "k"}})
    assert status == 201, task
    assert missing(task, TASK_CREATE_KEYS) == [], "task create response"

    status, ann, _ = raw_request(
        client, "POST", f"/api/tasks/{task['id']}/annotations/", {"result": choice("Positive"), "lead_time": 2}
    )
    assert status == 201, ann
    assert missing(ann, ANNOTATION_KEYS) == [], "annotation object"
    me = client.users.whoami()
    assert ann["completed_by"] == me.id

    status, detail, _ = raw_request(client, "GET", f"/api/tasks/{task['id']}/")
    assert status == 200, detail
    assert missing(detail, TASK_DETAIL_KEYS) == [], "task detail"
    assert detail["annotations"][0]["completed_by"] == {
        "id": me.id,
        "first_name": "",
        "last_name": "",
        "avatar": None,
        "email": ADMIN_EMAIL,
        "initials": "ad",
    }

    status, page, _ = raw_request(client, "GET", f"/api/tasks/?project={project.id}")
    assert status == 200, page
    assert set(page) == {"total_annotations", "total_predictions", "total", "tasks"}
    item = page["tasks"][0]
    assert missing(item, TASK_LIST_KEYS) == [], "task list item"
    assert item["annotators"] == [me.id]
    assert item["annotations_ids"] == str(ann["id"])
    assert item["updated_by"] == [{"user_id": me.id}]

    status, page, _ = raw_request(client, "GET", f"/api/tasks/?project={project.id}&fields=all")
    assert status == 200, page
    assert missing(page["tasks"][0], TASK_LIST_KEYS + TASK_LIST_ALL_EXTRA_KEYS) == [], "task list item, fields=all"

    status, plist, _ = raw_request(client, "GET", "/api/projects/?page_size=1")
    assert status == 200, plist
    assert set(plist) == {"count", "next", "previous", "results"}

    status, who, _ = raw_request(client, "GET", "/api/current-user/whoami")
    assert status == 200, who
    assert missing(who, WHOAMI_KEYS) == [], "whoami"
    assert len(who["permissions"]) == 44
    assert who["active_organization_meta"] == {"title": "Label Studio", "email": ADMIN_EMAIL}
