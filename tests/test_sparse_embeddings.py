"""SparseEmbeddings: exact round trips (dense, scipy, safetensors, Parquet, datasets) for every value
dtype, and the encode helpers on a tiny SparseCLIPModel with real emoji images and the real CLIP BPE."""

import datasets
import numpy as np
import pytest
import torch

from conftest import render_emoji_pairs, tiny_clip_configs
from modeling_sparse_clip import SparseCLIPConfig, SparseCLIPModel
from modeling_sparse_clip.sparse_embeddings import VALUE_DTYPES, SparseEmbeddings, encode_images, encode_texts


@pytest.fixture
def dense():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(9, 200, generator=g) - 1.8)  # ~4% density
    x[4] = 0  # an empty row
    x[7, 199] = 3.0  # the last column
    x[2, 5] = 1e-30  # underflows to 0 in fp16 / stays in bf16
    return x


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_dense_round_trip_is_exact(dense, dtype):
    emb = SparseEmbeddings.from_dense(dense, dtype)
    assert emb.shape == (9, 200) and emb.dtype == dtype
    assert emb.indices.dtype == torch.int32 and emb.indptr.dtype == torch.int64
    assert torch.equal(emb.to_dense(), dense.to(dtype))
    assert emb.row_nnz()[4] == 0
    assert emb.nnz == int((dense.to(dtype) != 0).sum())
    # Columns are sorted within rows, as scipy's canonical CSR.
    assert emb.to_scipy().has_sorted_indices


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_scipy_round_trip_is_exact(dense, dtype):
    emb = SparseEmbeddings.from_dense(dense, dtype)
    csr = emb.to_scipy()
    np.testing.assert_array_equal(csr.toarray(), dense.to(dtype).float().numpy())
    assert SparseEmbeddings.from_scipy(csr, dtype).equal(emb)


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_safetensors_round_trip_is_exact(dense, dtype, tmp_path):
    emb = SparseEmbeddings.from_dense(dense, dtype)
    emb.save(tmp_path / "emb.safetensors")
    back = SparseEmbeddings.load(tmp_path / "emb.safetensors")
    assert back.equal(emb) and torch.equal(back.to_dense(), dense.to(dtype))


@pytest.mark.parametrize("dtype", VALUE_DTYPES)
def test_parquet_and_datasets_round_trips_are_exact(dense, dtype, tmp_path):
    emb = SparseEmbeddings.from_dense(dense, dtype)
    emb.to_parquet(tmp_path / "emb.parquet")
    assert SparseEmbeddings.from_parquet(tmp_path / "emb.parquet").equal(emb)
    # datasets: in memory, after save_to_disk, after a select, and read from our Parquet file.
    ds = emb.to_dataset(caption=[f"row {i}" for i in range(len(emb))])
    assert set(ds.column_names) == {"indices", "values", "caption"}
    assert SparseEmbeddings.from_dataset(ds).equal(emb)
    ds.save_to_disk(tmp_path / "ds")
    assert SparseEmbeddings.from_dataset(datasets.load_from_disk(tmp_path / "ds")).equal(emb)
    picked = SparseEmbeddings.from_dataset(ds.select([7, 2, 4]))
    assert torch.equal(picked.to_dense(), dense.to(dtype)[[7, 2, 4]])
    from_file = datasets.Dataset.from_parquet(str(tmp_path / "emb.parquet"))
    assert SparseEmbeddings.from_dataset(from_file, width=200).equal(emb)


def test_datasets_without_width_says_what_to_do(dense, tmp_path):
    SparseEmbeddings.from_dense(dense).to_parquet(tmp_path / "emb.parquet")
    with pytest.raises(ValueError, match="pass width="):
        SparseEmbeddings.from_dataset(datasets.Dataset.from_parquet(str(tmp_path / "emb.parquet")))


def test_rows_concat_and_bad_input(dense, tmp_path):
    emb = SparseEmbeddings.from_dense(dense)
    assert SparseEmbeddings.concat([emb[:3], emb[3:4], emb[4:]]).equal(emb)
    assert torch.equal(emb[7].to_dense()[0], dense[7])
    assert emb.nbytes() == 8 * 10 + 4 * emb.nnz + 4 * emb.nnz
    with pytest.raises(ValueError, match="indices must lie"):
        SparseEmbeddings(emb.indptr, emb.indices, emb.values, width=100)
    with pytest.raises(ValueError, match="must be one of"):
        SparseEmbeddings.from_dense(dense.double())
    torch.save({"x": 1}, tmp_path / "other.pt")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a sparse embedding file"):
        SparseEmbeddings.load(tmp_path / "other.safetensors")


# ----------------------------------------------------------------------------------------------
# Encoding with a real (tiny) model, real images and the real CLIP tokenizer
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_and_processor():
    from conversion.clip_processing import build_clip_processor

    text, vision = tiny_clip_configs(vocab=49408)
    text.max_position_embeddings = 32
    text.bos_token_id, text.eos_token_id, text.pad_token_id = 49406, 49407, 49407
    torch.manual_seed(0)
    config = SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=512)
    model = SparseCLIPModel(config).eval()
    # A negative shift folded into the projection is not possible (bias-free), so sparsify by
    # scaling half the projection rows negative: ReLU then zeroes those features for every input.
    with torch.no_grad():
        model.visual_projection.weight[::2] = -model.visual_projection.weight[::2].abs()
        model.text_projection.weight[::2] = -model.text_projection.weight[::2].abs()
    return model, build_clip_processor(image_size=32, context_length=32)


@pytest.fixture(scope="module")
def pairs():
    return render_emoji_pairs(7)


def test_encode_images_matches_the_model(model_and_processor, pairs):
    model, processor = model_and_processor
    images = [p[0] for p in pairs]
    emb = encode_images(model, processor, images, batch_size=3, progress=False)
    with torch.no_grad():
        direct = model.get_image_features(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"]).pooler_output
    assert emb.shape == (7, 512)
    assert torch.equal(emb.to_dense() != 0, direct != 0)
    torch.testing.assert_close(emb.to_dense(), direct, rtol=1e-5, atol=1e-6)
    assert 0 < emb.density() < 0.6
    # Batching does not change the result; bf16 storage keeps the same support (no underflow here).
    again = encode_images(model, processor, images, batch_size=7, progress=False)
    torch.testing.assert_close(again.to_dense(), emb.to_dense(), rtol=1e-5, atol=1e-6)
    half = encode_images(model, processor, images, batch_size=4, dtype=torch.bfloat16, progress=False)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.to_dense().float(), direct, rtol=1e-2, atol=1e-3)


def test_encode_texts_matches_the_model(model_and_processor, pairs):
    model, processor = model_and_processor
    texts = [p[1] for p in pairs]
    emb = encode_texts(model, processor, texts, batch_size=2, progress=False)
    with torch.no_grad():
        tokens = processor(text=texts, padding=True, return_tensors="pt")
        direct = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
    torch.testing.assert_close(emb.to_dense(), direct, rtol=1e-5, atol=1e-6)
    assert emb.nnz == int((direct != 0).sum())


def test_encode_with_a_dense_model_is_fully_dense(model_and_processor, pairs):
    _, processor = model_and_processor
    text, vision = tiny_clip_configs(vocab=49408)
    text.max_position_embeddings = 32
    model = SparseCLIPModel(SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                             projection_dim=64, activation="none")).eval()
    emb = encode_images(model, processor, [p[0] for p in pairs[:3]], progress=False)
    assert emb.density() == 1.0
