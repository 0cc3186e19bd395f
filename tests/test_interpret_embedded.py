"""Semantic checks of the toolkit on the trained embedded model (outputs/embedded/sparse after `make main`;
otherwise the `embedded_model_dir` fixture trains the same recipe once, as CI does).
- Concept labels make sense: among the strongest features of rendered dog / cat emoji, one has a
  word of that animal among its top words (over the 20K most frequent English words).
- Steering moves zero-shot predictions toward the boosted concept on held-out images, in most trials;
  the rates are printed and written to test-artifacts/interpret/steering.json.
"""

import json

import numpy as np
import pytest

from interpret_fixtures import REPO_ROOT, render_emoji

pytestmark = [pytest.mark.slow]

ANIMALS = {
    "dog": ("\U0001F415\U0001F436\U0001F429\U0001F9AE", {"dog", "dogs", "puppy", "pup", "puppies", "canine", "hound", "poodle", "doggy", "pooch",
                                                         "mutt", "terrier", "retriever", "spaniel", "beagle", "bulldog", "guide dog", "service dog"}),
    "cat": ("\U0001F408\U0001F431\U0001F63A\U0001F639", {"cat", "cats", "kitten", "kitty", "feline", "kitties", "tomcat", "pussycat", "grinning cat"}),
}


@pytest.fixture(scope="module")
def encoder(embedded_model_dir):
    from modeling_sparse_clip.encoding import SparseCLIPEncoder

    return SparseCLIPEncoder.from_pretrained(embedded_model_dir, progress=False)


@pytest.fixture(scope="module")
def labels(encoder, embedded_model_dir):
    data = pytest.importorskip("modeling_sparse_clip.data")
    from modeling_sparse_clip.interpret import load_or_compute_concept_labels

    # the 20K most frequent English words: the wordfreq half of the paper's vocabulary, 5x quicker than all of it
    from wordfreq import top_n_list

    return load_or_compute_concept_labels(encoder, top_n_list("en", 20000), model_dir=embedded_model_dir)


@pytest.mark.parametrize("animal", sorted(ANIMALS))
def test_animal_emoji_features_are_named_after_the_animal(encoder, labels, animal):
    chars, words = ANIMALS[animal]
    acts = encoder.encode_images(render_emoji(list(chars))).to_dense().numpy()
    found = []
    for char, row in zip(chars, acts):
        for feature in np.argsort(-row)[:5]:
            top = [w for w, _ in labels.words(int(feature), 10)]
            if words & set(top):
                found.append((char, int(feature), top))
    print(f"\n{animal}: {len(found)} of the top-5 features of {len(chars)} emoji carry an {animal} word:",
          *[f"  {c} f{f}: {', '.join(t)}" for c, f, t in found], sep="\n")
    # measured on the embedded model: 4 of 4 cat emoji and 3 of 4 dog emoji have such a feature
    # (e.g. f4060: dog, doggy, face, canine, pet, puppy); the issue asks for such cases to exist
    assert found, f"no top-5 feature of {animal} emoji has a {animal} word among its top-10 words"


def test_steering_moves_zero_shot_toward_the_boosted_concept(encoder):
    data = pytest.importorskip("modeling_sparse_clip.data")
    from modeling_sparse_clip.evaluation.zero_shot import ZeroShotClassifier
    from modeling_sparse_clip.interpret import edit_from_concepts, steer

    eval_sets = data.load_eval_sets()
    eval_set = eval_sets.get("emoji_subgroups") or next(e for e in eval_sets.values() if e.task == "zero_shot")
    classifier = ZeroShotClassifier(encoder, eval_set.class_names, eval_set.templates or ["{}"])
    rng = np.random.default_rng(0)
    rows = rng.choice(len(eval_set.dataset), size=min(100, len(eval_set.dataset)), replace=False)
    acts = encoder.encode_images([eval_set.dataset[int(i)]["image"] for i in rows]).to_dense().numpy()
    moved = flipped = 0
    for image_acts in acts:
        before = classifier.probabilities(image_acts)[0]
        target = int(rng.choice([c for c in range(len(eval_set.class_names)) if c != int(before.argmax())]))
        edit, _ = edit_from_concepts(encoder, boost=[eval_set.class_names[target]], top_k=2, strength=2.0)
        after = classifier.probabilities(steer(image_acts, edit))[0]
        moved += after[target] > before[target]
        flipped += int(after.argmax()) == target
    n = len(acts)
    report = {"eval_set": eval_set.name, "trials": n, "top_k": 2, "strength": 2.0, "strength_scale": "max",
              "moved_toward_target": moved / n, "prediction_became_target": flipped / n}
    print("\nsteering:", report)
    out = REPO_ROOT / "test-artifacts" / "interpret"
    out.mkdir(parents=True, exist_ok=True)
    (out / "steering.json").write_text(json.dumps(report, indent=2))
    assert moved / n > 0.5, report
