"""The Space as it would be deployed: staged by `publishing.stage_space` into a clean folder (no checkout
next to it: the installed package only), started from there on a model given by SPARSE_CLIP_MODEL, driven
in Debian chromium through Playwright (screenshots in test-artifacts/space/) and by 16 concurrent
gradio_client users with distinct inputs.

The first start builds the Space cache (the browser shows the progress, then reloads into the explorer);
the second start reads it from `<model>/space_cache/`. Start times, the inputs tried with the message
each got, and the load figures go to test-artifacts/space/.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from interpret_fixtures import REPO_ROOT, build_fresh_head_model, emoji_sample, render_emoji, small_vocabulary, write_emoji_folder

pytestmark = pytest.mark.slow

ARTIFACTS = REPO_ROOT / "test-artifacts" / "space"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
CLASSES = "dog,cat,car,apple,heart,smile,tree,fish,flag,house"
EXTRA_WORDS = ["Persian cat", "Santa Claus", "Sno-cat"]  # capitalised vocabulary words (WordNet keeps them)
TITLE = "Sparse CLIP explorer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_evolution_checkpoints(model_dir: Path):
    """progress_* copies whose heads are the final ones plus shrinking noise (a stand-in run)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    for pct, noise in ((1, 1.0), (10, 0.4), (100, 0.0)):
        folder = model_dir / "evolution" / f"progress_{pct:03d}"
        shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("evolution", "interpret", "space_cache"))
        weights = load_file(folder / "model.safetensors")
        for key in ("text_projection.weight", "visual_projection.weight"):
            weights[key] += noise * 0.05 * torch.randn(weights[key].shape, generator=torch.Generator().manual_seed(pct))
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def config_title(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url + "config", timeout=5) as response:
            return json.loads(response.read()).get("title")
    except (OSError, ValueError):
        return None


class SpaceProcess:
    """`python app.py` of the staged Space, run from its own folder with a private TMPDIR."""

    def __init__(self, stage: Path, model: Path, root: Path, tmpdir: Path, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
        env.update(SPARSE_CLIP_MODEL=str(model), TMPDIR=str(tmpdir), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH="")
        command = [
            sys.executable, "app.py", "--images_dir", str(root / "images"), "--vocabulary", str(root / "vocabulary.txt"),
            "--classes", CLASSES, "--cache_dir", str(root / "cache"), "--port", str(self.port), "--data_cache", str(root / "data"),
        ]
        self.started = time.perf_counter()
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=stage, env=env)

    def wait_for(self, title: str, timeout: float = 900) -> float:
        """Seconds from launch until the server's page has this title."""
        deadline = time.time() + timeout
        ready = f"{TITLE} ready in" if title == TITLE else ""  # the explorer is up once it says so
        while config_title(self.url) != title or ready not in self.log_path.read_text():
            if self.process.poll() is not None:
                pytest.fail(f"the Space exited with {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")
            if time.time() > deadline:
                pytest.fail(f"no '{title}' page after {timeout} s:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        return time.perf_counter() - self.started

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """(root, staged Space folder, model folder): the Space staged as publishing stages it."""
    from modeling_sparse_clip.publishing import stage_space

    root = tmp_path_factory.mktemp("space")
    model = build_fresh_head_model(root / "model", projection_dim=1024)
    add_evolution_checkpoints(model)
    write_emoji_folder(root / "images", 60)
    (root / "vocabulary.txt").write_text("\n".join(small_vocabulary(3000) + EXTRA_WORDS))
    stage = root / "space-repo"
    stage_space(REPO_ROOT / "spaces", stage, model_repo_id="local/sparse-clip", space_repo_id="local/sparse-clip-explorer",
                package_requirement=f"sparse-clip[space] @ {REPO_ROOT.as_uri()}")
    return root, stage, model


@pytest.fixture(scope="module")
def space(deployed, browser):
    """The staged Space started twice: the first start builds the caches (progress in the browser),
    the second reads them. Yields (url, the server's upload folder, log path, model folder)."""
    root, stage, model = deployed
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    first = SpaceProcess(stage, model, root, tmpdir, root / "first.log")
    try:
        first.wait_for(f"{TITLE} (starting)", timeout=300)
        page = browser.new_page(viewport={"width": 1200, "height": 700})
        page.goto(first.url)
        progress = page.locator("#startup-status").filter(has_text="Preparing the explorer")
        progress.wait_for(timeout=180_000)
        shot(page, "00_first_start_progress")
        progress_text = progress.inner_text()
        first_start = first.wait_for(TITLE)
        page.get_by_role("tab", name="Inspect").wait_for(timeout=120_000)  # the page reloaded into the explorer
        page.close()
    finally:
        first.stop()
    assert not list(tmpdir.glob("sparse-clip-space-*")), "the upload temp folder outlived the server"
    assert (model / "space_cache" / "space.json").is_file()

    warm = SpaceProcess(stage, model, root, tmpdir, root / "warm.log")
    try:
        warm_start = warm.wait_for(TITLE, timeout=300)
        warm_log = warm.log_path.read_text()
        assert "from the Space cache" in warm_log and "Closing server" not in warm_log  # no start-up page, no build
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "start_times.txt").write_text(
            f"first_start_s={first_start:.1f} warm_start_s={warm_start:.1f} load_average={os.getloadavg()}\nprogress page: {progress_text!r}\n"
        )
        print(f"\nfirst start {first_start:.1f} s (caches built), warm start {warm_start:.1f} s; load average {os.getloadavg()}")
        uploads = next(tmpdir.glob("sparse-clip-space-*"))
        yield warm.url, uploads, warm.log_path, model
    finally:
        warm.stop()
    assert not list(tmpdir.glob("sparse-clip-space-*"))


def shot(page, name: str):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def status_text(page, elem_id: str, contains: str, timeout: float = 120_000) -> str:
    locator = page.locator(f"#{elem_id}")
    locator.filter(has_text=contains).wait_for(timeout=timeout)
    return locator.inner_text()


def open_tab(page, name: str):
    page.get_by_role("tab", name=name).click()


def upload(page, elem_id: str, path, arrives: bool = True):
    """Upload through the component's own file chooser, clearing an earlier upload first."""
    component = page.locator(f"#{elem_id}")
    clear = component.get_by_label("Clear")
    if clear.count():
        clear.first.click()
    with page.expect_file_chooser() as chooser:
        component.locator("button.upload-container").click()
    chooser.value.set_files(str(path))
    if arrives:
        component.get_by_text(Path(path).stem).first.wait_for(timeout=60_000)  # the upload has arrived (shown as stem + suffix)


def no_python_text(page):
    body = page.locator("body").inner_text()
    for marker in ("Traceback", 'File "', "Error:", "invalid literal", "KeyError", "ValueError"):
        assert marker not in body, marker


def test_staged_space_runs_on_its_own(deployed, tmp_path):
    """The staged repo: the package as a requirement (installable from here), no sys.path edits, and
    `--help` leaves no temp folder behind."""
    root, stage, _ = deployed
    requirements = (stage / "requirements.txt").read_text().splitlines()
    assert f"sparse-clip[space] @ {REPO_ROOT.as_uri()}" in requirements
    assert not any(line.startswith("sparse-clip") and "@" not in line for line in requirements)
    assert not any("sys.path" in p.read_text() for p in stage.glob("*.py"))
    assert {"app.py", "state.py", "handlers.py", "views.py", "layout.py", "startup.py", "README.md", "packages.txt"} <= {p.name for p in stage.iterdir()}
    dry_run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation", "--no-index", "-r", "requirements.txt"],
        cwd=stage, capture_output=True, text=True, timeout=300,
    )
    assert dry_run.returncode == 0 and "sparse-clip" in dry_run.stdout.replace("_", "-"), dry_run.stdout + dry_run.stderr
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "app.py", "--help"], cwd=stage, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "--model" in result.stdout
    assert not list(tmp_path.glob("sparse-clip-space-*"))


INPUTS_TRIED: list[tuple[str, str, str]] = []


def tried(page, tab: str, what: str, elem_id: str, contains: str) -> str:
    text = status_text(page, elem_id, contains)
    INPUTS_TRIED.append((tab, what, " ".join(text.split())))
    return text


def test_space_tabs_in_chromium(space, browser, tmp_path):
    from PIL import Image

    url, uploads, log_path, model = space
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_text(TITLE).first.wait_for(timeout=60_000)
    body = page.locator("body").inner_text()
    assert str(model) not in body and str(Path(model).parent) not in body and "/tmp" not in body  # no server paths
    assert "20 MB" in body and "21 MB" not in body and "25 MB" not in body  # the one upload limit
    # the gallery shows the range of the image set, not one kind of image
    captions = page.locator("#inspect-gallery").inner_text().split("\n")
    assert len({c.split()[0] for c in captions if c.strip()}) >= 12

    # -- Inspect: gallery click, text, upload, and bad inputs --------------------------------------
    page.locator("#inspect-gallery button.thumbnail-item").nth(2).click()
    assert "Top images" in status_text(page, "inspect-status", "features active")
    shot(page, "01_inspect_gallery")

    page.locator("#inspect-text textarea").fill("a dog playing in the park")
    page.get_by_role("button", name="Inspect text").click()
    status_text(page, "inspect-status", "a dog playing in the park")
    page.locator("#inspect-table").get_by_text("top words").first.wait_for(timeout=30_000)
    first_row = page.locator("#inspect-table").inner_text()
    shot(page, "02_inspect_text")

    page.locator("#inspect-text textarea").fill("   ")
    page.get_by_role("button", name="Inspect text").click()
    assert "empty" in tried(page, "Inspect", "text '   '", "inspect-status", "Cannot do that")
    page.wait_for_timeout(500)
    assert page.locator("#inspect-chart img, #inspect-chart canvas").count() == 0  # the stale chart is gone
    assert page.locator("#inspect-table").inner_text() != first_row  # and the stale table
    shot(page, "03_inspect_error_clears")

    page.locator("#inspect-text textarea").fill("x" * 10_000)
    page.get_by_role("button", name="Inspect text").click()
    text = tried(page, "Inspect", "text of 10,000 characters", "inspect-status", "characters")
    assert "10,000" in text and "xxxxxxxxxx" not in text

    good = tmp_path / "my_photo.png"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(good)
    upload(page, "inspect-upload", good)
    status_text(page, "inspect-status", "my_photo.png")
    shot(page, "04_inspect_upload")

    transparent = tmp_path / "transparent_cat.png"
    cat = render_emoji(["\N{CAT FACE}"])[0].convert("RGBA")
    cat.putdata([(r, g, b, 0 if min(r, g, b) > 250 else 255) for r, g, b, _ in cat.getdata()])
    cat.save(transparent)
    upload(page, "inspect-upload", transparent)
    INPUTS_TRIED.append(("Inspect", "transparent PNG (emoji)", " ".join(status_text(page, "inspect-status", "transparent_cat.png").split())))

    not_image = tmp_path / "notes.txt"
    not_image.write_text("this is not an image")
    upload(page, "inspect-upload", not_image)
    assert "not an image" in tried(page, "Inspect", "a text file (notes.txt)", "inspect-status", "notes.txt")

    huge = tmp_path / "huge.png"
    Image.new("RGB", (8000, 8000), (10, 120, 10)).save(huge)  # 64 MP, a small file
    upload(page, "inspect-upload", huge)
    assert "8000x8000" in tried(page, "Inspect", "8000x8000 PNG (64 MP)", "inspect-status", "limit is 25 MP")

    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(21 * 1024 * 1024))
    upload(page, "inspect-upload", big, arrives=False)
    page.get_by_text("exceed the maximum allowed size").first.wait_for(timeout=30_000)
    body = page.locator("body").inner_text()
    toast = [line for line in body.splitlines() if "exceed" in line.lower()]
    INPUTS_TRIED.append(("Inspect", "21 MiB file (gradio's own check)", " ".join(toast)[:300]))
    assert toast and "20.0 Mb" in toast[0]  # gradio's check says the same limit as the page
    shot(page, "05_inspect_too_big")
    no_python_text(page)

    # uploads live only in the Space's private temp folder
    uploaded = {p.name for p in uploads.rglob("*") if p.is_file()}
    assert {"my_photo.png", "notes.txt", "huge.png"} <= uploaded
    assert not any(p.name in {"my_photo.png", "notes.txt", "huge.png"} for p in REPO_ROOT.glob("*"))

    # -- Feature browser: word (any case), id, bad ids and words ------------------------------------
    open_tab(page, "Feature browser")
    page.locator("#browse-query textarea").fill("dog")
    page.get_by_role("button", name="Search").click()
    details = status_text(page, "browse-status", "Top words")
    assert "'dog'" in details and "Density" in details and "Modality score" in details
    shot(page, "06_browser_word")

    page.locator("#browse-query textarea").fill("7")
    page.get_by_role("button", name="Search").click()
    status_text(page, "browse-status", "Feature 7")
    page.get_by_text("100%").first.wait_for(timeout=30_000)  # the evolution table has the final checkpoint
    shot(page, "07_browser_id")

    for query, expect in [
        ("99999999", "does not exist"), ("qzxwvj", "not in the"), ("²", "not a feature id"), ("x" * 10_000, "at most 60"),
        ("PERSIAN CAT", "'Persian cat'"), ("santa claus", "'Santa Claus'"), ("sno-cat", "'Sno-cat'"),
    ]:
        page.locator("#browse-query textarea").fill(query)
        page.get_by_role("button", name="Search").click()
        shown_query = query if len(query) < 30 else f"{len(query):,} characters"
        text = tried(page, "Feature browser", repr(shown_query), "browse-status", expect)
        assert len(text) < 2000
    shot(page, "08_browser_case_insensitive")
    no_python_text(page)

    # -- Steering: pick an image, boost a concept, see before/after --------------------------------
    open_tab(page, "Steering")
    caption = page.locator("#steer-caption").inner_text()
    assert "No captions here" in caption and "CAPTIONER" not in caption and "spaces/app.py" not in caption and "--vlm" not in caption
    page.get_by_role("button", name="Steer").click()
    tried(page, "Steering", "no concept, no image", "steer-status", "Cannot do that")
    page.locator("#steer-gallery button.thumbnail-item").nth(5).click()
    page.locator("#steer-boost textarea").fill("dog, DOG, Dog")
    page.locator("#steer-suppress textarea").fill("")
    page.get_by_role("button", name="Steer").click()
    steered = tried(page, "Steering", "boost 'dog, DOG, Dog'", "steer-status", "Steered")
    assert "boost" in steered and "Strength 2" in steered and steered.count("'dog'") == 1  # de-duplicated
    page.locator("#steer-after").get_by_text("dog").first.wait_for(timeout=30_000)
    assert page.locator("#steer-before").inner_text().strip()
    shot(page, "09_steering")

    for suppress, boost, expect in [
        ("", "notaword123", "not in the"), ("", ", ".join(["cat"] * 2500), "at most 8"), ("dog", "dog", "both suppressed and boosted"),
        ("", "Santa Claus", "Steered"),
    ]:
        page.locator("#steer-suppress textarea").fill(suppress)
        page.locator("#steer-boost textarea").fill(boost)
        page.get_by_role("button", name="Steer").click()
        shown_boost = boost if len(boost) < 30 else f"'cat' x {boost.count('cat'):,}"
        tried(page, "Steering", f"suppress {suppress!r} boost {shown_boost!r}", "steer-status", expect)
    no_python_text(page)

    # -- Shared concepts ---------------------------------------------------------------------------
    open_tab(page, "Shared concepts")
    page.locator("#shared-gallery button.thumbnail-item").nth(3).click()
    page.locator("#shared-text textarea").fill("")
    page.get_by_role("button", name="Compare").click()
    assert "empty" in tried(page, "Shared concepts", "empty text", "shared-status", "Cannot do that")
    page.locator("#shared-text textarea").fill("a colourful picture")
    page.get_by_role("button", name="Compare").click()
    assert "cosine similarity" in status_text(page, "shared-status", "shared")
    shot(page, "10_shared")
    no_python_text(page)
    assert "failed:" not in log_path.read_text()  # every bad input was an expected, explained one
    page.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "inputs_and_messages.txt").write_text("\n".join(f"{tab} | {what} | {message}" for tab, what, message in INPUTS_TRIED) + "\n")


def table_matches(table: dict, expected: np.ndarray, value_column: str, tolerance: float = 2e-3) -> bool:
    """Every row's feature has the activation this input gives it (the expected unit activations)."""
    headers, rows = table["headers"], table["data"]
    if not rows:
        return False
    f_col, v_col = headers.index("feature"), headers.index(value_column)
    return all(abs(float(expected[int(row[f_col])]) - float(row[v_col])) <= tolerance for row in rows)


def test_space_load_16_clients_distinct_inputs(space, tmp_path):
    """16 users at once, each with its own text, image, word and image+text: every answer is computed
    from its own request (checked against the features of that input, computed here), none from another's."""
    from gradio_client import Client, handle_file

    from modeling_sparse_clip.encoding import SparseCLIPEncoder
    from modeling_sparse_clip.images import open_image
    from modeling_sparse_clip.interpret import concept_features

    url, _, log_path, model = space
    encoder = SparseCLIPEncoder.from_pretrained(model, cache_dir=tmp_path / "cache", progress=False)
    clients = 16
    chars, names = emoji_sample(clients)
    pictures = []
    for i, image in enumerate(render_emoji(chars)):
        path = tmp_path / f"user{i}.png"
        if i % 2:  # every other upload transparent, as most emoji and icons on the web
            rgba = image.convert("RGBA")
            rgba.putdata([(r, g, b, 0 if min(r, g, b) > 250 else 255) for r, g, b, _ in rgba.getdata()])
            rgba.save(path)
        else:
            image.save(path)
        pictures.append(path)
    texts = [f"a picture of {name}" for name in names]
    words = [w for w in small_vocabulary(3000) if w.isalpha()][200 : 200 + clients]

    def unit(acts):
        return acts / max(float(np.linalg.norm(acts)), 1e-12)

    expected_text = [unit(encoder.encode_text(t)) for t in texts]
    expected_image = [unit(encoder.encode_image(open_image(p))) for p in pictures]
    expected_word = [[f for f, _ in concept_features(encoder, w, top_k=8)] for w in words]
    shared_texts = [f"{name} on a table" for name in names]
    expected_shared = [unit(encoder.encode_text(t)) for t in shared_texts]

    def check(kind: str, i: int, result) -> bool:
        if kind == "text":
            return texts[i] in result[0] and table_matches(result[3], expected_text[i], "activation")
        if kind == "image":
            return "Uploaded image" in result[0] and table_matches(result[3], expected_image[i], "activation")
        if kind == "word":
            return f"'{words[i]}'" in result[0] and [row[0] for row in result[1]["data"]] == expected_word[i]
        table = result[2]
        return bool(table["data"]) and table_matches(table, expected_image[i], "image") and table_matches(table, expected_shared[i], "text")

    calls = [
        ("text", "/inspect_text", lambda i: (texts[i],)),
        ("image", "/inspect_upload", lambda i: (handle_file(str(pictures[i])),)),
        ("word", "/browse", lambda i: (words[i],)),
        ("shared", "/shared", lambda i: (handle_file(str(pictures[i])), shared_texts[i])),  # (gr.State inputs are not in the API)
    ]
    latencies, errors, mismatches, crosstalk = [], [], [], []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker(i):
        try:
            client = Client(url, verbose=False)
        except Exception as error:  # noqa: BLE001
            with lock:
                errors.append(f"client {i}: {error!r}")
            barrier.abort()
            return
        barrier.wait(timeout=300)  # all users start together
        for r in range(len(calls)):
            kind, api_name, make_args = calls[(i + r) % len(calls)]
            start = time.perf_counter()
            try:
                result = client.predict(*make_args(i), api_name=api_name)
            except Exception as error:  # noqa: BLE001
                with lock:
                    errors.append(f"client {i} {api_name}: {error!r}")
                continue
            elapsed = time.perf_counter() - start
            own = check(kind, i, result)
            others = [j for j in range(clients) if j != i and check(kind, j, result)] if not own else []
            with lock:
                latencies.append(elapsed)
                if not own:
                    (crosstalk if others else mismatches).append(f"client {i} {api_name}: got {others or result[0][:120]}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    wall = time.perf_counter() - begin
    assert not errors, f"{len(errors)} errors: {errors[:5]}\nserver log tail:\n{log_path.read_text()[-4000:]}"
    total = clients * len(calls)
    assert len(latencies) == total
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[18]
    summary = (f"clients={clients} requests={total} wall_s={wall:.1f} p50_s={p50:.2f} p95_s={p95:.2f} max_s={max(latencies):.2f} "
               f"crosstalk={len(crosstalk)} mismatches={len(mismatches)} load_average={os.getloadavg()}")
    print("\nload test: " + summary)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "load_test.txt").write_text(summary + "\n")
    assert not crosstalk, f"{len(crosstalk)} answers belonged to another user's request: {crosstalk[:5]}"
    assert not mismatches, f"{len(mismatches)} answers matched no request: {mismatches[:5]}"
