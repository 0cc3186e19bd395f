"""Checkpoint selection on a validation set (`evaluation.model_selection`): points in step order, the
best validation score wins, an L0 limit keeps only sparse-enough points (all points when none is)."""

import json

import pytest
import torch

from modeling_sparse_clip.evaluation.model_selection import saved_points, select_checkpoint, zero_shot_and_l0
from modeling_sparse_clip.evaluation.runner import BenchmarkArguments, SetContext
from tests.test_runner import digits_eval_set, save_tiny_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A fake run: three saved points (different heads on the same towers), steps out of name order."""
    from modeling_sparse_clip import SparseCLIPModel

    root = tmp_path_factory.mktemp("run")
    for seed, (name, step) in enumerate([("progress_100", 30), ("progress_020", 6), ("progress_050", 15)]):
        folder = save_tiny_model(root / "evolution" / name, "relu", 256, seed=0)
        model = SparseCLIPModel.from_pretrained(folder)
        torch.manual_seed(seed)
        with torch.no_grad():  # heads differ in accuracy AND in sparsity (a negative shift kills more units)
            for head in (model.visual_projection, model.text_projection):
                head.weight.normal_(std=0.3)
                head.weight.sub_(0.05 * seed)
        model.save_pretrained(folder)
        (root / "evolution" / name / "training_progress.json").write_text(json.dumps({"global_step": step}))
    return root


@pytest.fixture(scope="module")
def contexts():
    return [SetContext(digits_eval_set(120), BenchmarkArguments(interpretability=False, progress=False), references={})]


def test_points_come_in_step_order(run_dir):
    assert [step for step, _ in saved_points(run_dir)] == [6, 15, 30]
    assert [folder.name for _, folder in saved_points(run_dir)] == ["progress_020", "progress_050", "progress_100"]


def test_the_best_validation_score_wins_and_the_l0_limit_filters(run_dir, contexts, tmp_path):
    from transformers import AutoProcessor

    from modeling_sparse_clip import SparseCLIPModel

    points = saved_points(run_dir)
    processor = AutoProcessor.from_pretrained(points[0][1])
    expected = {step: zero_shot_and_l0(SparseCLIPModel.from_pretrained(folder), processor, "x", contexts, tower_cache_dir=None)
                for step, folder in points}
    l0 = {step: max(m["image_l0_percent"], m["text_l0_percent"]) for step, m in expected.items()}
    assert len(set(l0.values())) == 3 and len({m["digits"] for m in expected.values()}) > 1, expected

    chosen = select_checkpoint(points, processor, contexts, tower_cache_dir=str(tmp_path / "towers"))
    assert chosen["step"] == max(expected, key=lambda s: expected[s]["digits"])
    assert [p["validation"]["digits"] for p in chosen["points"]] == [expected[s]["digits"] for s, _ in points]

    sparsest = min(l0, key=l0.get)
    limited = select_checkpoint(points, processor, contexts, max_l0_percent=l0[sparsest] + 1e-6, tower_cache_dir=str(tmp_path / "towers"))
    assert limited["step"] == sparsest
    nothing_qualifies = select_checkpoint(points, processor, contexts, max_l0_percent=0.0, tower_cache_dir=str(tmp_path / "towers"))
    assert nothing_qualifies["step"] == chosen["step"]


def test_no_saved_points_says_how_to_get_them(contexts):
    with pytest.raises(ValueError, match="--evolution_fractions"):
        select_checkpoint([], None, contexts)
