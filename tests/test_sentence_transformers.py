"""Sparse CLIP as a sentence-transformers SparseEncoder: a saved folder loads with SparseEncoder(path),
encodes real images and texts to exactly our activations, works without the package
(trust_remote_code), and ST's sparse evaluator and Seismic search run on real embedded images."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from modeling_sparse_clip import SparseCLIPModel
from modeling_sparse_clip.encoding import SparseCLIPEncoder
from modeling_sparse_clip.sentence_transformers_sparse import decode, from_torch_sparse, to_torch_sparse
from tests.isolation import hide_modules

from conftest import REPO_ROOT, render_emoji_pairs

sentence_transformers = pytest.importorskip("sentence_transformers")
from sentence_transformers import SparseEncoder  # noqa: E402

ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_towers_dir, tmp_path_factory, one_torch_thread):
    """A Sparse CLIP on tiny random CLIP towers + the real CLIP processor, saved as training saves it."""
    from modeling_sparse_clip.conversion.clip_processing import build_clip_processor

    folder = tmp_path_factory.mktemp("st_model") / "model"
    torch.manual_seed(0)
    model = SparseCLIPModel.from_towers(str(tiny_towers_dir / "vision"), str(tiny_towers_dir / "text"), projection_dim=512)
    model.save_pretrained(folder)
    build_clip_processor(image_size=32, context_length=32).save_pretrained(folder)  # as tiny_towers_dir's
    return folder


@pytest.fixture(scope="module")
def emoji_pairs():
    return render_emoji_pairs(16)  # real Noto emoji glyphs (RGB) and their CLDR names


def test_save_pretrained_writes_what_st_itself_saves(tiny_model_dir, tmp_path):
    for name in ST_FILES:
        assert (tiny_model_dir / name).exists(), name
    resaved = tmp_path / "resaved"
    SparseEncoder(str(tiny_model_dir), device="cpu").save(str(resaved))  # ST's own writer
    for name in ST_FILES:
        ours, theirs = json.loads((tiny_model_dir / name).read_text()), json.loads((resaved / name).read_text())
        if isinstance(theirs, dict):
            theirs = {k: v for k, v in theirs.items() if k != "__version__"}
        assert ours == theirs, name


def test_encode_images_and_texts_equals_our_activations(tiny_model_dir, emoji_pairs):
    images, captions = [p[0] for p in emoji_pairs], [p[1] for p in emoji_pairs]
    st = SparseEncoder(str(tiny_model_dir), device="cpu")
    assert set(st.modalities) >= {"text", "image"}
    got_images, got_texts = st.encode(images), st.encode(captions)
    assert got_images.is_sparse and got_images.shape == (16, 512)
    ours = SparseCLIPEncoder.from_pretrained(tiny_model_dir)
    ref_images, ref_texts = ours.encode_images(images), ours.encode_texts(captions)
    torch.testing.assert_close(got_images.to_dense(), ref_images.to_dense(), rtol=0, atol=1e-6)
    torch.testing.assert_close(got_texts.to_dense(), ref_texts.to_dense(), rtol=0, atol=1e-6)
    assert from_torch_sparse(got_images).nnz == ref_images.nnz  # the same active features
    assert to_torch_sparse(ref_texts).shape == got_texts.shape
    # ST's similarity is the model's cosine
    cosine = torch.nn.functional.normalize(ref_texts.to_dense(), dim=1) @ torch.nn.functional.normalize(ref_images.to_dense(), dim=1).T
    assert st.similarity_fn_name == "cosine"
    torch.testing.assert_close(st.similarity(got_texts, got_images).to_dense(), cosine, rtol=0, atol=1e-5)
    # feature names are feature numbers, in the format ST's search engines take
    first = decode(got_texts)[0]
    assert all(name == str(int(name)) for name, _ in first) and [v for _, v in first] == sorted([v for _, v in first], reverse=True)


@pytest.mark.slow
def test_loads_without_the_package_with_trust_remote_code(tiny_model_dir, emoji_pairs, tmp_path):
    captions = [p[1] for p in emoji_pairs]
    expected = SparseCLIPEncoder.from_pretrained(tiny_model_dir).encode_texts(captions).to_dense()
    script = hide_modules("modeling_sparse_clip", repo=REPO_ROOT) + textwrap.dedent(
        f"""
        import torch
        from sentence_transformers import SparseEncoder
        st = SparseEncoder({str(tiny_model_dir)!r}, device="cpu", trust_remote_code=True)
        torch.save(st.encode({captions!r}).to_dense(), {str(tmp_path / 'got.pt')!r})
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=str(tmp_path), timeout=600)
    torch.testing.assert_close(torch.load(tmp_path / "got.pt"), expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_st_evaluator_and_seismic_on_real_embedded_images(embedded_model_dir, one_torch_thread):
    """ST's SparseInformationRetrievalEvaluator (texts -> real images) agrees with our exact cosine
    search, and `semantic_search_seismic` finds (nearly) the exact dot-product top-10."""
    from sentence_transformers.sparse_encoder.evaluation import SparseInformationRetrievalEvaluator
    from sentence_transformers.sparse_encoder.search_engines import semantic_search_seismic

    from modeling_sparse_clip.search_backends import build_index

    pairs = render_emoji_pairs(300)
    images, captions = [p[0] for p in pairs], [p[1] for p in pairs]
    st = SparseEncoder(embedded_model_dir, device="cpu")
    evaluator = SparseInformationRetrievalEvaluator(
        queries={f"q{i}": c for i, c in enumerate(captions)}, corpus={f"d{i}": im for i, im in enumerate(images)},
        relevant_docs={f"q{i}": {f"d{i}"} for i in range(len(pairs))}, accuracy_at_k=[1, 10], write_csv=False, batch_size=64)
    metrics = evaluator(st)
    text_emb, image_emb = st.encode(captions, batch_size=64), st.encode(images, batch_size=64)
    exact = build_index(from_torch_sparse(image_emb), backend="exact", metric="cosine").search(from_torch_sparse(text_emb), k=10)
    accuracy = {k: next(v for key, v in metrics.items() if key.endswith(f"cosine_accuracy@{k}")) for k in (1, 10)}
    for k in (1, 10):
        ours = float(np.mean([i in row[:k] for i, row in enumerate(exact.positions.tolist())]))
        assert accuracy[k] == pytest.approx(ours), k
    assert accuracy[10] > 10 / len(pairs) * 3  # far above chance

    found, _ = semantic_search_seismic(decode(text_emb), decode(image_emb), top_k=10,
                                       search_kwargs={"query_cut": 50, "heap_factor": 0.9})
    exact_dot = build_index(from_torch_sparse(image_emb), backend="exact").search(from_torch_sparse(text_emb), k=10)
    recall = np.mean([len({h["corpus_id"] for h in hits} & set(row)) / 10 for hits, row in zip(found, exact_dot.positions.tolist())])
    print(f"semantic_search_seismic text->image recall@10 vs exact: {recall:.3f}")
    assert recall >= 0.9
