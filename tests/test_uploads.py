"""Uploads within bounds (``anomaly.ui.uploads``): the real middleware over HTTP in front of a small app."""

from __future__ import annotations

import errno

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from anomaly.ui.uploads import UPLOAD_PATH, UploadGuard


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
    http = client(tmp_path, max_bytes=3000, max_requests=100, window_s=60)
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
