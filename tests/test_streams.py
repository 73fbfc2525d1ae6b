"""The live chunk tap (``anomaly.ui.streams``): the real middleware over HTTP in front of a small app."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from anomaly.ui import streams
from anomaly.ui.streams import ChunkLog, ChunkTap


async def echo(request):
    return Response(await request.body(), media_type="application/octet-stream")


def tapped(chunks: ChunkLog) -> TestClient:
    routes = [Route(f"{streams.STREAM_PREFIX}{{event_id}}", echo, methods=["POST"])]
    return TestClient(Starlette(routes=routes, middleware=[Middleware(ChunkTap, chunks=chunks)]))


def post(path: str, session: str = "s1") -> bytes:
    return json.dumps({"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, None], "session_hash": session,
                       "fn_index": 40}).encode()


def test_each_chunk_is_noted_and_gradio_gets_the_post_unchanged(tmp_path):
    chunks = ChunkLog(tmp_path)
    http = tapped(chunks)
    files = [str(tmp_path / f"{i}" / "audio.wav") for i in range(5)]
    for file in files:
        body = post(file)
        answer = http.post(f"{streams.STREAM_PREFIX}abc", content=body)
        assert answer.status_code == 200 and answer.content == body
    assert chunks.take("s1", files[2]) == files[:3]  # up to the one gradio handed the handler
    assert chunks.take("s1", files[2]) == []  # heard already
    assert chunks.take("s2", files[4]) == [files[4]]  # another visitor's session: only its own chunk
    assert chunks.take("s1", files[4]) == files[3:]


def test_what_the_tap_does_not_note(tmp_path):
    chunks = ChunkLog(tmp_path / "uploads")
    http = tapped(chunks)
    outside = str(tmp_path / "elsewhere.wav")
    inside = str(tmp_path / "uploads" / "x" / "audio.wav")
    big = json.dumps({"data": [{"path": inside}], "session_hash": "s1", "pad": "x" * streams.MAX_BODY_BYTES})
    for body in [post(outside), b"not json", json.dumps({"data": []}).encode(), big.encode()]:
        answer = http.post(f"{streams.STREAM_PREFIX}abc", content=body)
        assert answer.content == body  # passed on whole, whatever it is
    assert http.post(f"{streams.STREAM_PREFIX}abc/close", content=post(inside)).status_code == 404  # not ours
    assert chunks.take("s1", inside) == [inside]  # none was noted: the handler hears the one it was handed


def test_heard_chunks_are_deleted_later_and_only_in_the_upload_folder(tmp_path, monkeypatch):
    folder = tmp_path / "uploads"
    chunks = ChunkLog(folder)
    (folder / "a").mkdir(parents=True)
    heard, outside = folder / "a" / "audio.wav", tmp_path / "mine.wav"
    heard.write_bytes(b"RIFF")
    outside.write_bytes(b"RIFF")
    chunks.forget([str(heard), str(outside)])
    assert heard.exists(), "kept a while: another listener may share the file"
    monkeypatch.setattr(streams, "HEARD_LIFE_S", 0.0)
    chunks.forget([])
    assert not heard.exists() and not (folder / "a").exists()
    assert outside.exists()


def test_memory_is_bounded(tmp_path):
    chunks = ChunkLog(tmp_path, max_waiting=10)
    for i in range(100):
        chunks.note("s1", str(tmp_path / f"{i}.wav"))
    assert chunks.take("s1", str(tmp_path / "99.wav")) == [str(tmp_path / f"{i}.wav") for i in range(90, 100)]
