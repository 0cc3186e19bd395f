"""The reference encoders the interpretability metrics judge with: real pretrained weights, loaded offline."""

import numpy as np
import pytest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_efficientnet_reference_recognises_real_photos():
    """The pretrained ImageNet weights are really loaded: scikit-learn's two sample photos (a Chinese
    temple, a flower) land in matching ImageNet classes, which random weights would not do."""
    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from modeling_sparse_clip.evaluation.reference import EfficientNetLite0Reference

    reference = EfficientNetLite0Reference(progress=False)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    names = [d.split(",")[0] for d in timm.data.ImageNetInfo().label_descriptions()]
    probabilities = reference.classify_images(photos)
    top5 = [[names[i] for i in np.argsort(-row)[:5]] for row in probabilities]
    assert top5[0][0] in {"palace", "monastery", "church", "bell cote", "stupa", "pagoda"}, top5[0]
    assert "daisy" in top5[1], top5[1]
    features = reference.embed_images(photos)
    assert features.shape == (2, 1280) and (features >= 0).all()  # global-pooled post-ReLU6 features


def test_folded_batch_norms_give_the_unfolded_features():
    """The reference folds its batch norms into the convolutions for speed; on real photos its
    features match timm's unfolded model to float32 rounding, and no BatchNorm2d is left."""
    import torch
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from modeling_sparse_clip.evaluation.reference import EfficientNetLite0Reference
    from modeling_sparse_clip.pretrained_towers import load_efficientnet_lite0_timm

    reference = EfficientNetLite0Reference(progress=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in reference.model.modules())
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    unfolded = load_efficientnet_lite0_timm(num_classes=1000).eval()
    with torch.no_grad():
        pixels = torch.stack([reference.transform(p) for p in photos])
        expected = unfolded.forward_head(unfolded.forward_features(pixels), pre_logits=True).numpy()
    np.testing.assert_allclose(reference.embed_images(photos), expected, rtol=1e-3, atol=1e-4)


def test_minilm_reference_puts_related_words_together(tmp_path):
    from modeling_sparse_clip.evaluation.reference import MiniLMTextReference

    text = MiniLMTextReference(progress=False, cache_dir=tmp_path)
    cat, kitten, truck = text.embed_texts(["cat", "kitten", "truck"], cache=True)
    assert cat @ kitten > cat @ truck + 0.2
    np.testing.assert_allclose(np.linalg.norm([cat, kitten, truck], axis=1), 1.0, rtol=1e-5)
    assert len(list(tmp_path.glob("minilm_*.safetensors"))) == 1  # cached by a hash of the words
    np.testing.assert_array_equal(text.embed_texts(["cat", "kitten", "truck"], cache=True)[0], cat)


def test_a_model_folder_can_be_the_reference_image_encoder(tmp_path):
    """Pluggable reference: any folder with get_image_features (here a tiny Sparse CLIP; a converted
    OpenAI CLIP in practice, which is what the paper used)."""
    from PIL import Image

    from modeling_sparse_clip.evaluation.reference import ModelImageReference, image_reference
    from tests.test_runner import save_tiny_model

    folder = save_tiny_model(tmp_path / "tiny", "none", 24)
    reference = image_reference(folder, progress=False, image_size=224)
    assert isinstance(reference, ModelImageReference)
    features = reference.embed_images([Image.new("RGB", (40, 40), c) for c in ("red", "blue", "white")])
    assert features.shape == (3, 24) and np.isfinite(features).all()
