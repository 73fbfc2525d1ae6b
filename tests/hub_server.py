"""A local stand-in for the Hugging Face Hub, enough for ``huggingface_hub`` 2.4 to download and upload.

It speaks the HTTP API that ``snapshot_download``, ``hf_hub_download``, ``HfApi.model_info`` and
``HfApi.create_repo`` / ``create_commit`` / ``create_branch`` / ``create_tag`` use, for model repos held in
memory. Files are served as regular (non-LFS, non-Xet) git blobs, which is what the Hub does for small
files; uploads are answered with ``uploadMode: regular`` so that no LFS or Xet transfer is needed.

Endpoints
---------
GET  /api/models/{repo}[/revision/{rev}]        repo info: ``id``, ``sha``, ``siblings``
GET  /api/models/{repo}/tree/{rev}[/{path}]     file listing (``type``, ``path``, ``size``, ``oid``)
HEAD /{repo}/resolve/{rev}/{file}               ``X-Repo-Commit``, ``ETag`` (git blob oid), ``Content-Length``
GET  /{repo}/resolve/{rev}/{file}               the bytes (``Range: bytes=N-`` honoured)
POST /api/repos/create                          new repo with an initial ``.gitattributes`` commit
POST /api/validate-yaml                         always valid
POST /api/models/{repo}/preupload/{rev}         every file ``regular``; ``oid`` of the current version
POST /api/models/{repo}/commit/{rev}            ndjson: ``file`` (base64), ``deletedFile``, ``deletedFolder``
POST /api/models/{repo}/branch/{branch}         new branch from ``startingPoint`` (default main)
POST /api/models/{repo}/tag/{rev}               new tag ``{"tag": ...}``

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) as the Hub
does, so that ``huggingface_hub`` raises its own exception types.

Test knobs: ``corrupt(repo_id, filename)`` serves that file with bytes flipped (same size and ETag, as a
copy damaged in transit would be); ``hang = True`` accepts connections and reads requests but never
answers; ``fail_with = 503`` (any status) answers every request with that error, as a Hub in trouble
does; ``requests`` counts every request received and ``log`` lists them.

Examples
--------
>>> with FakeHub() as hub:                                    # doctest: +SKIP
...     sha = hub.add_repo("user/model", folder, tags=("v1",))
...     snapshot_download("user/model", revision="v1", endpoint=hub.url, cache_dir=tmp)
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

GITATTRIBUTES = b"*.keras filter=lfs diff=lfs merge=lfs -text\n*.npz filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's ``oid`` and ``ETag``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    message: str
    parent: str | None = None


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """Branch, tag or full sha -> commit sha; None when unknown."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision in self.commits:
            return revision
        return None


class HubError(Exception):
    """An HTTP error answer: status, Hub error code and message."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.commit = commit


class FakeHub:
    """The server: ``with FakeHub() as hub`` (or ``start()``/``stop()``); ``hub.url`` is the endpoint."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.hang = False
        self.fail_with: int | None = None
        self.requests = 0
        self.log: list[tuple[str, str]] = []
        self.authorization: list[str | None] = []
        self._corrupt: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._commit_counter = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: later connections are refused. Releases hanging requests without an answer."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Hub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- repos -----------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        folder: str | Path | None = None,
        *,
        files: dict[str, bytes] | None = None,
        sha: str | None = None,
        tags: tuple[str, ...] = ("v1",),
        branch: str = "main",
        message: str = "Initial upload",
    ) -> str:
        """Publish a folder (or a dict of files) as a new commit of ``repo_id``; return its sha.

        The repo is created if needed; ``branch`` and each of ``tags`` point to the new commit. ``sha``
        fixes the commit id (40 hex digits) instead of deriving it from the content.
        """
        content = dict(files or {})
        if folder is not None:
            root = Path(folder)
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    content[path.relative_to(root).as_posix()] = path.read_bytes()
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo(repo_id))
            parent = repo.branches.get(branch)
            commit = self._new_commit(repo, content, message, parent, sha=sha)
            repo.branches[branch] = commit.sha
            for tag in tags:
                repo.tags[tag] = commit.sha
        return commit.sha

    def corrupt(self, repo_id: str, filename: str, on: bool = True) -> None:
        """Serve ``filename`` of ``repo_id`` with some bytes flipped (or stop doing so)."""
        with self._lock:
            (self._corrupt.add if on else self._corrupt.discard)((repo_id, filename))

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision``, as stored (uploads included)."""
        repo = self.repos[repo_id]
        sha = repo.resolve(revision)
        if sha is None:
            raise KeyError(revision)
        return dict(repo.commits[sha].files)

    def _new_commit(
        self, repo: Repo, files: dict[str, bytes], message: str, parent: str | None, sha: str | None = None
    ) -> Commit:
        self._commit_counter += 1
        if sha is None:
            digest = hashlib.sha1()
            digest.update(f"{repo.repo_id}\n{parent}\n{message}\n{self._commit_counter}\n".encode())
            for name in sorted(files):
                digest.update(f"{name} {git_blob_oid(files[name])}\n".encode())
            sha = digest.hexdigest()
        commit = Commit(sha=sha, files=dict(files), message=message, parent=parent)
        repo.commits[sha] = commit
        return commit

    # --- request handling (called from handler threads) ------------------------------------------

    def _lookup(self, repo_id: str, revision: str) -> tuple[Repo, Commit]:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo, repo.commits[sha]

    def _served_bytes(self, repo_id: str, filename: str, data: bytes) -> bytes:
        if (repo_id, filename) not in self._corrupt or not data:
            return data
        damaged = bytearray(data)
        for i in range(len(damaged) // 2, min(len(damaged), len(damaged) // 2 + 16)):
            damaged[i] ^= 0xFF
        return bytes(damaged)


def _split_repo(parts: list[str]) -> tuple[str, list[str]]:
    if len(parts) < 2:
        raise HubError(404, "Repository not found", "RepoNotFound")
    return f"{parts[0]}/{parts[1]}", parts[2:]


class _Handler(BaseHTTPRequestHandler):
    """One request. HTTP/1.0, so every connection closes after its answer and a stopped server is gone."""

    hub: FakeHub
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean

    # --- dispatch ---

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        hub = self.hub
        with hub._lock:
            hub.requests += 1
            hub.log.append((method, self.path))
            hub.authorization.append(self.headers.get("Authorization"))
        if hub.hang:
            # Accept and read the request, then say nothing until the server stops.
            hub._release.wait()
            self.close_connection = True
            return
        body = self._read_body() if method == "POST" else b""
        if hub.fail_with is not None:
            return self._send_error(HubError(hub.fail_with, f"the fake Hub answers {hub.fail_with} today"))
        try:
            self._route(method, body)
        except HubError as err:
            self._send_error(err)

    def _route(self, method: str, body: bytes) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if parts[:2] == ["api", "models"]:
            repo_id, rest = _split_repo(parts[2:])
            if method == "GET" and (not rest or rest[0] == "revision"):
                return self._repo_info(repo_id, rest[1] if len(rest) > 1 else "main")
            if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
                return self._tree(repo_id, rest[1], "/".join(rest[2:]))
            if method == "POST" and rest[:1] == ["preupload"] and len(rest) == 2:
                return self._preupload(repo_id, rest[1], body)
            if method == "POST" and rest[:1] == ["commit"] and len(rest) == 2:
                return self._commit(repo_id, rest[1], body)
            if method == "POST" and rest[:1] == ["branch"] and len(rest) == 2:
                return self._branch(repo_id, rest[1], body)
            if method == "POST" and rest[:1] == ["tag"] and len(rest) == 2:
                return self._tag(repo_id, rest[1], body)
        elif parts == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(body)
        elif parts == ["api", "validate-yaml"] and method == "POST":
            return self._send_json({"errors": [], "warnings": []})
        elif len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise HubError(404, f"no such endpoint in the fake Hub: {method} {url.path}")

    # --- downloads ---

    def _repo_info(self, repo_id: str, revision: str) -> None:
        with self.hub._lock:
            repo, commit = self.hub._lookup(repo_id, revision)
            siblings = [{"rfilename": name} for name in sorted(commit.files)]
        self._send_json(
            {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit.sha,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "tags": [],
                "siblings": siblings,
            }
        )

    def _tree(self, repo_id: str, revision: str, prefix: str) -> None:
        with self.hub._lock:
            _, commit = self.hub._lookup(repo_id, revision)
            entries = [
                {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": name}
                for name, data in sorted(commit.files.items())
                if not prefix or name.startswith(prefix.rstrip("/") + "/")
            ]
        self._send_json(entries)

    def _resolve(self, method: str, repo_id: str, revision: str, filename: str) -> None:
        with self.hub._lock:
            _, commit = self.hub._lookup(repo_id, revision)
            if filename not in commit.files:
                raise HubError(404, "Entry not found", "EntryNotFound", commit=commit.sha)
            original = commit.files[filename]
            data = self.hub._served_bytes(repo_id, filename, original)
        status, start = 200, 0
        byte_range = self.headers.get("Range", "")
        if method == "GET" and byte_range.startswith("bytes=") and byte_range.endswith("-"):
            start = min(int(byte_range[len("bytes=") : -1] or 0), len(data))
            status = 206
        payload = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload) if method == "GET" else len(data)))
        self.send_header("ETag", f'"{git_blob_oid(original)}"')
        self.send_header("X-Repo-Commit", commit.sha)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if method == "GET":
            self.wfile.write(payload)

    # --- uploads ---

    def _create_repo(self, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        name, organization = payload.get("name"), payload.get("organization")
        if not name or not organization:
            raise HubError(400, "the fake Hub needs 'organization/name' repo ids")
        if payload.get("type", "model") != "model":
            raise HubError(400, "the fake Hub only holds model repos")
        repo_id = f"{organization}/{name}"
        url = f"{self.hub.url}/{repo_id}"
        with self.hub._lock:
            if repo_id in self.hub.repos:
                raise HubError(409, "You already created this model repo")
            repo = Repo(
                repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private"))
            )
            self.hub.repos[repo_id] = repo
            first = self.hub._new_commit(repo, {".gitattributes": GITATTRIBUTES}, "initial commit", None)
            repo.branches["main"] = first.sha
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _preupload(self, repo_id: str, revision: str, body: bytes) -> None:
        files = json.loads(body)["files"]
        with self.hub._lock:
            _, commit = self.hub._lookup(repo_id, revision)
            answer = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_oid(commit.files[f["path"]]) if f["path"] in commit.files else None,
                }
                for f in files
            ]
        self._send_json({"files": answer, "commitOid": commit.sha})

    def _commit(self, repo_id: str, branch: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        with self.hub._lock:
            repo, parent = self.hub._lookup(repo_id, branch)
            if branch not in repo.branches:
                raise HubError(400, f"{branch} is not a branch", "RevisionNotFound")
            files = dict(parent.files)
            message = "commit"
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "header":
                    message = value.get("summary") or message
                    wanted = value.get("parentCommit")
                    if wanted and wanted != parent.sha:
                        raise HubError(412, "A commit has happened since; parentCommit is not the head")
                elif key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {k: v for k, v in files.items() if not k.startswith(folder)}
                else:
                    raise HubError(422, f"the fake Hub does not support '{key}' operations (LFS, copies)")
            commit = self.hub._new_commit(repo, files, message, parent.sha)
            repo.branches[branch] = commit.sha
        self._send_json(
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit.sha}",
                "pullRequestUrl": None,
            }
        )

    def _branch(self, repo_id: str, branch: str, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        with self.hub._lock:
            repo, start = self.hub._lookup(repo_id, payload.get("startingPoint") or "main")
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch} already exists")
            repo.branches[branch] = start.sha
        self._send_json({})

    def _tag(self, repo_id: str, revision: str, body: bytes) -> None:
        tag = json.loads(body or b"{}").get("tag")
        with self.hub._lock:
            repo, commit = self.hub._lookup(repo_id, revision)
            if not tag or tag in repo.tags:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = commit.sha
        self._send_json({})

    # --- plumbing ---

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, data: object, status: int = 200) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def _send_error(self, err: HubError) -> None:
        raw = json.dumps({"error": str(err)}).encode()
        self.send_response(err.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if err.code:
            self.send_header("X-Error-Code", err.code)
        self.send_header("X-Error-Message", str(err))
        if err.commit:
            self.send_header("X-Repo-Commit", err.commit)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)
