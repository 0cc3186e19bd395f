"""The Space in a real browser: Debian chromium driven by Playwright, plus a 16-client load test.

The app runs as its own process (`python spaces/app.py ...`) on a free loopback port, on the
embedded model when it has been trained (else on the same architecture with a fresh head), with
a folder of rendered emoji as its image set. Screenshots go to test-artifacts/space/.
"""

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from interpret_fixtures import EMBEDDED_MODEL, REPO_ROOT, build_fresh_head_model, small_vocabulary, write_emoji_folder

pytestmark = pytest.mark.slow

ARTIFACTS = REPO_ROOT / "test-artifacts" / "space"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
CLASSES = "dog,cat,car,apple,heart,smile,tree,fish,flag,house"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_evolution_checkpoints(model_dir: Path):
    """progress_* copies whose text head is the final one plus shrinking noise (a stand-in run)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    for pct, noise in ((1, 1.0), (10, 0.4), (100, 0.0)):
        folder = model_dir / "evolution" / f"progress_{pct:03d}"
        shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("evolution", "interpret"))
        weights = load_file(folder / "model.safetensors")
        for key in ("text_projection.weight", "visual_projection.weight"):
            weights[key] += noise * 0.05 * torch.randn(weights[key].shape, generator=torch.Generator().manual_seed(pct))
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """A running Space: yields (url, upload temp dir, server log path)."""
    root = tmp_path_factory.mktemp("space")
    if (EMBEDDED_MODEL / "config.json").exists():
        model = EMBEDDED_MODEL
    else:
        model = build_fresh_head_model(root / "fresh-head", projection_dim=1024)
        add_evolution_checkpoints(model)
    images = write_emoji_folder(root / "images", 60)
    vocabulary = root / "vocabulary.txt"
    vocabulary.write_text("\n".join(small_vocabulary(3000)))
    uploads = root / "gradio-tmp"
    port = free_port()
    log_path = root / "server.log"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(uploads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable, str(REPO_ROOT / "spaces" / "app.py"), "--model", str(model), "--images_dir", str(images),
        "--vocabulary", str(vocabulary), "--classes", CLASSES, "--cache_dir", str(root / "cache"), "--port", str(port),
    ]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 900
        while True:
            if server.poll() is not None:
                pytest.fail(f"the Space exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"the Space did not start in 900 s:\n{log_path.read_text()[-3000:]}")
                time.sleep(2)
        yield url, uploads, log_path
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def status_text(page, elem_id: str, contains: str, timeout: float = 120_000) -> str:
    locator = page.locator(f"#{elem_id}")
    locator.filter(has_text=contains).wait_for(timeout=timeout)
    return locator.inner_text()


def shot(page, name: str):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_tab(page, name: str):
    page.get_by_role("tab", name=name).click()


def upload(page, elem_id: str, path):
    """Upload through the component's own file chooser, clearing an earlier upload first."""
    component = page.locator(f"#{elem_id}")
    clear = component.get_by_label("Clear")
    if clear.count():
        clear.first.click()
    with page.expect_file_chooser() as chooser:
        component.locator("button.upload-container").click()
    chooser.value.set_files(str(path))


def no_stack_trace(page):
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and 'File "' not in body


def test_space_tabs_in_chromium(space, browser, tmp_path):
    url, uploads, log_path = space
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_text("Sparse CLIP explorer").first.wait_for(timeout=60_000)

    # -- Inspect: gallery click, text, upload, and bad inputs --------------------------------------
    page.locator("#inspect-gallery button.thumbnail-item").nth(2).click()
    text = status_text(page, "inspect-status", "features active")
    assert "Top images" in text
    assert page.locator("#inspect-status").count() == 1
    shot(page, "01_inspect_gallery")

    page.locator("#inspect-text textarea").fill("a dog playing in the park")
    page.get_by_role("button", name="Inspect text").click()
    status_text(page, "inspect-status", "a dog playing in the park")
    shot(page, "02_inspect_text")

    page.locator("#inspect-text textarea").fill("   ")
    page.get_by_role("button", name="Inspect text").click()
    assert "empty" in status_text(page, "inspect-status", "Cannot do that")

    good = tmp_path / "my_photo.png"
    from PIL import Image

    Image.new("RGB", (300, 200), (200, 30, 30)).save(good)
    upload(page, "inspect-upload", good)
    status_text(page, "inspect-status", "Uploaded image")
    shot(page, "03_inspect_upload")

    not_image = tmp_path / "notes.txt"
    not_image.write_text("this is not an image")
    upload(page, "inspect-upload", not_image)
    assert "not an image" in status_text(page, "inspect-status", "notes.txt")
    shot(page, "04_inspect_not_an_image")

    huge = tmp_path / "huge.png"
    Image.new("RGB", (8000, 8000), (10, 120, 10)).save(huge)  # 64 MP, a small file
    upload(page, "inspect-upload", huge)
    assert "8000x8000" in status_text(page, "inspect-status", "limit is 25 MP")
    no_stack_trace(page)

    # uploads live only in the Space's temp folder
    uploaded = {p.name for p in uploads.rglob("*") if p.is_file()}
    assert {"my_photo.png", "notes.txt", "huge.png"} <= uploaded
    assert not any(p.name in {"my_photo.png", "notes.txt", "huge.png"} for p in REPO_ROOT.glob("*"))

    # -- Feature browser: by word, by id, unknown word, unknown id ---------------------------------
    open_tab(page, "Feature browser")
    page.locator("#browse-query textarea").fill("dog")
    page.get_by_role("button", name="Search").click()
    details = status_text(page, "browse-status", "Top words")
    assert "'dog'" in details and "Density" in details and "Modality score" in details
    shot(page, "05_browser_word")

    page.locator("#browse-query textarea").fill("7")
    page.get_by_role("button", name="Search").click()
    status_text(page, "browse-status", "Feature 7")
    page.get_by_text("100%").first.wait_for(timeout=30_000)  # the evolution table has the final checkpoint
    shot(page, "06_browser_id")

    page.locator("#browse-query textarea").fill("99999999")
    page.get_by_role("button", name="Search").click()
    assert "does not exist" in status_text(page, "browse-status", "Cannot do that")

    page.locator("#browse-query textarea").fill("qzxwvj")
    page.get_by_role("button", name="Search").click()
    assert "not in the" in status_text(page, "browse-status", "qzxwvj")
    shot(page, "07_browser_unknown_word")
    no_stack_trace(page)

    # -- Steering: pick an image, boost a concept, see before/after --------------------------------
    open_tab(page, "Steering")
    page.get_by_role("button", name="Steer").click()
    assert "Choose an image" in status_text(page, "steer-status", "Cannot do that")
    page.locator("#steer-gallery button.thumbnail-item").nth(5).click()
    page.locator("#steer-boost textarea").fill("dog")
    page.locator("#steer-suppress textarea").fill("")
    page.get_by_role("button", name="Steer").click()
    steered = status_text(page, "steer-status", "Steered")
    assert "boost" in steered and "Strength 2" in steered
    page.locator("#steer-after").get_by_text("dog").first.wait_for(timeout=30_000)
    assert page.locator("#steer-before").inner_text().strip()
    assert "captioning VLM" in page.locator("#steer-caption").inner_text()
    shot(page, "08_steering")

    page.locator("#steer-boost textarea").fill("notaword123")
    page.get_by_role("button", name="Steer").click()
    assert "not in the concept vocabulary" in status_text(page, "steer-status", "notaword123")
    no_stack_trace(page)

    # -- Shared concepts ---------------------------------------------------------------------------
    open_tab(page, "Shared concepts")
    page.locator("#shared-gallery button.thumbnail-item").nth(3).click()
    page.locator("#shared-text textarea").fill("")
    page.get_by_role("button", name="Compare").click()
    assert "empty" in status_text(page, "shared-status", "Cannot do that")
    page.locator("#shared-text textarea").fill("a colourful picture")
    page.get_by_role("button", name="Compare").click()
    assert "cosine similarity" in status_text(page, "shared-status", "shared")
    shot(page, "09_shared")
    no_stack_trace(page)
    assert "failed:" not in log_path.read_text()  # every bad input was an expected, explained one
    page.close()


def test_space_load_16_clients(space, tmp_path):
    from gradio_client import Client, handle_file
    from PIL import Image

    url, _, log_path = space
    picture = tmp_path / "load.png"
    Image.new("RGB", (160, 120), (30, 90, 200)).save(picture)
    calls = [
        ("/inspect_text", lambda i: (f"a picture of thing number {i}",)),
        ("/browse", lambda i: (str(i % 50),)),
        ("/shared", lambda i: (handle_file(str(picture)), "a blue square")),
        ("/steer", lambda i: (handle_file(str(picture)), "", "dog", 2, 2.0)),
    ]
    clients, requests_each = 16, 4
    latencies, errors = [], []
    lock = threading.Lock()

    def worker(index):
        try:
            client = Client(url, verbose=False)
        except Exception as error:  # noqa: BLE001
            with lock:
                errors.append(f"client {index}: {error!r}")
            return
        for r in range(requests_each):
            api_name, make_args = calls[(index + r) % len(calls)]
            start = time.perf_counter()
            try:
                result = client.predict(*make_args(index * 10 + r), api_name=api_name)
                status = result[0] if isinstance(result, (list, tuple)) else result
                if "Cannot do that" in status or "went wrong" in status:
                    raise AssertionError(f"{api_name}: {status}")
            except Exception as error:  # noqa: BLE001
                with lock:
                    errors.append(f"client {index} {api_name}: {error!r}")
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    wall = time.perf_counter() - begin
    assert not errors, f"{len(errors)} errors: {errors[:5]}\nserver log tail:\n{log_path.read_text()[-4000:]}"
    assert len(latencies) == clients * requests_each
    quantiles = statistics.quantiles(latencies, n=20)
    p50, p95 = statistics.median(latencies), quantiles[18]
    print(f"\nload test: {clients} clients x {requests_each} requests = {len(latencies)} in {wall:.1f} s; "
          f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(latencies):.2f} s")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "load_test.txt").write_text(f"clients={clients} requests_each={requests_each} wall_s={wall:.2f} p50_s={p50:.3f} p95_s={p95:.3f} max_s={max(latencies):.3f}\n")
