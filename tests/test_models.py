import importlib.util
import os
import shutil

import numpy as np
import pytest
import safetensors.numpy
import tensorflow as tf
import tf_keras
import transformers
from transformers.modeling_tf_pytorch_utils import (
    convert_tf_weight_name_to_pt_weight_name,
)

from tf_finetune import optimization
from tf_finetune.config import ModelConfig, TrainConfig
from tf_finetune.tasks import encoder
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.models.classifier import MacroF1


def _batch(num_labels=2):
  ids = tf.constant([[2, 40, 41, 42, 3], [2, 43, 3, 0, 0]], tf.int32)
  features = {
      "input_ids": ids,
      "attention_mask": tf.cast(ids > 0, tf.int32),
      "token_type_ids": tf.zeros_like(ids),
  }
  return features, tf.constant([1, 0], tf.int32)


@pytest.mark.parametrize("l1, l2", [(0.0, 0.1), (0.2, 0.0), (0.2, 0.1)])
def test_head_regularizer_adds_to_the_loss(tiny_bert_dir, l1, l2):
  backbone = backbone_lib.load_backbone(tiny_bert_dir)
  model = encoder.build_classifier(
      backbone, 2, ModelConfig(model=tiny_bert_dir, l1=l1, l2=l2), seed=0
  )
  kernel = model.head.kernel.numpy()
  expected = l1 * np.abs(kernel).sum() + l2 * np.square(kernel).sum()
  assert len(model.losses) == 1
  assert float(model.losses[0]) == pytest.approx(expected, rel=1e-5)
  # The penalty is on the head's kernel only: not its bias, not the backbone.
  unregularized = encoder.build_classifier(
      backbone, 2, ModelConfig(model=tiny_bert_dir), seed=0
  )
  assert unregularized.losses == []


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_one_step_changes_every_trainable_weight(tiny_bert_dir, pooling):
  backbone = backbone_lib.load_backbone(tiny_bert_dir)
  model = encoder.build_classifier(
      backbone, 2, ModelConfig(model=tiny_bert_dir, pooling=pooling), seed=0
  )
  model.compile(
      optimizer=optimization.create_optimizer(
          TrainConfig(
              learning_rate=1e-2, warmup_ratio=0.0, schedule="constant"
          ),
          total_steps=1,
      ),
      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  )
  if pooling != "pooler":  # The pooler is unused and gets no gradient.
    trainable = [v for v in model.trainable_variables if "pooler" not in v.name]
  else:
    trainable = model.trainable_variables
  before = [v.numpy().copy() for v in trainable]
  model.train_on_batch(*_batch())
  unchanged = [
      v.name
      for v, old in zip(trainable, before)
      if np.array_equal(v.numpy(), old)
  ]
  assert unchanged == []


def test_macro_f1_metric_matches_hand_computation():
  metric = MacroF1(3)
  # True 0,0,1,2 ; predicted 0,1,1,1: F1 class0 = 2/3, class1 = 2/4, class2 = 0.
  logits = tf.one_hot([0, 1, 1, 1], 3)
  metric.update_state(tf.constant([0, 0, 1, 2]), logits)
  assert float(metric.result()) == pytest.approx((2 / 3 + 0.5 + 0) / 3)
  metric.reset_state()
  assert float(metric.result()) == 0.0


def _write_pytorch_format_safetensors(tf_model, directory):
  """Saves TF weights under PyTorch names and layouts, as a torch-trained
  checkpoint on the hub would be (no "bert." prefix, like MiniLM's)."""
  state = {}
  for weight in tf_model.weights:
    name, transpose = convert_tf_weight_name_to_pt_weight_name(
        weight.name,
        start_prefix_to_remove=tf_model.name + "/",
        tf_weight_shape=weight.shape,
    )
    value = weight.numpy()
    if transpose is not None and transpose.name != "NO":
      value = value.T
    state[name.removeprefix("bert.")] = np.ascontiguousarray(value)
  safetensors.numpy.save_file(
      state,
      os.path.join(directory, "model.safetensors"),
      metadata={"format": "pt"},
  )
  return state


def test_loads_pytorch_format_safetensors(tiny_bert_dir, tmp_path):
  original = transformers.TFBertModel.from_pretrained(tiny_bert_dir)
  target = tmp_path / "pt_checkpoint"
  target.mkdir()
  shutil.copy(os.path.join(tiny_bert_dir, "config.json"), target)
  state = _write_pytorch_format_safetensors(original, str(target))
  assert "embeddings.word_embeddings.weight" in state
  assert "encoder.layer.0.attention.self.query.weight" in state

  loaded = backbone_lib.load_backbone(str(target))
  features, _ = _batch()
  np.testing.assert_allclose(
      original(**features).last_hidden_state.numpy(),
      loaded(**features).last_hidden_state.numpy(),
      atol=1e-5,
  )


def test_pickled_weights_are_refused_by_default(tiny_bert_dir, tmp_path):
  shutil.copy(os.path.join(tiny_bert_dir, "config.json"), tmp_path)
  (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
  with pytest.raises(
      ValueError, match=r"pickled PyTorch weights .* " r"--allow_pickle_weights"
  ):
    backbone_lib.load_backbone(str(tmp_path))


def test_allowed_pickled_weights_without_pytorch_say_what_to_install(
    tiny_bert_dir, tmp_path
):
  # requirements.txt installs no PyTorch.
  assert importlib.util.find_spec("torch") is None
  shutil.copy(os.path.join(tiny_bert_dir, "config.json"), tmp_path)
  (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
  with pytest.raises(
      ValueError,
      match=r"has PyTorch weights \(pytorch_model.bin\), and reading them "
      r"needs PyTorch: pip install torch",
  ):
    backbone_lib.load_backbone(str(tmp_path), allow_pickle_weights=True)


def test_model_directory_without_weights(tiny_bert_dir, tmp_path):
  shutil.copy(os.path.join(tiny_bert_dir, "config.json"), tmp_path)
  with pytest.raises(ValueError, match=r"has config.json but no weights"):
    backbone_lib.load_backbone(str(tmp_path))


def test_model_directory_without_config(tmp_path):
  with pytest.raises(ValueError, match=r"without config.json"):
    backbone_lib.load_backbone(str(tmp_path))


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path):
  with pytest.raises(ValueError, match=r"does not exist"):
    backbone_lib.load_backbone(str(tmp_path / "no" / "such" / "model"))


def test_tokenizer_larger_than_the_embedding_table(tiny_bert_dir):
  tokenizer = backbone_lib.load_tokenizer(tiny_bert_dir)
  config = transformers.BertConfig(vocab_size=len(tokenizer) - 10)
  with pytest.raises(
      ValueError,
      match=r"the tokenizer has \d+ tokens but the "
      r"model's embedding table only \d+",
  ):
    backbone_lib.check_tokenizer_fits(tokenizer, config, tiny_bert_dir)
