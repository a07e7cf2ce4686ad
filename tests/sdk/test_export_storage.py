"""Local-files export storage through the official label-studio-sdk 2.1.2.

Contract: shared/label-studio-api-contract.md, sections 3 (endpoints), 4 (sync semantics) and
5 (what gets written). Each test that takes ``client`` runs for every backend x auth kind.

The server exports in the background (sync jobs and auto-export on annotation save), so every
check of the storage state or of the files on disk polls with a bounded wait
(``POLL_TIMEOUT_S``); nothing here asserts on timing. Every test writes into its own fresh
directory under the server's ``LOCAL_FILES_DOCUMENT_ROOT``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from conftest import ADMIN_EMAIL, Server, http_json

POLL_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05

LABEL_CONFIG = (
    '<View>'
    '<Text name="text" value="$text"/>'
    '<Choices name="sentiment" toName="text">'
    '<Choice value="Positive"/><Choice value="Negative"/>'
    '</Choices>'
    '</View>'
)

# contract 3.2, exact list and order
EXPORT_TYPES = [
    ("s3", "AWS S3"),
    ("gcs", "Google Cloud Storage"),
    ("azure", "Microsoft Azure"),
    ("redis", "Redis"),
    ("localfiles", "Local files"),
]

# contract 5.3: exact key order of an annotation-mode document and of its nested task
DOC_KEYS = [
    "id", "result", "created_username", "created_ago", "completed_by", "task", "was_cancelled",
    "ground_truth", "created_at", "updated_at", "draft_created_at", "lead_time", "import_id",
    "last_action", "bulk_created", "project", "updated_by", "parent_prediction",
    "parent_annotation", "last_created_by",
]
DOC_TASK_KEYS = [
    "id", "data", "meta", "created_at", "updated_at", "is_labeled", "allow_skip", "overlap",
    "inner_id", "total_annotations", "cancelled_annotations", "total_predictions",
    "precomputed_agreement", "comment_count", "unresolved_comment_count",
    "last_comment_updated_at", "project", "updated_by", "file_upload", "comment_authors",
]
# Annotation fields that the exported document carries with the same value as the API object.
DOC_SAME_AS_API = [
    "id", "result", "created_username", "was_cancelled", "ground_truth", "created_at", "updated_at",
    "draft_created_at", "lead_time", "import_id", "last_action", "bulk_created", "project",
    "updated_by", "parent_prediction", "parent_annotation", "last_created_by",
]

# Non-ASCII (BMP, astral, U+2028), quotes, backslash, control char, big int, floats.
UNICODE_TEXT = "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \U0001F642 \u2028 \"q\" \\ b\nc"
UNICODE_ESCAPES = [b"h\\u00e9llo w\\u00f6rld \\u2713 \\u65e5\\u672c\\u8a9e \\ud83d\\ude42 \\u2028"]
RICH_DATA = {
    "text": UNICODE_TEXT,
    "nested": {"list": [1, 2.5, -3, True, False, None, "s"], "empty": {}, "deep": {"a": {"b": [[]]}}},
    "big": 9007199254740993,
    "float": 0.1,
}

META_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{6})?\+00:00$")
TERMINAL = ("completed", "completed_with_errors", "failed")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def choice(value: str) -> list[dict]:
    return [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [value]}}]


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:12]}"


def new_project(client: LabelStudio):
    return client.projects.create(title=unique("export"), label_config=LABEL_CONFIG)


@pytest.fixture
def files_root(server: Server) -> Path:
    """The server's LOCAL_FILES_DOCUMENT_ROOT."""
    return server.files_dir


@pytest.fixture
def make_dir(files_root: Path) -> Callable[[str], Path]:
    """Creates a fresh, uniquely named directory under the document root."""

    def make(prefix: str = "out") -> Path:
        d = files_root / f"{prefix}-{uuid.uuid4().hex[:12]}"
        d.mkdir()
        return d

    return make


def raw_request(client: LabelStudio, method: str, path: str, body: object = None):
    """Plain HTTP with the SDK client's own auth header, for wire-level values."""
    wrapper = client._client_wrapper
    auth = {"Authorization": wrapper.get_headers()["Authorization"]}
    return http_json(method, wrapper.get_base_url() + path, headers=auth, body=body)


def api_annotation(client: LabelStudio, ann_id: int) -> dict:
    status, body, _ = raw_request(client, "GET", f"/api/annotations/{ann_id}/")
    assert status == 200, f"GET /api/annotations/{ann_id}/: {status} {body!r}"
    return body


def api_task(client: LabelStudio, task_id: int) -> dict:
    status, body, _ = raw_request(client, "GET", f"/api/tasks/{task_id}/")
    assert status == 200, f"GET /api/tasks/{task_id}/: {status} {body!r}"
    return body


def assert_api_error(exc: ApiError, status: int, detail: Optional[str] = None) -> dict:
    assert exc.status_code == status, f"expected HTTP {status}, got {exc.status_code}: {exc.body!r}"
    body = exc.body
    assert isinstance(body, dict), f"error body is not a JSON object: {body!r}"
    for key in ("id", "status_code", "version", "detail", "exc_info"):
        assert key in body, f"error body lacks {key!r}: {body!r}"
    assert isinstance(body["id"], str) and UUID_RE.match(body["id"]), body
    assert body["status_code"] == status, body
    if detail is not None:
        assert body["detail"] == detail, body
    return body


def assert_non_field_error(exc: ApiError, message: str) -> None:
    """400 with LS's validation shape and exactly `message` under non_field_errors (contract 2.2)."""
    body = assert_api_error(exc, 400, "Validation error")
    assert body.get("validation_errors") == {"non_field_errors": [message]}, (
        f"expected non_field_errors [{message!r}], got {body!r}"
    )


def not_subdir_msg(p: str, root: Path) -> str:
    return (
        f'Absolute local path "{p}" must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT="{root}" '
        f'by security reasons. For example: "{root}/dataset1".'
    )


def same_as_root_msg(root: Path) -> str:
    return (
        f'Absolute local path "{root}" cannot be the same as LOCAL_FILES_DOCUMENT_ROOT="{root}" by security '
        f'reasons. Please add a subdirectory. For example: "{root}/dataset1".'
    )


def missing_msg(p: str) -> str:
    return f'Absolute local path "{p}" does not exist'


PATH_NOT_SET = "Path must be set for Local Files storage"


def wait_until(probe: Callable[[], Any], what: str, timeout: float = POLL_TIMEOUT_S) -> Any:
    """Calls `probe` until it returns a truthy value (returned) or `timeout` passes (test fails).
    `probe` may raise AssertionError/ValueError/OSError to mean "not yet"; the last one is reported."""
    deadline = time.monotonic() + timeout
    last: Any = "never probed"
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except (AssertionError, ValueError, OSError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last observation: {last}", pytrace=False)
        time.sleep(POLL_INTERVAL_S)


def wait_sync_done(client: LabelStudio, storage_id: int, *, attempts: int):
    """Polls GET until the storage has finished the sync numbered `attempts`; requires `completed`."""

    def probe():
        s = client.export_storage.local.get(storage_id)
        meta = s.meta or {}
        if s.status in TERMINAL and meta.get("attempts") == attempts:
            return s
        return None

    def describe() -> str:
        s = client.export_storage.local.get(storage_id)
        return f"status={s.status!r} meta={s.meta!r} traceback={s.traceback!r}"

    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        s = probe()
        if s is not None:
            assert s.status == "completed", (
                f"sync #{attempts} of storage {storage_id} ended {s.status!r}: traceback={s.traceback!r} meta={s.meta!r}"
            )
            return s
        if time.monotonic() >= deadline:
            pytest.fail(
                f"storage {storage_id}: sync #{attempts} not finished after {POLL_TIMEOUT_S:.0f}s ({describe()})",
                pytrace=False,
            )
        time.sleep(POLL_INTERVAL_S)


def read_doc(path: Path) -> tuple[bytes, dict]:
    raw = path.read_bytes()
    return raw, json.loads(raw)


def wait_file(path: Path, what: str, check: Optional[Callable[[dict], bool]] = None) -> tuple[bytes, dict]:
    """Waits until `path` exists, parses, and satisfies `check`."""

    def probe():
        raw, doc = read_doc(path)
        if check is not None and not check(doc):
            return None
        return raw, doc

    return wait_until(probe, f"{what} ({path})")


def wait_gone(path: Path, what: str) -> None:
    wait_until(lambda: not path.exists(), f"{what} ({path} to disappear)")


def dir_names(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def assert_export_bytes(raw: bytes, where: str) -> None:
    """Contract 5.5: pure ASCII, indent 2, `": "` separators, LS key order, no trailing newline.
    Python's json.dumps(indent=2) (ensure_ascii) is exactly what LS writes."""
    non_ascii = [i for i, b in enumerate(raw) if b > 0x7F]
    assert not non_ascii, f"{where}: non-ASCII bytes at offsets {non_ascii[:10]}: {raw[:200]!r}"
    assert raw.startswith(b'{\n  "id": '), f"{where}: does not start with a 2-space indented id: {raw[:60]!r}"
    assert raw.endswith(b"}"), f"{where}: must end with '}}' and no newline, ends with {raw[-20:]!r}"
    expected = json.dumps(json.loads(raw), indent=2).encode("ascii")
    assert raw == expected, (
        f"{where}: bytes differ from json.dumps(indent=2, ensure_ascii=True) of the same document\n"
        f"got:\n{raw.decode('ascii', 'replace')}\nexpected:\n{expected.decode()}"
    )


def assert_export_doc(client: LabelStudio, doc: dict, ann_id: int, me, where: str) -> None:
    """Contract 5.3: the document for annotation `ann_id`, compared with the API's view of it."""
    assert list(doc) == DOC_KEYS, f"{where}: top-level keys/order {list(doc)} != {DOC_KEYS}"
    ann = api_annotation(client, ann_id)
    for key in DOC_SAME_AS_API:
        assert doc[key] == ann[key], f"{where}: {key!r} is {doc[key]!r} in the file, {ann[key]!r} in the API"
    assert doc["completed_by"] == {"id": me.id, "first_name": "", "last_name": "", "email": ADMIN_EMAIL}, (
        f"{where}: completed_by {doc['completed_by']!r}"
    )
    assert doc["created_username"] == f" {ADMIN_EMAIL}, {me.id}", f"{where}: created_username {doc['created_username']!r}"
    assert isinstance(doc["created_ago"], str) and "\u00a0" in doc["created_ago"], (
        f"{where}: created_ago {doc['created_ago']!r}"
    )

    task = doc["task"]
    assert isinstance(task, dict), f"{where}: task is not an object: {task!r}"
    assert list(task) == DOC_TASK_KEYS, f"{where}: task keys/order {list(task)} != {DOC_TASK_KEYS}"
    assert task["id"] == ann["task"], f"{where}: task.id {task['id']} != annotation's task {ann['task']}"
    api_t = api_task(client, ann["task"])
    for key in ("id", "data", "meta", "created_at", "inner_id", "project", "allow_skip", "overlap"):
        if key in api_t:
            assert task[key] == api_t[key], f"{where}: task.{key} {task[key]!r} != API {api_t[key]!r}"
    assert task["project"] == doc["project"], f"{where}: task.project {task['project']} != {doc['project']}"


def create_storage(client: LabelStudio, project_id: int, path: Path, **kwargs):
    kwargs.setdefault("title", unique("local"))
    return client.export_storage.local.create(project=project_id, path=str(path), **kwargs)


# ---------------------------------------------------------------------------
# types
# ---------------------------------------------------------------------------


def test_list_types(client: LabelStudio):
    types = client.export_storage.list_types()
    assert [(t.name, t.title) for t in types] == EXPORT_TYPES


# ---------------------------------------------------------------------------
# create + sync-on-create + the files on disk
# ---------------------------------------------------------------------------


def _populate(client: LabelStudio) -> tuple[Any, list[int]]:
    """A project with imported annotations, SDK-created ones (incl. a skipped one) and an
    unannotated task. Returns (project, all annotation ids)."""
    project = new_project(client)
    summary = client.projects.import_tasks(
        project.id,
        request=[
            {"data": {"text": "imported one", "n": 1}, "annotations": [{"result": choice("Positive")}]},
            {
                "data": {"text": "imported two \u00fc", "n": 2},
                "annotations": [{"result": choice("Negative")}, {"result": choice("Positive")}],
            },
            {"data": {"text": "no annotation", "n": 3}},
        ],
        return_task_ids=True,
    )
    assert summary.task_count == 3 and summary.annotation_count == 3, summary
    ids: list[int] = []
    for task_id in summary.task_ids:
        ids += [a.id for a in client.annotations.list(task_id)]
    assert len(ids) == 3, f"imported annotations not listed: {ids}"

    task = client.tasks.create(project=project.id, data=RICH_DATA)
    result = choice("Positive")
    result[0]["meta"] = {"note": UNICODE_TEXT}
    ids.append(client.annotations.create(task.id, result=result, lead_time=1.5).id)
    ids.append(client.annotations.create(task.id, result=choice("Negative"), lead_time=3).id)
    ids.append(client.annotations.create(task.id, result=[], was_cancelled=True).id)
    return project, ids


def test_create_syncs_and_writes_one_file_per_annotation(client: LabelStudio, make_dir, files_root: Path):
    me = client.users.whoami()
    project, ann_ids = _populate(client)
    out = make_dir("create")
    title = unique("create")

    created = client.export_storage.local.create(
        project=project.id, path=str(out) + "/", title=title, description="desc"
    )
    assert isinstance(created.id, int)
    assert created.status == "queued", f"create response: {created!r}"
    assert created.type == "localfiles"
    assert created.project == project.id
    assert created.path == str(out), "path is stored normalised, without the trailing slash"
    assert (created.title, created.description) == (title, "desc")
    assert created.synchronizable is True
    assert created.use_blob_urls is False
    assert created.last_sync is None and created.last_sync_count is None
    meta = created.meta
    assert isinstance(meta, dict) and meta.get("attempts") == 1, f"create meta: {meta!r}"
    assert isinstance(meta.get("time_queued"), str) and META_TS_RE.match(meta["time_queued"]), meta

    done = wait_sync_done(client, created.id, attempts=1)
    assert done.last_sync_count == len(ann_ids), f"last_sync_count {done.last_sync_count} != {len(ann_ids)}"
    assert done.last_sync is not None
    assert done.meta["total_annotations"] == len(ann_ids), done.meta
    for key in ("time_queued", "time_in_progress", "time_last_ping", "time_completed"):
        assert isinstance(done.meta.get(key), str) and META_TS_RE.match(done.meta[key]), f"meta.{key}: {done.meta!r}"
    assert isinstance(done.meta.get("duration"), float), done.meta

    # exactly one file per annotation, named by the id, no extension, nothing else (no temp files)
    assert dir_names(out) == {str(i) for i in ann_ids}, f"files in {out}: {sorted(dir_names(out))}"
    for ann_id in ann_ids:
        f = out / str(ann_id)
        raw, doc = read_doc(f)
        assert_export_bytes(raw, str(f))
        assert_export_doc(client, doc, ann_id, me, str(f))

    # the unicode task: escapes on disk, data intact after parsing
    rich_id = ann_ids[3]
    raw, doc = read_doc(out / str(rich_id))
    assert doc["task"]["data"] == RICH_DATA
    assert doc["result"][0]["meta"]["note"] == UNICODE_TEXT
    for esc in UNICODE_ESCAPES:
        assert raw.count(esc) >= 2, f"expected {esc!r} in task data and result of {out / str(rich_id)}"
    assert b"9007199254740993" in raw
    assert doc["lead_time"] == 1.5
    assert read_doc(out / str(ann_ids[4]))[1]["lead_time"] == 3.0
    skipped = read_doc(out / str(ann_ids[5]))[1]
    assert skipped["was_cancelled"] is True and skipped["result"] == []

    # nothing was written outside the storage's directory
    assert not (files_root / str(ann_ids[0])).exists()


def test_create_with_synchronizable_false_still_syncs(client: LabelStudio, make_dir):
    """Contract 3.5/4.5: the create-time sync runs regardless of `synchronizable`."""
    project, ann_ids = _populate(client)
    out = make_dir("nosync")
    created = create_storage(client, project.id, out, synchronizable=False)
    assert created.synchronizable is False
    assert created.status == "queued", f"create response: {created!r}"
    done = wait_sync_done(client, created.id, attempts=1)
    assert done.last_sync_count == len(ann_ids)
    assert dir_names(out) == {str(i) for i in ann_ids}

    with pytest.raises(ApiError) as ei:
        client.export_storage.local.sync(created.id)
    assert ei.value.status_code == 400, ei.value.body
    assert ei.value.body == {"message": f"Storage {created.id} is not synchronizable"}


# ---------------------------------------------------------------------------
# list / get / update / validate
# ---------------------------------------------------------------------------


def test_list_get_update(client: LabelStudio, make_dir):
    project = new_project(client)
    other = new_project(client)
    out = make_dir("crud")
    created = create_storage(client, project.id, out, description="before", can_delete_objects=True)
    done = wait_sync_done(client, created.id, attempts=1)
    assert done.last_sync_count == 0

    listed = client.export_storage.local.list(project=project.id)
    assert [s.id for s in listed] == [created.id], f"list(project={project.id}): {listed!r}"
    assert client.export_storage.local.list(project=other.id) == []

    got = client.export_storage.local.get(created.id)
    assert got == listed[0], f"get {got!r}\n!= list item {listed[0]!r}"
    assert (got.id, got.type, got.project, got.path) == (created.id, "localfiles", project.id, str(out))
    assert (got.title, got.description, got.can_delete_objects) == (created.title, "before", True)
    assert got.created_at == created.created_at

    # the SDK's update() sends only the given fields; LS rejects a PATCH without `path`,
    # labelport merges it with the stored storage (contract 3.8 [Rec]).
    new_title = unique("renamed")
    updated = client.export_storage.local.update(created.id, title=new_title)
    assert updated.id == created.id
    assert updated.title == new_title
    assert (updated.path, updated.description, updated.can_delete_objects, updated.project) == (
        str(out),
        "before",
        True,
        project.id,
    )
    assert updated.status == "completed", "PATCH does not touch the sync state"
    again = client.export_storage.local.get(created.id)
    assert (again.title, again.path, again.description, again.status) == (new_title, str(out), "before", "completed")
    assert again.meta == done.meta, "PATCH does not touch meta"

    # other fields, and moving to another valid directory
    out2 = make_dir("crud-moved")
    updated = client.export_storage.local.update(created.id, description="after", path=str(out2), can_delete_objects=False)
    assert (updated.title, updated.description, updated.path, updated.can_delete_objects) == (
        new_title,
        "after",
        str(out2),
        False,
    )
    assert client.export_storage.local.get(created.id).path == str(out2)


def test_update_to_bad_path_is_400_and_changes_nothing(client: LabelStudio, make_dir, files_root: Path):
    project = new_project(client)
    out = make_dir("badupdate")
    created = create_storage(client, project.id, out)
    wait_sync_done(client, created.id, attempts=1)
    outside = files_root.parent / f"outside-{uuid.uuid4().hex[:8]}"
    outside.mkdir()
    with pytest.raises(ApiError) as ei:
        client.export_storage.local.update(created.id, path=str(outside), title="never")
    assert_non_field_error(ei.value, not_subdir_msg(str(outside), files_root))
    got = client.export_storage.local.get(created.id)
    assert (got.path, got.title) == (str(out), created.title)


def test_validate(client: LabelStudio, make_dir, files_root: Path):
    project = new_project(client)
    out = make_dir("validate")

    # a good new config: 200, empty body (the SDK returns None); nothing is stored
    assert client.export_storage.local.validate(project=project.id, path=str(out), title="v") is None
    assert client.export_storage.local.list(project=project.id) == []

    outside = files_root.parent / f"outside-{uuid.uuid4().hex[:8]}"
    outside.mkdir()
    with pytest.raises(ApiError) as ei:
        client.export_storage.local.validate(project=project.id, path=str(outside))
    assert_non_field_error(ei.value, not_subdir_msg(str(outside), files_root))

    with pytest.raises(ApiError) as ei:
        client.export_storage.local.validate(project=project.id, path=str(out) + "/../../..")
    assert_non_field_error(ei.value, not_subdir_msg(str(files_root.parent.parent), files_root))

    with pytest.raises(ApiError) as ei:
        client.export_storage.local.validate(project=project.id)
    assert_non_field_error(ei.value, PATH_NOT_SET)

    # with `id`: the body is merged over the stored storage, and nothing is persisted
    created = create_storage(client, project.id, out, description="stored")
    before = wait_sync_done(client, created.id, attempts=1)
    other = make_dir("validate-other")
    assert (
        client.export_storage.local.validate(
            project=project.id, id=created.id, path=str(other), title="not saved", description="not saved"
        )
        is None
    )
    assert client.export_storage.local.validate(project=project.id, id=created.id, title="only a title") is None
    with pytest.raises(ApiError) as ei:
        client.export_storage.local.validate(project=project.id, id=created.id, path=str(outside), title="nope")
    assert_non_field_error(ei.value, not_subdir_msg(str(outside), files_root))
    after = client.export_storage.local.get(created.id)
    assert after == before, f"validate with id changed the storage:\nbefore {before!r}\nafter  {after!r}"
    assert dir_names(other) == set(), "validate wrote files"

    with pytest.raises(ApiError) as ei:
        client.export_storage.local.validate(project=project.id, id=987654321, path=str(out))
    assert_api_error(ei.value, 404)


# ---------------------------------------------------------------------------
# sync
# ---------------------------------------------------------------------------


def test_sync_counts_and_attempts(client: LabelStudio, make_dir):
    me = client.users.whoami()
    project, ann_ids = _populate(client)
    out = make_dir("sync")
    created = create_storage(client, project.id, out)
    wait_sync_done(client, created.id, attempts=1)

    # more annotations, imported (LS does not auto-export those) and through the SDK
    summary = client.projects.import_tasks(
        project.id,
        request=[{"data": {"text": "late import"}, "annotations": [{"result": choice("Negative")}]}],
        return_task_ids=True,
    )
    ann_ids += [a.id for a in client.annotations.list(summary.task_ids[0])]
    task = client.tasks.create(project=project.id, data={"text": "late sdk"})
    ann_ids.append(client.annotations.create(task.id, result=choice("Positive")).id)
    assert len(ann_ids) == 8

    for attempt in (2, 3):
        started = client.export_storage.local.sync(created.id)  # returns at once
        assert started.id == created.id
        assert started.status in ("queued", "in_progress", "completed"), f"sync response: {started!r}"
        assert started.meta["attempts"] == attempt, f"sync #{attempt} response meta: {started.meta!r}"
        done = wait_sync_done(client, created.id, attempts=attempt)
        assert done.last_sync_count == len(ann_ids), (
            f"sync #{attempt}: last_sync_count {done.last_sync_count} != {len(ann_ids)} annotations"
        )
        assert done.meta["total_annotations"] == len(ann_ids), done.meta
        assert done.last_sync is not None

    assert dir_names(out) == {str(i) for i in ann_ids}, f"files in {out}: {sorted(dir_names(out))}"
    for ann_id in ann_ids:
        raw, doc = read_doc(out / str(ann_id))
        assert_export_bytes(raw, str(out / str(ann_id)))
        assert_export_doc(client, doc, ann_id, me, str(out / str(ann_id)))


def test_sync_attempts_count_up_while_auto_exporting(client: LabelStudio, make_dir):
    """Each sync request increments `meta.attempts` by one and its completion keeps that value,
    also when the request lands while the worker is auto-exporting a fresh annotation."""
    project = new_project(client)
    task = client.tasks.create(project=project.id, data={"text": "busy"})
    out = make_dir("attempts")
    s = create_storage(client, project.id, out)
    wait_sync_done(client, s.id, attempts=1)
    ann_ids = []
    for attempt in range(2, 12):
        ann_ids.append(client.annotations.create(task.id, result=choice("Positive")).id)
        started = client.export_storage.local.sync(s.id)
        assert started.meta["attempts"] == attempt, f"sync response meta: {started.meta!r}"
        done = wait_sync_done(client, s.id, attempts=attempt)
        assert done.last_sync_count == len(ann_ids)
    assert dir_names(out) == {str(i) for i in ann_ids}


def _damage_and_resync(client: LabelStudio, make_dir, prefix: str, request_options=None) -> None:
    me = client.users.whoami()
    project, ann_ids = _populate(client)
    out = make_dir(prefix)
    created = create_storage(client, project.id, out)
    wait_sync_done(client, created.id, attempts=1)
    assert dir_names(out) == {str(i) for i in ann_ids}

    removed, garbled = ann_ids[0], ann_ids[1]
    (out / str(removed)).unlink()
    (out / str(garbled)).write_bytes(b"garbage")
    client.export_storage.local.sync(created.id, request_options=request_options)
    done = wait_sync_done(client, created.id, attempts=2)
    assert done.last_sync_count == len(ann_ids)

    problems = []
    if not (out / str(removed)).exists():
        problems.append(f"{removed}: removed on disk, not rewritten")
    if (out / str(garbled)).read_bytes() == b"garbage":
        problems.append(f"{garbled}: overwritten with garbage on disk, not rewritten")
    assert not problems, (
        f"after a completed sync (last_sync_count={done.last_sync_count}) the directory does not match the "
        f"database: {problems}; files: {sorted(dir_names(out))}"
    )
    assert dir_names(out) == {str(i) for i in ann_ids}
    for ann_id in (removed, garbled):
        raw, doc = read_doc(out / str(ann_id))
        assert_export_bytes(raw, str(out / str(ann_id)))
        assert_export_doc(client, doc, ann_id, me, str(out / str(ann_id)))


def test_sync_rewrites_files_removed_or_changed_on_disk(client: LabelStudio, make_dir):
    """Contract 4.6 [V]: a sync (the SDK's plain `sync(id)`) writes every annotation of the
    project, overwriting what is there, so the directory matches the database again."""
    _damage_and_resync(client, make_dir, "resync")


def test_full_sync_query_rewrites_files_removed_or_changed_on_disk(client: LabelStudio, make_dir):
    """labelport extension: `POST .../sync?full=true` forces a walk over every annotation."""
    _damage_and_resync(
        client, make_dir, "resync-full", request_options={"additional_query_parameters": {"full": "true"}}
    )


# ---------------------------------------------------------------------------
# auto-export on annotation save / delete
# ---------------------------------------------------------------------------


def test_auto_export_create_update_delete(client: LabelStudio, make_dir):
    me = client.users.whoami()
    project = new_project(client)
    task = client.tasks.create(project=project.id, data={"text": "auto \u00e9t\u00e9"})
    out_del = make_dir("auto-del")
    out_keep = make_dir("auto-keep")
    out_null = make_dir("auto-null")
    s_del = create_storage(client, project.id, out_del, can_delete_objects=True)
    s_keep = create_storage(client, project.id, out_keep, can_delete_objects=False)
    s_null = create_storage(client, project.id, out_null)
    for s in (s_del, s_keep, s_null):
        wait_sync_done(client, s.id, attempts=1)
    assert (s_del.can_delete_objects, s_keep.can_delete_objects, s_null.can_delete_objects) == (True, False, None)

    # create -> a file in every storage of the project, without calling sync
    ann = client.annotations.create(task.id, result=choice("Positive"), lead_time=2.5)
    for out in (out_del, out_keep, out_null):
        f = out / str(ann.id)
        raw, doc = wait_file(f, "auto-export of a new annotation")
        assert_export_bytes(raw, str(f))
        assert_export_doc(client, doc, ann.id, me, str(f))
        assert doc["task"]["data"] == {"text": "auto \u00e9t\u00e9"}
        assert b"auto \\u00e9t\\u00e9" in raw

    # update -> the same file is rewritten
    updated = client.annotations.update(ann.id, result=choice("Negative"))
    assert updated.result == choice("Negative")
    for out in (out_del, out_keep, out_null):
        f = out / str(ann.id)
        raw, doc = wait_file(f, "auto-export of an updated annotation", lambda d: d["result"] == choice("Negative"))
        assert_export_bytes(raw, str(f))
        assert_export_doc(client, doc, ann.id, me, str(f))
        assert dir_names(out) == {str(ann.id)}, f"files in {out}: {sorted(dir_names(out))}"

    # delete -> removed where can_delete_objects is true, kept where it is false or null
    client.annotations.delete(ann.id)
    wait_gone(out_del / str(ann.id), "deletion with can_delete_objects=True")
    # A later save exported to the keeping storages shows they have processed the deletion.
    marker = client.annotations.create(task.id, result=choice("Positive"))
    for out in (out_keep, out_null, out_del):
        wait_file(out / str(marker.id), "auto-export of the marker annotation")
    for out in (out_keep, out_null):
        assert (out / str(ann.id)).exists(), f"{out / str(ann.id)} was deleted although can_delete_objects is not true"
        assert read_doc(out / str(ann.id))[1]["result"] == choice("Negative")
    assert dir_names(out_del) == {str(marker.id)}


def test_auto_export_delete_task_cascades(client: LabelStudio, make_dir):
    """Contract 5.7: deleting a task deletes its annotations' files (can_delete_objects=True)."""
    project = new_project(client)
    doomed = client.tasks.create(project=project.id, data={"text": "doomed"})
    kept = client.tasks.create(project=project.id, data={"text": "kept"})
    out = make_dir("cascade")
    s = create_storage(client, project.id, out, can_delete_objects=True)
    wait_sync_done(client, s.id, attempts=1)
    a1 = client.annotations.create(doomed.id, result=choice("Positive"))
    a2 = client.annotations.create(doomed.id, result=choice("Negative"))
    a3 = client.annotations.create(kept.id, result=choice("Positive"))
    for a in (a1, a2, a3):
        wait_file(out / str(a.id), "auto-export")
    client.tasks.delete(str(doomed.id))
    for a in (a1, a2):
        wait_gone(out / str(a.id), "deletion of a deleted task's annotation")
    assert dir_names(out) == {str(a3.id)}


# ---------------------------------------------------------------------------
# delete
# ---------------------------------------------------------------------------


def test_delete_storage_keeps_files(client: LabelStudio, make_dir):
    project, ann_ids = _populate(client)
    out = make_dir("delete")
    live_out = make_dir("delete-live")
    doomed = create_storage(client, project.id, out, can_delete_objects=True)
    live = create_storage(client, project.id, live_out)
    wait_sync_done(client, doomed.id, attempts=1)
    wait_sync_done(client, live.id, attempts=1)
    before = {name: (out / name).read_bytes() for name in dir_names(out)}
    assert set(before) == {str(i) for i in ann_ids}

    assert client.export_storage.local.delete(doomed.id) is None
    with pytest.raises(ApiError) as ei:
        client.export_storage.local.get(doomed.id)
    assert_api_error(ei.value, 404, "No LocalFilesExportStorage matches the given query.")
    assert [s.id for s in client.export_storage.local.list(project=project.id)] == [live.id]
    for call in (
        lambda: client.export_storage.local.sync(doomed.id),
        lambda: client.export_storage.local.update(doomed.id, title="x"),
        lambda: client.export_storage.local.delete(doomed.id),
    ):
        with pytest.raises(ApiError) as ei:
            call()
        assert_api_error(ei.value, 404, "No LocalFilesExportStorage matches the given query.")

    # files stay; a deleted storage gets no more exports (and deletes nothing)
    client.annotations.delete(ann_ids[4])
    task = client.tasks.create(project=project.id, data={"text": "after storage delete"})
    new_ann = client.annotations.create(task.id, result=choice("Positive"))
    wait_file(live_out / str(new_ann.id), "auto-export to the remaining storage")
    after = {name: (out / name).read_bytes() for name in dir_names(out)}
    assert after == before, "files of a deleted storage changed"


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_create_errors(client: LabelStudio, make_dir, files_root: Path):
    project = new_project(client)
    outside = files_root.parent / f"outside-{uuid.uuid4().hex[:8]}"
    outside.mkdir()
    local = client.export_storage.local

    with pytest.raises(ApiError) as ei:
        local.create(project=project.id, path=str(outside), title="outside")
    assert_non_field_error(ei.value, not_subdir_msg(str(outside), files_root))

    # `..` is resolved textually before the check
    inside = make_dir("errors")
    with pytest.raises(ApiError) as ei:
        local.create(project=project.id, path=f"{inside}/../../{outside.name}/")
    assert_non_field_error(ei.value, not_subdir_msg(str(outside), files_root))

    with pytest.raises(ApiError) as ei:
        local.create(project=project.id, path=str(files_root) + "/")
    assert_non_field_error(ei.value, same_as_root_msg(files_root))

    missing = files_root / f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ApiError) as ei:
        local.create(project=project.id, path=str(missing))
    assert_non_field_error(ei.value, missing_msg(str(missing)))

    with pytest.raises(ApiError) as ei:
        local.create(project=project.id, path="   ")
    assert_non_field_error(ei.value, PATH_NOT_SET)
    with pytest.raises(ApiError) as ei:
        local.create(project=project.id)
    assert_non_field_error(ei.value, PATH_NOT_SET)

    with pytest.raises(ApiError) as ei:
        local.create(project=987654321, path=str(inside))
    body = assert_api_error(ei.value, 400, "Validation error")
    assert body.get("validation_errors") == {"project": ['Invalid pk "987654321" - object does not exist.']}, body

    with pytest.raises(ApiError) as ei:
        local.create(project=project.id, path=str(inside), title="t" * 257)
    body = assert_api_error(ei.value, 400, "Validation error")
    assert body.get("validation_errors") == {"title": ["Ensure this field has no more than 256 characters."]}, body

    assert local.list(project=project.id) == [], "a rejected create stored a storage"
    assert dir_names(inside) == set() and dir_names(outside) == set()


def test_unknown_ids_are_404(client: LabelStudio):
    local = client.export_storage.local
    for name, call in (
        ("sync", lambda: local.sync(987654321)),
        ("get", lambda: local.get(987654321)),
        ("update", lambda: local.update(987654321, title="x")),
        ("delete", lambda: local.delete(987654321)),
    ):
        with pytest.raises(ApiError) as ei:
            call()
        assert ei.value.status_code == 404, f"{name}: {ei.value.status_code} {ei.value.body!r}"
        assert_api_error(ei.value, 404, "No LocalFilesExportStorage matches the given query.")


def test_sync_after_directory_removed_is_400(client: LabelStudio, make_dir):
    """Contract 3.10 step 3 [Rec]: the path check repeats on sync; 400 (LS: 500), state unchanged."""
    project = new_project(client)
    out = make_dir("removed")
    s = create_storage(client, project.id, out)
    before = wait_sync_done(client, s.id, attempts=1)
    out.rmdir()
    with pytest.raises(ApiError) as ei:
        client.export_storage.local.sync(s.id)
    assert_non_field_error(ei.value, missing_msg(str(out)))
    after = client.export_storage.local.get(s.id)
    assert (after.status, after.meta) == (before.status, before.meta)

