"""Interpretability toolkit: name features, map what they fire on, follow them through training, steer them.

Everything reads features through the one encoder (`modeling_sparse_clip.encoding.SparseCLIPEncoder`)
and caches through the one cache (`modeling_sparse_clip.caching`).

- `concept_labels`: top vocabulary words per feature through the text tower (cached with the model).
- `feature_atlas`: top images, density and modality score per feature over an image set.
- `concept_evolution`: labels/atlases on training checkpoints and per-feature histories.
- `space_cache`: labels, atlas, evolution and gallery images built once with the model and stored in
  `<model>/space_cache/`, so that a Space starts in seconds (`build_space_cache`, `load_space_cache`).
- `steering`: suppress/boost features (by id or concept word) for zero-shot prediction and retrieval
  (zero-shot classes: `modeling_sparse_clip.evaluation.zero_shot.ZeroShotClassifier`).
"""

from .concept_evolution import ConceptEvolution, discover_checkpoints
from .concept_labels import ConceptLabels, compute_concept_labels, concept_features, interpret_dir, load_or_compute_concept_labels
from .feature_atlas import DatasetImages, FeatureAtlas, build_feature_atlas, load_or_build_feature_atlas
from .space_cache import SpaceCache, build_space_cache, load_space_cache, spread_rows
from .steering import SteeringEdit, SteeringResult, edit_from_concepts, retrieve, steer, steer_image

__all__ = [
    "ConceptEvolution", "ConceptLabels", "DatasetImages", "FeatureAtlas", "SteeringEdit", "SteeringResult",
    "build_feature_atlas", "compute_concept_labels", "concept_features", "discover_checkpoints", "edit_from_concepts",
    "interpret_dir", "load_or_build_feature_atlas", "load_or_compute_concept_labels", "retrieve", "steer", "steer_image",
    "SpaceCache", "build_space_cache", "load_space_cache", "spread_rows",
]
