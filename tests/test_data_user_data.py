"""Users' own data: image folder + captions CSV/JSONL, load_dataset paths, WebDataset tar shards.

The folders and shards are made here from real emoji images (Google's PNGs from emoji-datasource-google,
or Noto Color Emoji drawn by Pillow when that package is missing), with one corrupt image and one row
without a caption that must be reported with their location and skipped.
"""

import csv
import io
import json
import logging
import tarfile
from pathlib import Path

import datasets
import pytest
from PIL import Image

from modeling_sparse_clip.constants import DATA_CACHE_DIR
from modeling_sparse_clip.data import SOURCES, load_image_text_dataset

LOGGER = "modeling_sparse_clip.data.user_data"
N_GOOD = 6


@pytest.fixture(scope="module")
def emoji_pngs():
    """(file name, PNG bytes, caption) for N_GOOD real emoji images."""
    for name in ("google_emoji", "noto_emoji"):
        source = SOURCES[name]
        if source.missing(DATA_CACHE_DIR) is None:
            items = source.items(DATA_CACHE_DIR)[100 : 100 + N_GOOD]
            pngs = list(source.render(items, DATA_CACHE_DIR))
            return [(f"emoji_{i}.png", png, item.captions[0]) for i, (item, png) in enumerate(zip(items, pngs))]
    pytest.skip("no emoji source installed: run `make sources`")


def corrupt_png(png: bytes) -> bytes:
    return png[: len(png) // 3]  # a truncated PNG: the header parses, the pixels do not


def write_folder(folder: Path, emoji_pngs, kind: str) -> None:
    folder.mkdir()
    rows = []
    for file_name, png, caption in emoji_pngs:
        (folder / file_name).write_bytes(png)
        rows.append({"file_name": file_name, "text": caption})
    (folder / "broken.png").write_bytes(corrupt_png(emoji_pngs[0][1]))
    (folder / "uncaptioned.png").write_bytes(emoji_pngs[1][1])
    rows.append({"file_name": "broken.png", "text": "a broken image"})
    rows.append({"file_name": "uncaptioned.png", "text": ""})
    if kind == "csv":
        with open(folder / "captions.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["file_name", "text"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        rows[0]["text"] = [rows[0]["text"], "a second caption"]
        (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def assert_loaded(dataset, emoji_pngs):
    rows = list(dataset)
    assert len(rows) == N_GOOD
    for row, (_, png, caption) in zip(rows, emoji_pngs):
        assert row["text"][0] == caption.lower().replace("_", " ").strip(": ")
        expected = Image.open(io.BytesIO(png))
        assert row["image"].size == expected.size
        assert list(row["image"].convert("RGB").getdata()) == list(expected.convert("RGB").getdata())


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize("streaming", [False, True])
def test_image_folder_with_captions(tmp_path, emoji_pngs, kind, streaming, caplog):
    folder = tmp_path / "folder"
    write_folder(folder, emoji_pngs, kind)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        dataset = load_image_text_dataset(folder, streaming=streaming)
        assert isinstance(dataset, datasets.IterableDataset if streaming else datasets.Dataset)
        assert_loaded(dataset, emoji_pngs)
    messages = [r.getMessage() for r in caplog.records]
    captions_file = folder / f"captions.{kind}"
    # line numbers: CSV has a header line, so row k is on line k + 2; JSONL row k is on line k + 1
    offset = 2 if kind == "csv" else 1
    broken = [m for m in messages if "broken.png" in m]
    assert broken and f"{captions_file}:{N_GOOD + offset}" in broken[0] and "unreadable image" in broken[0]
    uncaptioned = [m for m in messages if "uncaptioned.png" in m]
    assert uncaptioned and f"{captions_file}:{N_GOOD + 1 + offset}" in uncaptioned[0] and "no caption" in uncaptioned[0]
    if kind == "jsonl" and not streaming:
        assert list(dataset)[0]["text"] == [emoji_pngs[0][2].lower(), "a second caption"]


def test_folder_without_captions_file_says_what_to_add(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(Exception, match="captions"):
        load_image_text_dataset(tmp_path)


def write_shards(folder: Path, emoji_pngs) -> list[Path]:
    """Two shards; shard 1 holds a corrupt image (key bad) and an image without caption (key silent)."""
    folder.mkdir()
    shards = []
    samples = [(f"{i:06d}", png, caption) for i, (_, png, caption) in enumerate(emoji_pngs)]
    halves = [samples[: N_GOOD // 2], samples[N_GOOD // 2 :]]
    for index, half in enumerate(halves):
        path = folder / f"shard-{index:03d}.tar"
        with tarfile.open(path, "w") as tar:
            def add(name: str, data: bytes):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

            for key, png, caption in half:
                add(f"{key}.png", png)
                if index == 0:
                    add(f"{key}.txt", caption.encode())
                else:
                    add(f"{key}.json", json.dumps({"caption": caption}).encode())
            if index == 1:
                add("bad.png", corrupt_png(emoji_pngs[0][1]))
                add("bad.txt", b"a broken image")
                add("silent.png", emoji_pngs[1][1])
        shards.append(path)
    return shards


@pytest.mark.parametrize("pattern", ["{folder}/shard-{{000..001}}.tar", "{folder}/*.tar"])
@pytest.mark.parametrize("streaming", [True, False])
def test_webdataset_shards(tmp_path, emoji_pngs, pattern, streaming, caplog):
    folder = tmp_path / "shards"
    shards = write_shards(folder, emoji_pngs)
    spec = pattern.format(folder=folder)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        dataset = load_image_text_dataset(spec, streaming=streaming)
        assert isinstance(dataset, datasets.IterableDataset if streaming else datasets.Dataset)
        assert_loaded(dataset, emoji_pngs)
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(shards[1]) in m and "sample bad" in m and "unreadable image" in m for m in messages), messages
    assert any(str(shards[1]) in m and "sample silent" in m and "no caption" in m for m in messages), messages


def test_missing_shards_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image_text_dataset(str(tmp_path / "nothing-{000..002}.tar"))


def make_hub_style_dataset(emoji_pngs) -> datasets.Dataset:
    images = [{"bytes": png, "path": None} for _, png, _ in emoji_pngs]
    captions = [caption for _, _, caption in emoji_pngs]
    images += [{"bytes": corrupt_png(emoji_pngs[0][1]), "path": None}, {"bytes": emoji_pngs[1][1], "path": None}]
    captions += ["a broken image", None]
    return datasets.Dataset.from_dict(
        {"picture": images, "caption": captions, "extra": list(range(len(images)))},
        features=datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string"), "extra": datasets.Value("int64")}),
    )


@pytest.mark.parametrize("streaming", [False, True])
def test_saved_dataset_folder_with_other_column_names(tmp_path, emoji_pngs, streaming, caplog):
    path = tmp_path / "saved"
    make_hub_style_dataset(emoji_pngs).save_to_disk(str(path))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        dataset = load_image_text_dataset(path, image_column="picture", text_column="caption", streaming=streaming)
        assert_loaded(dataset, emoji_pngs)
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"row {N_GOOD} skipped" in m and "unreadable image" in m for m in messages), messages
    assert any(f"row {N_GOOD + 1} skipped" in m and "no caption" in m for m in messages), messages


def test_load_dataset_on_a_local_parquet_folder(tmp_path, emoji_pngs, caplog):
    folder = tmp_path / "parquet_repo"
    folder.mkdir()
    make_hub_style_dataset(emoji_pngs).to_parquet(str(folder / "train.parquet"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        dataset = load_image_text_dataset(str(folder), image_column="picture", text_column="caption")
        assert dataset.column_names == ["image", "text"]
        assert_loaded(dataset, emoji_pngs)
    assert any(f"row {N_GOOD} skipped" in r.getMessage() for r in caplog.records)


def test_wrong_column_names_are_a_clear_error(tmp_path, emoji_pngs):
    path = tmp_path / "saved"
    make_hub_style_dataset(emoji_pngs).save_to_disk(str(path))
    with pytest.raises(ValueError, match="text_column"):
        load_image_text_dataset(path, image_column="picture", text_column="text")
