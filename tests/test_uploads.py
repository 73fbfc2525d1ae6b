"""Uploads within bounds (``anomaly.ui.uploads``): the real middleware over HTTP in front of a small app."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from anomaly.config import Settings
from anomaly.ui.uploads import UPLOAD_PATH, UploadGuard, deleted_uploads, gone_message


async def upload(request):
    form = await request.form()
    return JSONResponse([f.filename for f in form.getlist("files")])


async def disk_full(request):
    raise OSError(errno.ENOSPC, "No space left on device")


def client(tmp_path, **limits) -> TestClient:
    app = Starlette(
        routes=[Route(UPLOAD_PATH, upload, methods=["POST"]), Route("/gradio_api/call/score", disk_full, methods=["POST"])],
        middleware=[Middleware(UploadGuard, folder=tmp_path / "uploads", **limits)],
    )
    return TestClient(app, raise_server_exceptions=False)


def test_a_client_over_its_upload_budget_is_told_so_and_others_are_not(tmp_path):
    http = client(tmp_path, max_bytes=3000, max_requests=100, window_s=60, proxy_hops=1)
    for _ in range(2):
        assert http.post(UPLOAD_PATH, files={"files": ("a.wav", b"x" * 1000)}).status_code == 200
    refused = http.post(UPLOAD_PATH, files={"files": ("b.wav", b"x" * 1000)})
    assert refused.status_code == 429 and refused.json()["detail"].startswith("Too many uploads from you: 0 MB in 2")
    other = http.post(UPLOAD_PATH, files={"files": ("c.wav", b"x" * 1000)}, headers={"x-forwarded-for": "10.0.0.2"})
    assert other.status_code == 200


def test_a_flood_of_small_uploads_is_capped_by_count(tmp_path):
    http = client(tmp_path, max_requests=5)
    codes = [http.post(UPLOAD_PATH, files={"files": ("a.wav", b"x")}).status_code for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3


@pytest.mark.parametrize("path", [UPLOAD_PATH, "/gradio_api/call/score"])
def test_a_full_disk_is_a_sentence_not_a_bare_500(tmp_path, path):
    # The reserve is larger than any disk: an upload is refused before it is read; a call that hits ENOSPC
    # while writing is answered with the same sentence.
    http = client(tmp_path, reserve_bytes=2**62) if path == UPLOAD_PATH else client(tmp_path)
    answer = http.post(path, files={"files": ("a.wav", b"x" * 10)})
    assert answer.status_code == 507
    assert answer.json()["detail"].startswith("The server's disk is full for now")


# --- the shorter life of unused uploads --------------------------------------------------------------------


def gradio_like(folder: Path):
    """An upload route that keeps files as gradio does (``folder/<content hash>/<name>``, answering their paths;
    ``?answer=`` makes it answer other paths) and a call route that echoes the body it was given."""

    async def upload(request):
        if request.query_params.getlist("answer"):
            return JSONResponse(request.query_params.getlist("answer"))
        paths = []
        for f in (await request.form()).getlist("files"):
            data = await f.read()
            where = folder / hashlib.sha256(data).hexdigest() / f.filename
            where.parent.mkdir(parents=True, exist_ok=True)
            where.write_bytes(data)
            paths.append(str(where))
        return JSONResponse(paths)

    async def echo(request):
        return Response(await request.body(), media_type="application/octet-stream")

    return Starlette(
        routes=[Route(UPLOAD_PATH, upload, methods=["POST"]), Route("/gradio_api/call/score", echo, methods=["POST"])]
    )


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path / "uploads"


def guarded(folder: Path, **options) -> tuple[UploadGuard, TestClient]:
    guard = UploadGuard(gradio_like(folder), folder=folder, **options)
    return guard, TestClient(guard)


def sent(http: TestClient, content: bytes, name: str = "a.wav") -> Path:
    answer = http.post(UPLOAD_PATH, files={"files": (name, content)})
    assert answer.status_code == 200
    return Path(answer.json()[0])


def call_naming(*paths: Path) -> bytes:
    """A call's body as gradio_client sends it."""
    data = [{"path": str(p), "orig_name": p.name, "meta": {"_type": "gradio.FileData"}} for p in paths]
    return json.dumps({"data": [*data, None]}).encode()


def post_in_chunks(app, path: str, chunks: list[bytes]) -> bytes:
    """POST ``chunks`` as separate ASGI messages with no Content-Length, as a server hands on a chunked body
    (starlette's TestClient joins them into one); the response's body."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    answer = bytearray()

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        answer.extend(message.get("body", b""))

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b"", "http_version": "1.1"}
    asyncio.run(app(scope, receive, send))
    return bytes(answer)


def later(seconds: float) -> float:
    return time.monotonic() + seconds


def test_an_upload_no_call_used_is_deleted_and_a_used_one_is_kept(folder):
    guard, http = guarded(folder, unused_max_age_s=300)
    used, unused = sent(http, b"used"), sent(http, b"unused")
    body = call_naming(used)
    echoed = http.post("/gradio_api/call/score", content=body, headers={"content-type": "application/json"})
    assert echoed.content == body  # the app read the very bytes the client sent
    assert guard.sweep(later(100)) == []  # too young
    assert guard.sweep(later(301)) == [unused.parent]
    assert used.is_file() and not unused.parent.exists() and folder.is_dir()
    # A used upload is left for gradio's own sweep, which deletes it later by its age.
    assert guard.sweep(later(10_000)) == [] and used.is_file()


def test_a_body_sent_in_chunks_is_replayed_whole_and_still_marks_the_upload_used(folder):
    guard, http = guarded(folder)
    upload = sent(http, b"chunked")
    body = call_naming(upload)
    # No Content-Length: the guard reads the chunks itself, then hands them on.
    assert post_in_chunks(guard, "/gradio_api/call/score", [body[:10], body[10:25], body[25:]]) == body
    assert guard.sweep(later(10_000)) == [] and upload.is_file()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_big_body_is_passed_on_unread(folder, chunked):
    guard, http = guarded(folder, inspected_bytes=1000)
    upload = sent(http, b"named in a big call")
    body = call_naming(upload) + b" " * 5000
    if chunked:
        assert post_in_chunks(guard, "/gradio_api/call/score", [body[:700], body[700:1500], body[1500:]]) == body
    else:
        assert http.post("/gradio_api/call/score", content=body).content == body
    # Not read, so not marked used: it goes when unused uploads go.
    assert guard.sweep(later(301)) == [upload.parent]


def test_only_folders_directly_inside_the_upload_folder_are_deleted(folder, tmp_path):
    guard, http = guarded(folder)
    kept = sent(http, b"kept")
    outside = tmp_path / "elsewhere" / "abc"
    outside.mkdir(parents=True)
    (folder / "link").symlink_to(outside, target_is_directory=True)
    answers = [outside / "x.wav", folder / "link" / "x.wav", folder / ".." / "x.wav", folder / "x.wav"]
    for answer in answers:  # an upload route (or a proxy) answering paths that are not upload folders
        assert http.post(UPLOAD_PATH, params={"answer": str(answer)}, files={"files": ("x", b"x")}).status_code == 200
    http.post("/gradio_api/call/score", json={"data": [{"path": str(kept)}]})
    assert guard.sweep(later(301)) == []
    assert outside.is_dir() and (folder / "link").is_symlink() and kept.is_file()


def test_the_bookkeeping_is_bounded_and_forgetting_deletes_nothing_early(folder):
    guard, http = guarded(folder, max_noted=3)
    uploads = [sent(http, f"upload {i}".encode()) for i in range(5)]
    assert guard.sweep(later(100)) == []
    # The two oldest were forgotten: gradio's own sweep deletes them at the usual age; the three newest go now.
    assert sorted(guard.sweep(later(301))) == sorted(u.parent for u in uploads[2:])
    assert all(u.is_file() for u in uploads[:2])


def test_the_sweeper_deletes_unused_uploads_on_its_own(folder):
    _, http = guarded(folder, unused_max_age_s=0.3)
    upload = sent(http, b"left alone")
    deadline = time.monotonic() + 10
    while upload.parent.exists():
        assert time.monotonic() < deadline, "the unused upload was not deleted"
        time.sleep(0.05)


def test_a_deleted_upload_is_named_in_one_sentence(folder):
    guard, http = guarded(folder)
    gone, there = sent(http, b"gone", "machine 3.wav"), sent(http, b"there", "b.wav")
    guard.sweep(later(301))  # both unused: gone goes...
    there.parent.mkdir(parents=True)
    there.write_bytes(b"there")  # ...and this one is uploaded again
    inputs = json.loads(call_naming(gone, there))["data"] + [{"path": "/etc/passwd"}]
    names = deleted_uploads(inputs, folder)
    assert names == ["machine 3.wav"]
    assert gone_message(names, 300, 900) == (
        "machine 3.wav is no longer on the server: an upload that no call uses within 5 minutes is deleted, any "
        "upload after 15 minutes; upload it again."
    )


@pytest.mark.parametrize("text", ["10", "a,b", "0,5", "5,-1"])
def test_a_bad_upload_budget_in_the_environment_is_one_sentence(text):
    with pytest.raises(ValueError, match="GEARBOX_UPLOAD_BUDGET must be"):
        Settings.from_environ({"GEARBOX_UPLOAD_BUDGET": text})
    assert Settings.from_environ({"GEARBOX_UPLOAD_BUDGET": " 30,2 "}).upload_budget == (30, 2 * 2**20)


@pytest.mark.parametrize("proxy_hops", [0, 1])
def test_an_address_written_by_the_client_does_not_dodge_the_budget(tmp_path, proxy_hops):
    """With no proxy X-Forwarded-For is ignored; behind one, only the entry the proxy added counts (a proxy
    appends the address it saw: here the TestClient's "testclient" stands for it when there is no header)."""
    http = client(tmp_path, max_requests=3, proxy_hops=proxy_hops)
    codes = []
    for i in range(5):
        spoofed = f"10.0.0.{i}" + (", 198.51.100.7" if proxy_hops else "")
        answer = http.post(UPLOAD_PATH, files={"files": ("a.wav", b"x")}, headers={"x-forwarded-for": spoofed})
        codes.append(answer.status_code)
    assert codes == [200] * 3 + [429] * 2


def test_a_client_that_goes_away_mid_upload_is_one_log_line(tmp_path, caplog):
    """A tab closed while its live microphone was sending: gradio's upload raises ClientDisconnect, which
    uvicorn logged as a 70-line traceback per chunk in flight."""
    import asyncio
    import logging

    from starlette.requests import Request

    async def upload_then_gone(scope, receive, send):
        async for _ in Request(scope, receive).stream():
            pass

    guard = UploadGuard(upload_then_gone, folder=tmp_path)
    scope = {"type": "http", "method": "POST", "path": UPLOAD_PATH, "client": ("203.0.113.5", 1),
             "headers": [(b"content-length", b"100")]}
    messages = [{"type": "http.request", "body": b"x" * 10, "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        raise AssertionError(f"nobody to answer, yet {message}")

    with caplog.at_level(logging.INFO, logger="anomaly.ui"):
        asyncio.run(guard(scope, receive, send))
    assert [r.getMessage() for r in caplog.records] == [f"203.0.113.5 closed the connection during POST {UPLOAD_PATH}"]
