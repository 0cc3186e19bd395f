"""sparse-clip: the reference Hugging Face implementation of Sparse CLIP (arXiv 2601.20075).

Importing the package registers the model with the Auto classes and marks the two Hub files
(`configuration_sparse_clip.py`, `modeling_sparse_clip.py`) to be saved next to the weights, so
`AutoModel.from_pretrained(folder_or_repo, trust_remote_code=True)` works without this package.
"""

import importlib.util


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# A search server needs only the torch-free modules (sparse_embeddings' CSR helpers, sparse_index,
# search_backends): without torch the package still imports, with no model registered.
if _installed("torch"):
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForTextEncoding,
        AutoModelForZeroShotImageClassification,
        AutoProcessor,
        CLIPProcessor,
    )

    from .configuration_sparse_clip import SparseCLIPConfig
    from .modeling_sparse_clip import (
        SparseCLIPModel,
        SparseCLIPOutput,
        SparseCLIPTextModelWithProjection,
        SparseCLIPVisionModelWithProjection,
        contrastive_loss,
        sparsify,
    )

    AutoConfig.register("sparse_clip", SparseCLIPConfig, exist_ok=True)
    AutoModel.register(SparseCLIPConfig, SparseCLIPModel, exist_ok=True)
    # pipeline("zero-shot-image-classification", model=folder) loads through this one
    AutoModelForZeroShotImageClassification.register(SparseCLIPConfig, SparseCLIPModel, exist_ok=True)
    # the text half alone, as transformers maps CLIPTextModel (no Auto class takes an image tower alone)
    AutoModelForTextEncoding.register(SparseCLIPConfig, SparseCLIPTextModelWithProjection, exist_ok=True)
    # Any image processor + any tokenizer: transformers' CLIPProcessor already pairs them generically.
    AutoProcessor.register(SparseCLIPConfig, CLIPProcessor, exist_ok=True)
    SparseCLIPConfig.register_for_auto_class()
    SparseCLIPModel.register_for_auto_class("AutoModel")  # the other Auto classes: modeling_sparse_clip.AUTO_MAP
    # a saved one-tower folder copies the code too, and AutoModel(trust_remote_code=True) loads it as itself
    SparseCLIPVisionModelWithProjection.register_for_auto_class("AutoModel")
    SparseCLIPTextModelWithProjection.register_for_auto_class("AutoModel")

__all__ = [
    "SparseCLIPConfig",
    "SparseCLIPModel",
    "SparseCLIPOutput",
    "SparseCLIPTextModelWithProjection",
    "SparseCLIPVisionModelWithProjection",
    "contrastive_loss",
    "sparsify",
    "CLIPProcessor",
]
__version__ = "0.1.0"
