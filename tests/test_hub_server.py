"""The loopback Hub speaks huggingface_hub 2.x's HTTP API: driven here by the real client only.

Also checks that what it stores is a real git + git-LFS repository, and that the third-party
`olah` mirror serves an exported copy to the real download client.
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import huggingface_hub.constants
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from tests.fixtures.hub_server import HubServer, export_git_mirror
from tests.isolation import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub_client(monkeypatch):
    """The client as a user would configure it for this server: online, large files over git-LFS."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def hub(tmp_path, hub_client):
    with HubServer(tmp_path / "hub") as server:
        yield server


def _folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("hello hub\n")
    (root / "sub" / "weights.safetensors").write_bytes(os.urandom(4096))  # LFS by .gitattributes
    (root / "blob.dat").write_bytes(b"\0binary" + os.urandom(100))  # LFS because it is binary
    (root / "README.md").write_text("---\nlicense: mit\ntags: [demo]\n---\n# demo\n")
    return root


def _git(repo_dir: Path, *args) -> str:
    return subprocess.run(["git", "--git-dir", str(repo_dir / ".git"), *args], check=True, capture_output=True, text=True).stdout


def test_push_and_download_with_the_real_client(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    url = api.create_repo("org/demo")
    assert url.repo_id == "org/demo" and url == f"{hub.endpoint}/org/demo"
    folder = _folder(tmp_path / "src")
    commit = api.upload_folder(folder_path=folder, repo_id="org/demo", commit_message="add files")

    info = api.model_info("org/demo", files_metadata=True)
    assert info.sha == commit.oid
    assert info.card_data["license"] == "mit" and info.tags == ["demo"]
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {".gitattributes", "README.md", "notes.txt", "sub/weights.safetensors", "blob.dat"}
    weights = (folder / "sub" / "weights.safetensors").read_bytes()
    assert siblings["sub/weights.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert siblings["blob.dat"].lfs is not None and siblings["notes.txt"].lfs is None

    # Download: regular files carry the git blob id as ETag, LFS files the sha256 (via X-Linked-Etag).
    cache = tmp_path / "cache"
    for name in ("notes.txt", "sub/weights.safetensors", "blob.dat"):
        path = hf_hub_download("org/demo", name, cache_dir=cache, endpoint=hub.endpoint)
        assert Path(path).read_bytes() == (folder / name).read_bytes()
    meta = get_hf_file_metadata(hf_hub_url("org/demo", "sub/weights.safetensors", endpoint=hub.endpoint))
    assert meta.etag == hashlib.sha256(weights).hexdigest() and meta.size == len(weights) and meta.commit_hash == commit.oid
    text = (folder / "notes.txt").read_bytes()
    meta = get_hf_file_metadata(hf_hub_url("org/demo", "notes.txt", endpoint=hub.endpoint))
    assert meta.etag == hashlib.sha1(b"blob %d\0" % len(text) + text).hexdigest()
    snapshot = snapshot_download("org/demo", cache_dir=tmp_path / "snap", endpoint=hub.endpoint)
    assert (Path(snapshot) / "sub" / "weights.safetensors").read_bytes() == weights

    # Storage is a real git repository; LFS files are pointers with content in .git/lfs/objects.
    repo_dir = hub.root / "models" / "org" / "demo"
    subprocess.run(["git", "--git-dir", str(repo_dir / ".git"), "fsck", "--strict"], check=True, capture_output=True)
    assert _git(repo_dir, "rev-parse", "main").strip() == commit.oid
    pointer = _git(repo_dir, "cat-file", "-p", "main:sub/weights.safetensors")
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1\noid sha256:" + hashlib.sha256(weights).hexdigest())
    assert [c.title for c in api.list_repo_commits("org/demo")] == ["add files", "initial commit"]

    # Listing APIs.
    tree = {f.path: f for f in api.list_repo_tree("org/demo", recursive=True)}
    assert type(tree["sub"]).__name__ == "RepoFolder" and tree["sub/weights.safetensors"].size == 4096
    paths = api.get_paths_info("org/demo", ["notes.txt", "missing.txt"])
    assert [p.path for p in paths] == ["notes.txt"]


def test_pull_requests_branches_and_unchanged_files(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("org/pr")
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id="org/pr")
    pr = api.upload_file(path_or_fileobj=b"v2", path_in_repo="a.txt", repo_id="org/pr", create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and pr.pr_url.endswith("/org/pr/discussions/1")
    assert api.model_info("org/pr").sha == first.oid  # main did not move
    got = hf_hub_download("org/pr", "a.txt", revision="refs/pr/1", cache_dir=tmp_path / "c", endpoint=hub.endpoint)
    assert Path(got).read_bytes() == b"v2"
    # The same bytes again: preupload reports the remote oid, the client skips the empty commit.
    again = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id="org/pr")
    assert again.oid == first.oid
    api.create_branch("org/pr", branch="dev")
    on_dev = api.upload_file(path_or_fileobj=b"dev", path_in_repo="b.txt", repo_id="org/pr", revision="dev")
    assert api.model_info("org/pr", revision="dev").sha == on_dev.oid != api.model_info("org/pr").sha
    api.delete_file("a.txt", repo_id="org/pr")
    assert "a.txt" not in api.list_repo_files("org/pr")


def test_errors_as_the_client_sees_them(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("org/exists")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("org/exists")
    assert err.value.response.status_code == 409
    assert api.create_repo("org/exists", exist_ok=True).repo_id == "org/exists"

    intruder = HfApi(endpoint=hub.endpoint, token="hf_wrong")
    with pytest.raises(HfHubHTTPError) as err:
        intruder.create_repo("org/other")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        intruder.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="org/exists")
    assert err.value.response.status_code == 401
    assert api.list_repo_files("org/exists") == [".gitattributes"]  # nothing got in

    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/nope")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/exists", revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/exists", "missing.json", cache_dir=tmp_path / "c", endpoint=hub.endpoint)

    api.create_repo("org/secret", private=True)
    assert api.model_info("org/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint, token=False).model_info("org/secret")


def test_server_down_is_a_connection_error(tmp_path, hub_client):
    import httpx2

    with HubServer(tmp_path / "hub") as server:
        endpoint = server.endpoint
    with pytest.raises(httpx2.ConnectError):
        HfApi(endpoint=endpoint, token=HubServer.DEFAULT_TOKEN).create_repo("org/down")


def test_lfs_protocol_checks_content(hub):
    """An upload URL takes only the announced bytes; a commit cannot reference unuploaded LFS content."""
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("org/lfs")
    data = os.urandom(1000)
    oid = hashlib.sha256(data).hexdigest()
    auth = {"Authorization": f"Bearer {hub.token}", "Content-Type": "application/json"}

    def post(url, payload, headers=auth):
        req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        return json.loads(urllib.request.urlopen(req).read() or b"{}")

    batch = post(f"{hub.endpoint}/org/lfs.git/info/lfs/objects/batch", {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": 1000}]})
    upload = batch["objects"][0]["actions"]["upload"]["href"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(upload, data=os.urandom(1000), method="PUT"))
    assert err.value.code == 400  # wrong bytes for that oid (and the ticket is now spent)
    commit_url = f"{hub.endpoint}/api/models/org/lfs/commit/main"
    ndjson = b"\n".join(json.dumps(x).encode() for x in (
        {"key": "header", "value": {"summary": "dangling"}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": 1000}},
    ))
    req = urllib.request.Request(commit_url, data=ndjson, headers={**auth, "Content-Type": "application/x-ndjson"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 422 and "never uploaded" in json.loads(err.value.read())["error"]
    # The regular path works end to end.
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id="org/lfs")
    batch = post(f"{hub.endpoint}/org/lfs.git/info/lfs/objects/batch", {"operation": "upload", "objects": [{"oid": oid, "size": 1000}]})
    assert "actions" not in batch["objects"][0]  # already stored: nothing to upload


def test_readme_metadata_is_validated(hub):
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("org/card")
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [unclosed\n---\n", path_in_repo="README.md", repo_id="org/card")


def test_space_repos(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    url = api.create_repo("org/demo-space", repo_type="space", space_sdk="gradio",
                          space_variables=[{"key": "SPARSE_CLIP_MODEL", "value": "org/m"}])
    assert url == f"{hub.endpoint}/spaces/org/demo-space"
    api.upload_file(path_or_fileobj=b"import gradio\n", path_in_repo="app.py", repo_id="org/demo-space", repo_type="space")
    info = api.space_info("org/demo-space")
    assert info.sdk == "gradio" and "app.py" in [s.rfilename for s in info.siblings]
    assert api.get_space_variables("org/demo-space")["SPARSE_CLIP_MODEL"].value == "org/m"
    got = hf_hub_download("org/demo-space", "app.py", repo_type="space", cache_dir=tmp_path / "c", endpoint=hub.endpoint)
    assert Path(got).read_bytes() == b"import gradio\n"
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/demo-space")  # a Space is not a model


def test_cli_serves_until_stopped(tmp_path, hub_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.hub_server", "--port", str(port), "--root", str(tmp_path / "hub"), "--token", "hf_cli"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, line
        api = HfApi(endpoint=f"http://127.0.0.1:{port}", token="hf_cli")
        api.create_repo("org/cli")
        api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id="org/cli")
        assert (tmp_path / "hub" / "models" / "org" / "cli" / ".git").is_dir()
        assert "config.json" in api.list_repo_files("org/cli")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_olah_mirror_serves_an_exported_repo(hub, tmp_path):
    """The pushed repo, exported as plain git + git-LFS, is served by a second, independent server."""
    olah_cli = shutil.which("olah-cli") or str(Path(sys.executable).parent / "olah-cli")
    if not os.path.exists(olah_cli):
        pytest.skip("olah (the [dev] extra) is not installed")
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("org/mirrored")
    folder = _folder(tmp_path / "src")
    commit = api.upload_folder(folder_path=folder, repo_id="org/mirrored")
    mirrors = tmp_path / "mirrors"
    export_git_mirror(hub.root, "org/mirrored", mirrors)

    port = free_port()
    config = tmp_path / "olah.toml"
    config.write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{tmp_path / "olah-repos"}"\n'
        f'mirrors-path = ["{mirrors}"]\n\n[accessibility]\noffline = true\n'
    )
    proc = subprocess.Popen([olah_cli, "-c", str(config)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        olah = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{olah}/api/models/org/mirrored/revision/main", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None:
                    pytest.fail("olah exited: " + proc.stdout.read()[-2000:])
                time.sleep(0.5)
        # (olah serves mirrors under /revision/{rev}; its bare /api/models/{repo} goes upstream only)
        info = HfApi(endpoint=olah).model_info("org/mirrored", revision="main")
        assert info.sha == commit.oid
        snapshot = snapshot_download("org/mirrored", cache_dir=tmp_path / "olah-cache", endpoint=olah)
        for name in ("notes.txt", "sub/weights.safetensors", "blob.dat", "README.md"):
            assert (Path(snapshot) / name).read_bytes() == (folder / name).read_bytes(), name
    finally:
        proc.terminate()
        proc.wait(timeout=30)
