"""The test classes of tests/test_transformers_common.py (importing this module fetches transformers'
common tests, see tests/transformers_sdist.py; the test module guards that step)."""

import inspect
import tempfile
import unittest

import numpy as np
import torch
from parameterized import parameterized
from transformers import CLIPTextConfig, CLIPVisionConfig
from transformers.testing_utils import slow

from modeling_sparse_clip import (
    SparseCLIPConfig,
    SparseCLIPModel,
    SparseCLIPTextModelWithProjection,
    SparseCLIPVisionModelWithProjection,
)
from tests.transformers_sdist import common_test_modules

modeling_common, configuration_common = common_test_modules()
ModelTesterMixin = modeling_common.ModelTesterMixin
ConfigTester = configuration_common.ConfigTester


class SparseCLIPModelTester:
    """`CLIPModelTester` with a SparseCLIPConfig: the same text tower (batch 12, 7 tokens, vocab 99) and vision
    tower (30 px, patch 2), hidden 32, 2 layers, 4 heads, intermediate 37, dropout 0.1; projection 64."""

    def __init__(self, parent, batch_size=12, seq_length=7, image_size=30, patch_size=2, vocab_size=99, is_training=True):
        self.parent = parent
        self.batch_size, self.seq_length, self.vocab_size = batch_size, seq_length, vocab_size
        self.image_size, self.patch_size, self.num_channels = image_size, patch_size, 3
        self.is_training = is_training
        self.hidden_size, self.num_hidden_layers, self.num_attention_heads = 32, 2, 4

    def tower_configs(self):
        common = dict(hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                      dropout=0.1, attention_dropout=0.1, initializer_range=0.02)
        text = CLIPTextConfig(vocab_size=self.vocab_size, max_position_embeddings=512, **common)
        vision = CLIPVisionConfig(image_size=self.image_size, patch_size=self.patch_size, num_channels=3, **common)
        return text, vision

    def get_config(self):
        text, vision = self.tower_configs()
        return SparseCLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=64)

    def text_inputs(self):
        input_ids = modeling_common.ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = modeling_common.random_attention_mask([self.batch_size, self.seq_length])
        for row, start in enumerate(np.random.randint(1, self.seq_length - 1, size=(self.batch_size,))):
            attention_mask[row, :start], attention_mask[row, start:] = 1, 0  # right padding, as CLIPTextModelTester
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def image_inputs(self):
        return {"pixel_values": modeling_common.floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])}

    def prepare_config_and_inputs_for_common(self):
        return self.get_config(), {**self.text_inputs(), **self.image_inputs(), "return_loss": True}


class SparseCLIPModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SparseCLIPModel,)
    additional_model_inputs = ["pixel_values"]
    test_resize_embeddings = False
    test_attention_outputs = False
    _is_composite = True

    def setUp(self):
        self.model_tester = SparseCLIPModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=SparseCLIPConfig, has_text_modality=False, common_properties=["projection_dim", "logit_scale_init_value"]
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = SparseCLIPModel(config).eval()
        with torch.no_grad():
            out = model(**inputs)
        self.assertEqual(out.logits_per_image.shape, (self.model_tester.batch_size, self.model_tester.batch_size))
        self.assertEqual(out.image_activations.shape, (self.model_tester.batch_size, config.projection_dim))

    # -- CLIPModelTest's skips, with its reasons ---------------------------------------------------------------
    @unittest.skip(reason="Hidden_states is tested in individual model tests")
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason="Inputs_embeds is tested in individual model tests")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="Retain_grad is tested in individual model tests")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    @unittest.skip(reason="CLIPModel does not have input/output embeddings")
    def test_model_get_set_embeddings(self):
        pass

    @parameterized.expand(modeling_common.TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION)
    @slow
    def test_eager_matches_sdpa_inference(self, *args):  # CLIPModelTest: @slow (runs with RUN_SLOW=1)
        return getattr(ModelTesterMixin, self._testMethodName)(self)

    def test_sdpa_can_dispatch_on_flash(self):
        self.skipTest(reason="CLIP text tower has two attention masks: `causal_attention_mask` and `attention_mask`")

    def test_sdpa_can_compile_dynamic(self):
        self.skipTest(reason="CLIP model can't be compiled dynamic, error in clip_loss`")

    # -- CLIPModelTest's overrides -------------------------------------------------------------------------------
    def test_initialization(self):
        """As CLIPModelTest: the logit scale starts at ln(1/0.07), every other parameter at 0 or 1 under zero-init."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        configs_no_init = modeling_common._config_zero_init(config)
        for model_class in self.all_model_classes:
            model = model_class(config=configs_no_init)
            for name, param in model.named_parameters():
                if not param.requires_grad:
                    continue
                if name == "logit_scale":
                    self.assertAlmostEqual(param.data.item(), np.log(1 / 0.07), delta=1e-3, msg=name)
                else:
                    self.assertIn(((param.data.mean() * 1e9).round() / 1e9).item(), [0.0, 1.0], msg=name)

    def test_load_vision_text_config(self):
        """As CLIPModelTest: each tower's config loads on its own from a saved SparseCLIPConfig."""
        config = self.model_tester.get_config()
        with tempfile.TemporaryDirectory() as folder:
            config.save_pretrained(folder)
            self.assertDictEqual(config.vision_config.to_dict(), CLIPVisionConfig.from_pretrained(folder).to_dict())
            self.assertDictEqual(config.text_config.to_dict(), CLIPTextConfig.from_pretrained(folder).to_dict())

    def test_sdpa_can_dispatch_composite_models(self):
        """As CLIPModelTesterMixin: the requested attention reaches both towers."""
        for model_class in self.all_model_classes:
            config, _ = self.model_tester.prepare_config_and_inputs_for_common()
            with tempfile.TemporaryDirectory() as folder:
                model_class(config).save_pretrained(folder)
                sdpa = model_class.from_pretrained(folder, attn_implementation="sdpa")
                eager = model_class.from_pretrained(folder, attn_implementation="eager")
            for tower in ("vision_model", "text_model"):
                if hasattr(sdpa, tower):
                    self.assertEqual(getattr(sdpa, tower).config._attn_implementation, "sdpa")
                    self.assertEqual(getattr(eager, tower).config._attn_implementation, "eager")
            self.assertEqual(sdpa.config._attn_implementation, "sdpa")
            self.assertEqual(eager.config._attn_implementation, "eager")


class _OneTowerTester(SparseCLIPModelTester):
    """`CLIPVisionModelTester` / `CLIPTextModelTester` (same tiny towers), with a full SparseCLIPConfig."""

    def __init__(self, parent, modality):
        super().__init__(parent)
        self.modality = modality
        self.seq_length = (self.image_size // self.patch_size) ** 2 + 1 if modality == "image" else self.seq_length

    def prepare_config_and_inputs_for_common(self):
        return self.get_config(), self.image_inputs() if self.modality == "image" else self.text_inputs()


class _OneTowerSkips:
    """CLIPVisionModelTest's and CLIPTextModelTest's common skips (the one-tower models have no loss).
    The CLIP file names the last one `..._use_reentrant`, which transformers 5 renamed `..._use_reentrant_true`."""

    @unittest.skip(reason="CLIP does not use inputs_embeds")
    def test_inputs_embeds(self):
        pass

    @unittest.skip
    def test_training(self):
        pass

    @unittest.skip
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(reason="This architecture seem to not compute gradients properly when using GC, check: https://github.com/huggingface/transformers/pull/27124")
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(reason="This architecture seem to not compute gradients properly when using GC, check: https://github.com/huggingface/transformers/pull/27124")
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass


class SparseCLIPVisionModelWithProjectionTest(_OneTowerSkips, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SparseCLIPVisionModelWithProjection,)
    test_resize_embeddings = False

    def setUp(self):
        self.model_tester = _OneTowerTester(self, "image")

    def test_model_get_set_embeddings(self):  # CLIPVisionModelTest's override: patch embedding in, no output embedding
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = SparseCLIPVisionModelWithProjection(config)
        self.assertIsInstance(model.get_input_embeddings(), torch.nn.Module)
        self.assertTrue(model.get_output_embeddings() is None or isinstance(model.get_output_embeddings(), torch.nn.Linear))

    def test_forward_signature(self):  # CLIPVisionModelTest's override
        self.assertListEqual([*inspect.signature(SparseCLIPVisionModelWithProjection.forward).parameters][1:2], ["pixel_values"])

    def test_sdpa_can_dispatch_composite_models(self):
        SparseCLIPModelTest.test_sdpa_can_dispatch_composite_models(self)


class SparseCLIPTextModelWithProjectionTest(_OneTowerSkips, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SparseCLIPTextModelWithProjection,)
    model_split_percents = [0.5, 0.8, 0.9]

    def setUp(self):
        self.model_tester = _OneTowerTester(self, "text")

    @parameterized.expand(modeling_common.TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION)
    @slow
    def test_eager_matches_sdpa_inference(self, *args):  # CLIPTextModelTest: @slow (runs with RUN_SLOW=1)
        return getattr(ModelTesterMixin, self._testMethodName)(self)

    def test_sdpa_can_dispatch_composite_models(self):
        SparseCLIPModelTest.test_sdpa_can_dispatch_composite_models(self)

    def test_sdpa_can_dispatch_on_flash(self):
        self.skipTest(reason="CLIPTextModel has two attention masks: `causal_attention_mask` and `attention_mask`")
