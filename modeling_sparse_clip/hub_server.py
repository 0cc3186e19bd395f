"""A Hugging Face Hub on loopback: the HTTP API that `huggingface_hub` 2.x calls, backed by git.

Used to prove `push_to_hub` / `from_pretrained("org/name")` over HTTP with the real client, where no
real Hub can be reached. Each repo is a real git repository under `ROOT/{models,datasets,spaces}/ORG/NAME`
whose large files are git-LFS pointers with their content in `.git/lfs/objects/aa/bb/SHA256` (the
layout git-lfs itself and the `olah` mirror read), so `export_git_mirror` gives a repo any git tool
(or `olah-cli --mirrors-path`) can serve.

Endpoints (request/response shapes follow huggingface_hub 2.4's hf_api.py, _commit_api.py, lfs.py and
file_download.py):

    POST   /api/repos/create                      {name, organization, type, visibility|private, sdk}
    DELETE /api/repos/delete
    GET    /api/whoami-v2
    POST   /api/validate-yaml                     README.md front matter must parse as a YAML mapping
    GET    /api/{type}s/{repo}[/revision/{rev}]   repo info (sha, siblings, cardData, ...)
    POST   /api/{type}s/{repo}/preupload/{rev}    regular vs lfs per file (+ remote oid)
    POST   /{prefix}{repo}.git/info/lfs/objects/batch   basic transfer: an upload URL + a verify URL
    PUT    /lfs-upload/{type}/{repo}/{oid}?ticket=      the upload URL it hands out (sha256 checked)
    POST   /{prefix}{repo}.git/info/lfs/objects/verify
    POST   /api/{type}s/{repo}/commit/{rev}       NDJSON: header, file, lfsFile, deletedFile, deletedFolder
    POST   /api/{type}s/{repo}/branch/{branch}
    GET/POST /api/spaces/{repo}/variables
    GET    /api/{type}s/{repo}/tree/{rev}[/{path}], POST .../paths-info/{rev}, GET .../refs, .../commits/{rev}
    HEAD/GET /{prefix}{repo}/resolve/{rev}/{path} regular files: 200 with ETag (git blob sha1) and
                                                  X-Repo-Commit; LFS files: 302 to /lfs-cdn/... with
                                                  X-Linked-Etag (sha256), X-Linked-Size, Location

Writes need `Authorization: Bearer <token>` with a token the server knows (401 otherwise); reading a
private repo needs one too. Large files travel over git-LFS, not Xet: a client with `hf_xet` installed
must run with `HF_HUB_DISABLE_XET=1` (the `xet-*-token` endpoints answer 501 saying so).

Run it:  python -m modeling_sparse_clip.hub_server --port 8765 --root /tmp/hub --token hf_local
or in tests:  with HubServer(root) as hub: HfApi(endpoint=hub.endpoint, token=hub.token) ...
"""

from __future__ import annotations

import base64
import datetime as _dt
import fnmatch
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

REPO_TYPES = ("model", "dataset", "space")
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Files at least this large are stored with LFS whatever their content (the client sends regular
# files inline, base64, in the NDJSON commit and expects them to be small).
LFS_SIZE_THRESHOLD = 5 * 1024 * 1024
LFS_POINTER_RE = re.compile(rb"^version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize (\d+)\n$")
# The Hub's default .gitattributes (abridged): the patterns that go to LFS in every new repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)
NULL_SHA = "0" * 40


class HubError(Exception):
    """An HTTP error answer: status, message (sent as JSON `error` and X-Error-Message) and Hub error code."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _iso(timestamp: float | None = None) -> str:
    """The Hub's date format (huggingface_hub parses exactly this)."""
    moment = _dt.datetime.now(_dt.timezone.utc) if timestamp is None else _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class TreeEntry:
    path: str
    kind: str  # "file" or "directory"
    oid: str  # git object id (for LFS files: of the pointer)
    size: int  # content size (for LFS files: of the real content)
    lfs_sha256: str | None = None
    pointer_size: int | None = None

    def api_dict(self) -> dict:
        d = {"type": self.kind, "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs_sha256:
            d["lfs"] = {"oid": self.lfs_sha256, "size": self.size, "pointerSize": self.pointer_size}
        return d


# ----------------------------------------------------------------------------------------------
# Storage: one git repository per Hub repo, driven through git plumbing (no working tree).
# ----------------------------------------------------------------------------------------------
@dataclass
class HubStorage:
    root: Path
    _locks: dict = field(default_factory=dict)
    _trees: dict = field(default_factory=dict)  # commit sha -> {path: TreeEntry}; commits are immutable

    def __post_init__(self):
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()

    # -- paths and git --------------------------------------------------------------------------
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / f"{repo_type}s" / repo_id

    def git_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.repo_dir(repo_type, repo_id) / ".git"

    def lfs_object(self, repo_type: str, repo_id: str, sha256: str) -> Path:
        return self.git_dir(repo_type, repo_id) / "lfs" / "objects" / sha256[:2] / sha256[2:4] / sha256

    def _git(self, git_dir: Path, *args: str, input: bytes | None = None, env: dict | None = None, check=True) -> bytes:
        full_env = {
            **os.environ,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": "hub",
            "GIT_AUTHOR_EMAIL": "hub@localhost",
            "GIT_COMMITTER_NAME": "hub",
            "GIT_COMMITTER_EMAIL": "hub@localhost",
            **(env or {}),
        }
        res = subprocess.run(["git", "--git-dir", str(git_dir), *args], input=input, capture_output=True, env=full_env)
        if check and res.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {res.stderr.decode(errors='replace')}")
        return res.stdout

    def lock(self, repo_type: str, repo_id: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault((repo_type, repo_id), threading.RLock())

    # -- repos ----------------------------------------------------------------------------------
    def exists(self, repo_type: str, repo_id: str) -> bool:
        return (self.git_dir(repo_type, repo_id) / "HEAD").exists()

    def meta(self, repo_type: str, repo_id: str) -> dict:
        return json.loads((self.git_dir(repo_type, repo_id) / "hub-meta.json").read_text())

    def create(self, repo_type: str, repo_id: str, *, private: bool, sdk: str | None, author: str) -> None:
        repo_dir = self.repo_dir(repo_type, repo_id)
        repo_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo_dir)], check=True, capture_output=True)
        meta = {"private": private, "sdk": sdk, "author": author, "createdAt": _iso(), "next_pr": 1}
        (self.git_dir(repo_type, repo_id) / "hub-meta.json").write_text(json.dumps(meta))
        # Like the Hub, a new repo starts with one commit holding the default .gitattributes.
        self.commit(repo_type, repo_id, "main", "initial commit", "", [("file", ".gitattributes", DEFAULT_GITATTRIBUTES.encode())])

    def delete(self, repo_type: str, repo_id: str) -> None:
        shutil.rmtree(self.repo_dir(repo_type, repo_id))

    def set_meta(self, repo_type: str, repo_id: str, **updates) -> dict:
        meta = {**self.meta(repo_type, repo_id), **updates}
        (self.git_dir(repo_type, repo_id) / "hub-meta.json").write_text(json.dumps(meta))
        return meta

    # -- revisions ------------------------------------------------------------------------------
    def resolve(self, repo_type: str, repo_id: str, revision: str) -> str | None:
        """Commit sha of a branch, tag, `refs/...` name or (full) commit sha; None if unknown."""
        git_dir = self.git_dir(repo_type, repo_id)
        candidates = [revision] if revision.startswith("refs/") else [f"refs/heads/{revision}", f"refs/tags/{revision}"]
        if re.fullmatch(r"[0-9a-f]{40}", revision):
            candidates = [revision]
        for ref in candidates:
            out = self._git(git_dir, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False).strip()
            if out:
                return out.decode()
        return None

    def refs(self, repo_type: str, repo_id: str) -> dict:
        out = self._git(self.git_dir(repo_type, repo_id), "for-each-ref", "--format=%(refname) %(objectname)").decode()
        groups = {"refs/heads/": "branches", "refs/tags/": "tags", "refs/convert/": "converts", "refs/pr/": "pullRequests"}
        result = {name: [] for name in groups.values()}
        for line in out.splitlines():
            ref, sha = line.split()
            for prefix, name in groups.items():
                if ref.startswith(prefix):
                    result[name].append({"name": ref[len(prefix):], "ref": ref, "targetCommit": sha})
        return result

    def commit_log(self, repo_type: str, repo_id: str, commit: str) -> list[dict]:
        out = self._git(self.git_dir(repo_type, repo_id), "log", "--format=%H%x00%s%x00%b%x00%ct%x1e", commit).decode()
        commits = []
        for record in filter(str.strip, out.split("\x1e")):
            sha, title, message, date = record.strip("\n").split("\x00")
            commits.append({"id": sha, "title": title, "message": message.strip(), "date": _iso(int(date)), "authors": [{"user": "hub"}]})
        return commits

    def commit_date(self, repo_type: str, repo_id: str, commit: str) -> str:
        return _iso(int(self._git(self.git_dir(repo_type, repo_id), "show", "-s", "--format=%ct", commit).decode()))

    # -- trees and blobs ------------------------------------------------------------------------
    def tree(self, repo_type: str, repo_id: str, commit: str) -> dict[str, TreeEntry]:
        key = (repo_type, repo_id, commit)
        if key in self._trees:
            return self._trees[key]
        git_dir = self.git_dir(repo_type, repo_id)
        out = self._git(git_dir, "ls-tree", "-r", "-t", "-l", "-z", commit)
        entries: dict[str, TreeEntry] = {}
        for record in filter(None, out.split(b"\0")):
            meta, path = record.split(b"\t", 1)
            _mode, kind, oid, size = meta.split()
            path = path.decode()
            if kind == b"tree":
                entries[path] = TreeEntry(path, "directory", oid.decode(), 0)
                continue
            size = int(size)
            entry = TreeEntry(path, "file", oid.decode(), size)
            if size < 200:  # small enough to be an LFS pointer: look inside
                match = LFS_POINTER_RE.match(self.blob(repo_type, repo_id, entry.oid))
                if match:
                    entry.lfs_sha256, entry.size, entry.pointer_size = match[1].decode(), int(match[2]), size
            entries[path] = entry
        self._trees[key] = entries
        return entries

    def blob(self, repo_type: str, repo_id: str, oid: str) -> bytes:
        return self._git(self.git_dir(repo_type, repo_id), "cat-file", "blob", oid)

    def file_bytes(self, repo_type: str, repo_id: str, entry: TreeEntry) -> bytes:
        if entry.lfs_sha256:
            return self.lfs_object(repo_type, repo_id, entry.lfs_sha256).read_bytes()
        return self.blob(repo_type, repo_id, entry.oid)

    # -- writing --------------------------------------------------------------------------------
    def commit(
        self,
        repo_type: str,
        repo_id: str,
        revision: str,
        summary: str,
        description: str,
        operations: list[tuple],
        *,
        parent_commit: str | None = None,
        create_pr: bool = False,
    ) -> tuple[str, int | None]:
        """Apply `operations` on top of `revision` as one commit; returns (commit sha, PR number or None).

        operations: ("file", path, bytes) | ("lfsFile", path, sha256, size) | ("deletedFile", path)
        | ("deletedFolder", path). With `create_pr`, the commit goes to a new `refs/pr/N` instead.
        """
        git_dir = self.git_dir(repo_type, repo_id)
        with self.lock(repo_type, repo_id):
            branch_ref = revision if revision.startswith("refs/") else f"refs/heads/{revision}"
            parent = self.resolve(repo_type, repo_id, revision)
            if parent is None and revision != "main":
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            if parent_commit is not None and parent != parent_commit:
                raise HubError(412, f"A commit has happened since {parent_commit}. Please refresh and try again.")
            index_lines = []
            current = self.tree(repo_type, repo_id, parent) if parent else {}
            for op in operations:
                kind, path = op[0], op[1].strip("/")
                if kind in ("file", "lfsFile"):
                    if kind == "file":
                        data = op[2]
                    else:
                        sha256, size = op[2], op[3]
                        obj = self.lfs_object(repo_type, repo_id, sha256)
                        if not obj.exists():
                            raise HubError(422, f"LFS object {sha256} for {path} was never uploaded: upload it through the LFS batch API first.")
                        data = _lfs_pointer(sha256, obj.stat().st_size if size is None else size)
                    oid = self._git(git_dir, "hash-object", "-w", "--stdin", input=data).decode().strip()
                    index_lines.append(f"100644 blob {oid}\t{path}")
                elif kind == "deletedFile":
                    if path not in current or current[path].kind != "file":
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    index_lines.append(f"0 {NULL_SHA}\t{path}")
                elif kind == "deletedFolder":
                    inside = [p for p, e in current.items() if e.kind == "file" and p.startswith(path + "/")]
                    if not inside:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    index_lines.extend(f"0 {NULL_SHA}\t{p}" for p in inside)
            with tempfile.TemporaryDirectory() as tmp:
                env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
                if parent:
                    self._git(git_dir, "read-tree", parent, env=env)
                self._git(git_dir, "update-index", "--index-info", input=("\n".join(index_lines) + "\n").encode(), env=env)
                tree = self._git(git_dir, "write-tree", env=env).decode().strip()
            message = summary + (f"\n\n{description}" if description else "")
            parents = ["-p", parent] if parent else []
            sha = self._git(git_dir, "commit-tree", tree, *parents, "-m", message).decode().strip()
            pr_num = None
            if create_pr:
                pr_num = self.meta(repo_type, repo_id)["next_pr"]
                self.set_meta(repo_type, repo_id, next_pr=pr_num + 1)
                branch_ref = f"refs/pr/{pr_num}"
                self._git(git_dir, "update-ref", branch_ref, sha)
            else:  # compare-and-swap: nobody moved the branch under us
                self._git(git_dir, "update-ref", branch_ref, sha, parent or "")
            return sha, pr_num

    def create_branch(self, repo_type: str, repo_id: str, branch: str, starting_point: str | None) -> None:
        start = self.resolve(repo_type, repo_id, starting_point or "main")
        if start is None:
            raise HubError(404, f"Invalid rev id: {starting_point}", "RevisionNotFound")
        if self.resolve(repo_type, repo_id, f"refs/heads/{branch}"):
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        self._git(self.git_dir(repo_type, repo_id), "update-ref", f"refs/heads/{branch}", start)

    def store_lfs_object(self, repo_type: str, repo_id: str, sha256: str, source: Path) -> None:
        target = self.lfs_object(repo_type, repo_id, sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)

    def gitattributes_lfs_patterns(self, repo_type: str, repo_id: str, commit: str | None) -> list[str]:
        entry = self.tree(repo_type, repo_id, commit).get(".gitattributes") if commit else None
        text = self.blob(repo_type, repo_id, entry.oid).decode() if entry else DEFAULT_GITATTRIBUTES
        return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line and line.split()]


def export_git_mirror(storage_root: str | os.PathLike, repo_id: str, dest_root: str | os.PathLike, repo_type: str = "model") -> Path:
    """Clone a stored repo to `dest_root/{type}s/ORG/NAME` with its LFS objects: a plain git + git-lfs
    repository, the layout `olah-cli --mirrors-path dest_root` (offline) serves."""
    storage = HubStorage(Path(storage_root))
    source = storage.repo_dir(repo_type, repo_id)
    if not storage.exists(repo_type, repo_id):
        raise FileNotFoundError(f"No {repo_type} repo {repo_id} under {storage_root}.")
    dest = Path(dest_root) / f"{repo_type}s" / repo_id
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # --no-checkout: the working tree would hold LFS pointers only; readers go through git objects.
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(source), str(dest)], check=True, capture_output=True)
    lfs_source = source / ".git" / "lfs" / "objects"
    if lfs_source.exists():
        shutil.copytree(lfs_source, dest / ".git" / "lfs" / "objects")
    return dest


# ----------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------
def _parse_front_matter(readme: str) -> dict | None:
    """The YAML metadata block of a README.md; None if there is none; raises yaml.YAMLError if broken."""
    match = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", readme, flags=re.S)
    if not match:
        return None
    data = yaml.safe_load(match[1])
    if data is not None and not isinstance(data, dict):
        raise yaml.YAMLError("the metadata block must be a YAML mapping")
    return data or {}


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client pools connections
    server: "_HubHTTPServer"

    # -- plumbing -------------------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _iter_body(self, chunk_size: int = 1 << 20):
        """The request body in pieces (Content-Length or chunked transfer encoding)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            piece = self.rfile.read(min(chunk_size, remaining))
            if not piece:
                return
            remaining -= len(piece)
            yield piece

    def _body(self) -> bytes:
        return b"".join(self._iter_body())

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json", headers: dict | None = None, head_only=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head_only and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _error(self, err: HubError):
        headers = {"X-Error-Message": err.message.encode("ascii", "replace").decode()}
        if err.code:
            headers["X-Error-Code"] = err.code
        # The request body may be unread: close rather than let it be parsed as the next request.
        headers["Connection"] = "close"
        self.close_connection = True
        self._json(err.status, {"error": err.message}, headers=headers)

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"

    def _token_user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        return self.server.tokens.get(token) if token else None

    def _require_write(self) -> str:
        user = self._token_user()
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> None:
        """The repo must exist (404 RepoNotFound) and be visible: private ones need a known token."""
        storage = self.server.storage
        if not storage.exists(repo_type, repo_id):
            raise HubError(404, f"Repository Not Found: {repo_type} {repo_id}", "RepoNotFound")
        if write:
            self._require_write()
        elif storage.meta(repo_type, repo_id)["private"] and self._token_user() is None:
            raise HubError(401, f"Repository Not Found: {repo_type} {repo_id}", "RepoNotFound")

    def _commit_of(self, repo_type: str, repo_id: str, revision: str) -> str:
        commit = self.server.storage.resolve(repo_type, repo_id, revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # -- dispatch -------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def _dispatch(self):
        url = urlsplit(self.path)
        # Split the RAW path: revisions such as refs%2Fpr%2F1 are one quoted segment.
        parts = [unquote(p) for p in url.path.strip("/").split("/")] if url.path.strip("/") else []
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            handled = self._route(self.command, parts, query)
            if not handled:
                raise HubError(404, f"Not found: {self.command} {url.path}")
        except HubError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a server bug: answer 500 with the reason instead of dropping the connection
            self._error(HubError(500, f"{type(exc).__name__}: {exc}"))

    def _route(self, method: str, parts: list[str], query: dict) -> bool:
        if parts[:1] == ["api"]:
            return self._route_api(method, parts[1:], query)
        if parts[:1] == ["lfs-upload"] and method == "PUT" and len(parts) == 5:
            self._lfs_put(parts[1], f"{parts[2]}/{parts[3]}", parts[4], query)
            return True
        if parts[:1] == ["lfs-cdn"] and method in ("GET", "HEAD") and len(parts) == 5:
            self._lfs_cdn(parts[1], f"{parts[2]}/{parts[3]}", parts[4], query)
            return True
        repo_type = "model"
        if parts[:1] in (["datasets"], ["spaces"]):
            repo_type, parts = parts[0][:-1], parts[1:]
        if len(parts) == 6 and parts[1].endswith(".git") and parts[2:4] == ["info", "lfs"] and method == "POST":
            repo_id = f"{parts[0]}/{parts[1][:-4]}"
            if parts[4:] == ["objects", "batch"]:
                self._lfs_batch(repo_type, repo_id)
                return True
            if parts[4:] == ["objects", "verify"]:
                self._lfs_verify(repo_type, repo_id)
                return True
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            self._resolve(repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            return True
        return False

    def _route_api(self, method: str, parts: list[str], query: dict) -> bool:
        if parts == ["whoami-v2"] and method == "GET":
            user = self._require_write()
            self._json(200, {"type": "user", "name": user, "fullname": user, "orgs": [], "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
            return True
        if parts == ["validate-yaml"] and method == "POST":
            self._validate_yaml()
            return True
        if parts == ["repos", "create"] and method == "POST":
            self._create_repo()
            return True
        if parts == ["repos", "delete"] and method == "DELETE":
            self._delete_repo()
            return True
        if len(parts) < 3 or parts[0] not in ("models", "datasets", "spaces"):
            return False
        repo_type, repo_id, rest = parts[0][:-1], f"{parts[1]}/{parts[2]}", parts[3:]
        if not rest and method == "GET":
            self._repo_info(repo_type, repo_id, "main", query)
        elif rest[:1] == ["revision"] and len(rest) == 2 and method == "GET":
            self._repo_info(repo_type, repo_id, rest[1], query)
        elif rest[:1] == ["preupload"] and len(rest) == 2 and method == "POST":
            self._preupload(repo_type, repo_id, rest[1])
        elif rest[:1] == ["commit"] and len(rest) == 2 and method == "POST":
            self._commit(repo_type, repo_id, rest[1], query)
        elif rest[:1] == ["branch"] and len(rest) == 2 and method == "POST":
            self._create_branch(repo_type, repo_id, rest[1])
        elif rest[:1] == ["tree"] and len(rest) >= 2 and method == "GET":
            self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]), query)
        elif rest[:1] == ["paths-info"] and len(rest) == 2 and method == "POST":
            self._paths_info(repo_type, repo_id, rest[1])
        elif rest == ["refs"] and method == "GET":
            self._repo(repo_type, repo_id)
            self._json(200, self.server.storage.refs(repo_type, repo_id))
        elif rest[:1] == ["commits"] and len(rest) == 2 and method == "GET":
            self._repo(repo_type, repo_id)
            self._json(200, self.server.storage.commit_log(repo_type, repo_id, self._commit_of(repo_type, repo_id, rest[1])))
        elif repo_type == "space" and rest == ["variables"] and method in ("GET", "POST"):
            self._space_variables(repo_id, method)
        elif rest[:1] in (["xet-write-token"], ["xet-read-token"]):
            raise HubError(
                501,
                "This Hub server stores large files with git-LFS, not Xet. Set HF_HUB_DISABLE_XET=1 in the "
                "environment before starting Python (or uninstall hf_xet) and push again.",
            )
        else:
            return False
        return True

    # -- repos ----------------------------------------------------------------------------------
    def _create_repo(self):
        user = self._require_write()
        payload = json.loads(self._body() or b"{}")
        repo_type = payload.get("type") or "model"
        name, org = payload.get("name"), payload.get("organization") or user
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}: use one of {REPO_TYPES}.")
        if not name or not re.fullmatch(r"[A-Za-z0-9][\w.\-]{0,95}", name) or not re.fullmatch(r"[\w.\-]+", org):
            raise HubError(400, f"Invalid repo name {org}/{name}: use letters, digits, '-', '_' and '.'.")
        if repo_type == "space" and not payload.get("sdk"):
            raise HubError(400, "A Space needs an sdk (gradio, docker, static, ...).")
        repo_id = f"{org}/{name}"
        url = f"{self.base_url}/{URL_PREFIX[repo_type]}{repo_id}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        storage = self.server.storage
        with storage.lock(repo_type, repo_id):
            if storage.exists(repo_type, repo_id):
                self._json(409, {"error": f"You already created this {repo_type} repo", "url": url},
                           headers={"X-Error-Message": f"You already created this {repo_type} repo"})
                return
            storage.create(repo_type, repo_id, private=private, sdk=payload.get("sdk"), author=org)
            if repo_type == "space" and payload.get("variables"):
                storage.set_meta(repo_type, repo_id, variables={
                    v["key"]: {"value": v.get("value", ""), "description": v.get("description"), "updatedAt": _iso()} for v in payload["variables"]
                })
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self):
        self._require_write()
        payload = json.loads(self._body() or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self._token_user()}/{payload.get('name')}"
        self._repo(repo_type, repo_id, write=True)
        self.server.storage.delete(repo_type, repo_id)
        self._json(200, {})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str, query: dict):
        self._repo(repo_type, repo_id)
        storage = self.server.storage
        commit = self._commit_of(repo_type, repo_id, revision)
        tree = storage.tree(repo_type, repo_id, commit)
        meta = storage.meta(repo_type, repo_id)
        with_sizes = query.get("blobs") in ("1", "true", "True")
        siblings = []
        for entry in tree.values():
            if entry.kind != "file":
                continue
            sibling = {"rfilename": entry.path}
            if with_sizes:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs_sha256:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.lfs_sha256, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        card = {}
        if "README.md" in tree:
            try:
                card = _parse_front_matter(storage.file_bytes(repo_type, repo_id, tree["README.md"]).decode()) or {}
            except (yaml.YAMLError, UnicodeDecodeError):
                card = {}
        info = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": meta["author"],
            "sha": commit,
            "lastModified": storage.commit_date(repo_type, repo_id, commit),
            "createdAt": meta["createdAt"],
            "private": meta["private"],
            "gated": False,
            "disabled": False,
            "likes": 0,
            "tags": list(card.get("tags") or []),
            "cardData": card,
            "siblings": siblings,
        }
        if repo_type == "model":
            info.update(modelId=repo_id, downloads=0, library_name=card.get("library_name"), pipeline_tag=card.get("pipeline_tag"))
            if "model-index" in card:
                info["model-index"] = card["model-index"]
            if "config.json" in tree:
                try:
                    config = json.loads(storage.file_bytes(repo_type, repo_id, tree["config.json"]))
                    info["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
                except ValueError:
                    pass
        if repo_type == "space":
            info.update(sdk=meta.get("sdk"), runtime={"stage": "NO_APP_FILE" if "app.py" not in tree else "BUILDING"})
        self._json(200, info)

    def _space_variables(self, repo_id: str, method: str):
        """A Space's public environment variables (what its app reads, e.g. which model to load)."""
        self._repo("space", repo_id, write=True)
        variables = self.server.storage.meta("space", repo_id).get("variables", {})
        if method == "POST":
            payload = json.loads(self._body() or b"{}")
            if not payload.get("key"):
                raise HubError(400, "A Space variable needs a key.")
            variables[payload["key"]] = {"value": str(payload.get("value", "")), "description": payload.get("description"), "updatedAt": _iso()}
            self.server.storage.set_meta("space", repo_id, variables=variables)
        self._json(200, variables)

    def _validate_yaml(self):
        payload = json.loads(self._body() or b"{}")
        try:
            data = _parse_front_matter(payload.get("content", ""))
        except yaml.YAMLError as exc:
            self._json(400, {"errors": [{"message": f"Invalid YAML in README.md metadata: {exc}"}], "warnings": []})
            return
        warnings = [] if data else [{"message": "empty or missing yaml metadata in repo card"}]
        self._json(200, {"errors": [], "warnings": warnings})

    def _create_branch(self, repo_type: str, repo_id: str, branch: str):
        self._repo(repo_type, repo_id, write=True)
        payload = json.loads(self._body() or b"{}")
        self.server.storage.create_branch(repo_type, repo_id, branch, payload.get("startingPoint"))
        self._json(200, {})

    # -- listing --------------------------------------------------------------------------------
    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str, query: dict):
        self._repo(repo_type, repo_id)
        tree = self.server.storage.tree(repo_type, repo_id, self._commit_of(repo_type, repo_id, revision))
        path = path.strip("/")
        if path and (path not in tree or tree[path].kind != "directory"):
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        recursive = query.get("recursive") in ("1", "true", "True")
        prefix = f"{path}/" if path else ""
        items = [
            e.api_dict()
            for p, e in sorted(tree.items())
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])
        ]
        self._json(200, items)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str):
        self._repo(repo_type, repo_id)
        tree = self.server.storage.tree(repo_type, repo_id, self._commit_of(repo_type, repo_id, revision))
        body = self._body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        self._json(200, [tree[p.strip("/")].api_dict() for p in paths if p.strip("/") in tree])

    # -- upload ---------------------------------------------------------------------------------
    def _preupload(self, repo_type: str, repo_id: str, revision: str):
        self._repo(repo_type, repo_id, write=True)
        storage = self.server.storage
        commit = storage.resolve(repo_type, repo_id, revision)
        if commit is None and revision != "main":
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        tree = storage.tree(repo_type, repo_id, commit) if commit else {}
        patterns = storage.gitattributes_lfs_patterns(repo_type, repo_id, commit)
        payload = json.loads(self._body() or b"{}")
        files = []
        for f in payload.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            name = os.path.basename(f["path"])
            lfs = (
                f["size"] >= LFS_SIZE_THRESHOLD
                or b"\0" in sample
                or any(fnmatch.fnmatch(f["path"], p) or fnmatch.fnmatch(name, p) for p in patterns)
            )
            remote = tree.get(f["path"])
            oid = None
            if remote is not None and remote.kind == "file":
                oid = remote.lfs_sha256 or remote.oid
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files, "commitOid": commit})

    def _lfs_batch(self, repo_type: str, repo_id: str):
        self._repo(repo_type, repo_id, write=True)
        payload = json.loads(self._body() or b"{}")
        if payload.get("operation") != "upload":
            raise HubError(400, "This server only takes LFS uploads through the batch API; download through /resolve.")
        storage, objects = self.server.storage, []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            if self.server.max_lfs_size is not None and size > self.server.max_lfs_size:
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": f"File of {size} bytes is over this Hub's {self.server.max_lfs_size}-byte limit per file."}})
                continue
            existing = storage.lfs_object(repo_type, repo_id, oid)
            if existing.exists() and existing.stat().st_size == size:
                objects.append({"oid": oid, "size": size})  # already stored: no actions, the client skips it
                continue
            ticket = secrets.token_urlsafe(16)
            self.server.upload_tickets[ticket] = (repo_type, repo_id, oid, size)
            prefix = URL_PREFIX[repo_type]
            objects.append({
                "oid": oid,
                "size": size,
                "authenticated": True,
                "actions": {
                    # Like a presigned storage URL: no Authorization header is sent with the PUT.
                    "upload": {"href": f"{self.base_url}/lfs-upload/{repo_type}/{repo_id}/{oid}?ticket={ticket}"},
                    "verify": {"href": f"{self.base_url}/{prefix}{repo_id}.git/info/lfs/objects/verify"},
                },
            })
        self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, repo_type: str, repo_id: str, oid: str, query: dict):
        ticket = self.server.upload_tickets.pop(query.get("ticket", ""), None)
        if ticket is None or ticket[:3] != (repo_type, repo_id, oid):
            raise HubError(403, "Unknown or used upload ticket: ask the LFS batch API for a new upload URL.")
        size, received, digest = ticket[3], 0, hashlib.sha256()
        tmp_dir = self.server.storage.git_dir(repo_type, repo_id) / "lfs" / "incoming"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False) as tmp:
            for piece in self._iter_body():
                digest.update(piece)
                tmp.write(piece)
                received += len(piece)
        if digest.hexdigest() != oid or received != size:
            os.unlink(tmp.name)
            raise HubError(400, f"Uploaded content does not match oid {oid} / size {size}.")
        self.server.storage.store_lfs_object(repo_type, repo_id, oid, Path(tmp.name))
        self._send(200, b"", content_type="text/plain")

    def _lfs_verify(self, repo_type: str, repo_id: str):
        self._repo(repo_type, repo_id, write=True)
        payload = json.loads(self._body() or b"{}")
        obj = self.server.storage.lfs_object(repo_type, repo_id, payload.get("oid", ""))
        if not obj.exists() or obj.stat().st_size != payload.get("size"):
            raise HubError(404, f"LFS object {payload.get('oid')} is not stored (or has another size).")
        self._json(200, {"oid": payload["oid"], "size": payload["size"]})

    def _commit(self, repo_type: str, repo_id: str, revision: str, query: dict):
        self._repo(repo_type, repo_id, write=True)
        header, operations = None, []
        for line in self._body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {value.get('path')}.")
                operations.append(("file", value["path"], base64.b64decode(value["content"])))
            elif key == "lfsFile":
                operations.append(("lfsFile", value["path"], value["oid"], value.get("size")))
            elif key in ("deletedFile", "deletedFolder"):
                operations.append((key, value["path"]))
            else:
                raise HubError(400, f"Unknown commit operation {key!r}.")
        if header is None or not header.get("summary"):
            raise HubError(400, "The commit payload must start with a header holding a non-empty summary.")
        create_pr = query.get("create_pr") in ("1", "true", "True")
        sha, pr_num = self.server.storage.commit(
            repo_type, repo_id, revision, header["summary"], header.get("description", ""), operations,
            parent_commit=header.get("parentCommit"), create_pr=create_pr,
        )
        base = f"{self.base_url}/{URL_PREFIX[repo_type]}{repo_id}"
        self._json(200, {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{base}/commit/{sha}",
            "pullRequestUrl": f"{base}/discussions/{pr_num}" if pr_num else None,
        })

    # -- download -------------------------------------------------------------------------------
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str):
        self._repo(repo_type, repo_id)
        storage = self.server.storage
        commit = self._commit_of(repo_type, repo_id, revision)
        entry = storage.tree(repo_type, repo_id, commit).get(path)
        if entry is None or entry.kind != "file":
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if entry.lfs_sha256:
            # The Hub sends LFS content from a CDN: a redirect whose headers carry the file's metadata.
            location = f"{self.base_url}/lfs-cdn/{repo_type}/{repo_id}/{entry.lfs_sha256}?commit={commit}&path={quote(path)}"
            self._send(302, b"", headers={
                **common,
                "ETag": f'"{entry.oid}"',
                "X-Linked-Etag": f'"{entry.lfs_sha256}"',
                "X-Linked-Size": str(entry.size),
                "Location": location,
            })
            return
        self._send_content(storage.blob(repo_type, repo_id, entry.oid), {**common, "ETag": f'"{entry.oid}"'})

    def _lfs_cdn(self, repo_type: str, repo_id: str, sha256: str, query: dict):
        self._repo(repo_type, repo_id)
        obj = self.server.storage.lfs_object(repo_type, repo_id, sha256)
        if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not obj.exists():
            raise HubError(404, f"LFS object {sha256} not found", "EntryNotFound")
        headers = {"ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(obj.stat().st_size), "Accept-Ranges": "bytes"}
        if query.get("commit"):
            headers["X-Repo-Commit"] = query["commit"]
        self._send_content(obj.read_bytes(), headers)

    def _send_content(self, data: bytes, headers: dict):
        """200 with the bytes, or 206 for a `Range: bytes=a-b` request (resumed downloads)."""
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}"})
                return
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
            self._send(206, data[start:end + 1], content_type="application/octet-stream", headers=headers)
            return
        self._send(200, data, content_type="application/octet-stream", headers=headers)


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, storage: HubStorage, tokens: dict[str, str], verbose: bool, max_lfs_size: int | None):
        super().__init__(address, HubRequestHandler)
        self.storage, self.tokens, self.verbose, self.max_lfs_size = storage, tokens, verbose, max_lfs_size
        self.upload_tickets: dict[str, tuple] = {}


class HubServer:
    """The Hub on loopback, as a context manager (a background thread) or a blocking `serve_forever()`.

    tokens: {token: user name}; the default is one write token, `HubServer.DEFAULT_TOKEN`, for user `tester`.
    max_lfs_size: a per-file limit (bytes) the LFS batch API enforces, like the Hub's own file-size limit.
    """

    DEFAULT_TOKEN = "hf_local_write_token"

    def __init__(
        self,
        root: str | os.PathLike,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: dict[str, str] | None = None,
        verbose: bool = False,
        max_lfs_size: int | None = None,
    ):
        self.storage = HubStorage(Path(root))
        self.tokens = dict(tokens) if tokens else {self.DEFAULT_TOKEN: "tester"}
        self.httpd = _HubHTTPServer((host, port), self.storage, self.tokens, verbose, max_lfs_size)
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def token(self) -> str:
        return next(iter(self.tokens))

    @property
    def root(self) -> Path:
        return self.storage.root

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class HubServerArguments:
    root: str = field(metadata={"help": "Folder holding the repositories (created if missing)."})
    port: int = field(default=8765, metadata={"help": "Port on 127.0.0.1 (0 picks a free one)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind; keep it on loopback."})
    token: str = field(default=HubServer.DEFAULT_TOKEN, metadata={"help": "The write token clients must send."})
    user: str = field(default="tester", metadata={"help": "User name the token belongs to (namespace for bare repo names)."})
    verbose: bool = field(default=False, metadata={"help": "Log every request."})


def main(argv: list[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(HubServerArguments).parse_args_into_dataclasses(args=argv)
    server = HubServer(args.root, host=args.host, port=args.port, tokens={args.token: args.user}, verbose=args.verbose)
    print(f"Hub on {server.endpoint} storing under {server.root}; write token: {args.token}", flush=True)
    print(f"Clients: HF_ENDPOINT={server.endpoint} HF_TOKEN={args.token} HF_HUB_DISABLE_XET=1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
