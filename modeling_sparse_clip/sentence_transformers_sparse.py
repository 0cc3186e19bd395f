"""Sparse CLIP inside sentence-transformers (>= 6): a saved model folder IS a `SparseEncoder`.

    from sentence_transformers import SparseEncoder
    st = SparseEncoder("outputs/embedded/sparse")       # trust_remote_code=True without this package
    images = st.encode(pil_images)                        # torch sparse COO, = our image activations
    texts = st.encode(["a cat", "a dog"])                 # = our text activations
    st.similarity(texts, images)                          # cosine, as the model was trained

Why no custom module: `SparseCLIPModel.save_pretrained` writes `modules.json` with ST's own
`Transformer` module, whose `modality_config` routes text to `get_text_features` and images to
`get_image_features`; their `.pooler_output` already is the tower -> wide projection -> activation
(what `SparseCLIPEncoder` returns), so ST runs our model unchanged, images and texts alike, through
the processor saved beside the weights. ST's image path converts with the image processor (RGBA
loses its alpha); our encoder flattens transparency onto white first: pass RGB images (e.g.
`encoding.as_rgb(image)`) to get identical activations.

What ST lacks for us and this module adds: feature names. `SparseEncoder.decode` names dimensions
by TOKENIZER ids, which mean nothing for Sparse CLIP features (and break when the width exceeds the
vocabulary, e.g. 55,296 > CLIP's 49,408). `decode` below names feature f "f" (or a label you give),
in the format ST's `semantic_search_seismic / _qdrant / _elasticsearch / _opensearch` take.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .sparse_embeddings import SparseEmbeddings, as_csr


def to_torch_sparse(embeddings: SparseEmbeddings) -> torch.Tensor:
    """Our CSR batch as the torch sparse COO tensor ST's `encode` returns (float32, coalesced)."""
    csr = embeddings.to_scipy().tocoo()
    index = torch.from_numpy(np.vstack([csr.row, csr.col]).astype(np.int64))
    return torch.sparse_coo_tensor(index, torch.from_numpy(csr.data.astype(np.float32)), csr.shape).coalesce()


def from_torch_sparse(tensor: torch.Tensor) -> SparseEmbeddings:
    """ST's `encode` output (sparse COO or dense, 2-D) as `SparseEmbeddings` (float32, exact)."""
    if tensor.dim() != 2:
        raise ValueError(f"Expected a (rows, width) tensor, got shape {tuple(tensor.shape)}.")
    if not tensor.is_sparse:
        return SparseEmbeddings.from_dense(tensor.float())
    import scipy.sparse as sp

    tensor = tensor.coalesce().cpu()
    rows, cols = tensor.indices().numpy()
    return SparseEmbeddings.from_scipy(sp.coo_matrix((tensor.values().float().numpy(), (rows, cols)), shape=tuple(tensor.shape)))


def decode(embeddings, labels: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
    """Per row, (feature name, value) pairs by value descending: the input of ST's
    `semantic_search_*` engines. `embeddings`: ST output (torch sparse/dense), `SparseEmbeddings`
    or scipy. Names are feature numbers as strings unless `labels` (one unique name per feature)."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = from_torch_sparse(embeddings)
    csr = as_csr(embeddings)
    if labels is not None and len(set(labels)) != csr.shape[1]:
        raise ValueError(f"labels must give {csr.shape[1]} unique names, one per feature.")
    out = []
    for i in range(csr.shape[0]):
        idx, val = csr.indices[csr.indptr[i] : csr.indptr[i + 1]], csr.data[csr.indptr[i] : csr.indptr[i + 1]]
        order = np.argsort(-val, kind="stable")
        out.append([(labels[f] if labels is not None else str(f), float(v)) for f, v in zip(idx[order], val[order])])
    return out


__all__ = ["to_torch_sparse", "from_torch_sparse", "decode"]
