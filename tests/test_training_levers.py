"""Each optimization lever of the train flags, on the tiny BERT."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from conftest import run_python
from tf_finetune import callbacks, config as config_lib, tasks, training
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.models.classifier import sparse_cross_entropy
from tf_finetune.tasks.base import PreparedData, TaskState

BATCH, LENGTH = 8, 12


def _run_config(
    tiny_bert_dir, model_dir="unused", *, model=None, data=None, **train
):
  options = dict(
      learning_rate=1e-3,
      warmup_ratio=0.0,
      schedule="constant",
      early_stopping_patience=0,
      precision="fp32",
      export=False,
  )
  options.update(train)
  return config_lib.RunConfig(
      model_dir=str(model_dir),
      data=config_lib.DataConfig(
          **{
              "train_file": "unused.csv",
              "max_seq_length": 32,
              "batch_size": BATCH,
              **(data or {}),
          }
      ),
      model=config_lib.ModelConfig(
          model=tiny_bert_dir, pooling="mean", dropout=0.0, **(model or {})
      ),
      train=config_lib.TrainConfig(**options),
  )


def _compiled(tiny_bert_dir, strategy=None, precision="fp32", **options):
  config = _run_config(tiny_bert_dir, precision=precision, **options)
  tokenizer = backbone_lib.load_tokenizer(tiny_bert_dir)
  strategy = strategy or tf.distribute.get_strategy()
  task = tasks.get_task(config.task)
  task.bind(TaskState(label_vocab=("0", "1")))
  prepared = PreparedData(config, {}, {}, tokenizer, None, task)
  with training.precision_policy(precision), strategy.scope():
    return task.build_model(
        config, prepared, total_steps=100, steps_per_epoch=1
    )


def _batch(seed=0, size=BATCH):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, 60, size=(size, LENGTH)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[: size // 2, LENGTH - 3 :] = 0  # Some padding.
  inputs = {
      "input_ids": tf.constant(ids * mask),
      "attention_mask": tf.constant(mask),
      "token_type_ids": tf.zeros_like(tf.constant(ids)),
  }
  labels = tf.constant(rng.integers(0, 2, size=size).astype(np.int32))
  return inputs, labels


def _weights(model):
  """Trainable weights by name, without the model's instance number."""
  return {
      re.sub(r"^(\w+?)(_\d+)?/", r"\1/", v.name): v.numpy().copy()
      for v in model.weights
      if v.trainable
  }


def _train_step(model, inputs, labels, precision="fp32"):
  with training.precision_policy(precision):
    model.train_on_batch(inputs, labels)


# What accumulation guarantees, measured on 28 batches of two tiny BERTs:
# - fp32: every variable's update equals the whole batch's to 1e-4 of its
#   largest move (measured: float32 rounding, 4e-7 of the whole update).
# - bf16: the update as a whole, to 0.5% of its norm (measured at most
#   0.3%), and every weight's move to 2.5% of the largest move of any
#   weight (measured at most 1.6%). Nothing holds per variable: the small
#   gradients of some biases are differences of nearly equal bfloat16 terms,
#   and their moves differed by up to half.
@pytest.mark.parametrize(
    "mirrored, precision, per_variable, per_weight, whole",
    [
        (False, "fp32", 1e-4, 1e-4, 1e-4),
        (True, "fp32", 1e-4, 1e-4, 1e-4),
        (False, "bf16", None, 0.025, 0.005),
    ],
)
def test_accumulated_micro_batches_give_the_update_of_the_whole_batch(
    tiny_bert_dir, mirrored, precision, per_variable, per_weight, whole
):
  """4 micro-batches of 2 == 1 batch of 8 (and 2 replicas x 2 x 2)."""
  # A large Adam epsilon makes the first update proportional to the
  # gradient (lr * g / (|g| + 1)) instead of its sign, and without clipping
  # to its scale too, so the comparison measures the gradients rather than
  # rounding noise on tiny ones.
  inputs, labels = _batch()
  options = dict(adam_epsilon=1.0, learning_rate=0.5, clip_norm=0.0)
  whole_batch = _compiled(tiny_bert_dir, precision=precision, **options)
  before = _weights(whole_batch)
  _train_step(whole_batch, inputs, labels, precision)
  strategy = (
      tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if mirrored else None
  )
  accumulated = _compiled(
      tiny_bert_dir,
      strategy,
      precision=precision,
      grad_accum_steps=2 if mirrored else 4,
      **options,
  )
  _train_step(accumulated, inputs, labels, precision)
  expected, actual = _weights(whole_batch), _weights(accumulated)
  assert expected.keys() == actual.keys()
  steps = {name: value - before[name] for name, value in expected.items()}
  largest_move = max(np.abs(step).max() for step in steps.values())
  moved = 0
  for name, value in expected.items():
    difference = np.abs(actual[name] - value)
    # Storing the new weight rounds it to float32: allow two units in the
    # last place of the weight on top of the error of the update.
    rounding = 2 * np.spacing(np.abs(value).astype(np.float32)).max()
    assert difference.max() <= per_weight * largest_move + rounding, name
    if per_variable is not None:
      step = np.abs(steps[name]).max()
      assert difference.max() <= per_variable * max(step, 1e-6) + rounding, name
    moved += np.abs(steps[name]).max() > 0
  assert moved > len(expected) // 2  # The step did change the weights.
  update = np.sqrt(sum(np.sum(step**2) for step in steps.values()))
  difference = np.sqrt(
      sum(
          np.sum((actual[name] - value) ** 2)
          for name, value in expected.items()
      )
  )
  assert difference <= whole * update


def test_accumulation_handles_a_last_batch_that_does_not_split_evenly(
    tiny_bert_dir,
):
  inputs, labels = _batch(size=5)  # 3 micro-batches of 2, 2 and 1.
  whole = _compiled(tiny_bert_dir, adam_epsilon=1.0, learning_rate=0.5)
  _train_step(whole, inputs, labels)
  accumulated = _compiled(
      tiny_bert_dir, grad_accum_steps=3, adam_epsilon=1.0, learning_rate=0.5
  )
  _train_step(accumulated, inputs, labels)
  for name, value in _weights(whole).items():
    np.testing.assert_allclose(
        _weights(accumulated)[name], value, atol=1e-6, err_msg=name
    )


def _dense_gradients(model, inputs, labels):
  """The batch-mean loss's gradients, computed apart from train_step, with
  sparse embedding gradients made dense (duplicate rows summed) and zeros
  for the unused pooler."""
  variables = model.trainable_variables
  with tf.GradientTape() as tape:
    logits = model(inputs, training=True)
    loss = tf.reduce_mean(sparse_cross_entropy()(labels, logits))
  return [
      tf.zeros_like(variable)
      if gradient is None
      else tf.convert_to_tensor(gradient)
      for variable, gradient in zip(variables, tape.gradient(loss, variables))
  ]


@pytest.mark.parametrize("mirrored", [False, True])
def test_logged_grad_norm_is_the_norm_of_the_whole_batch_gradient(
    tiny_bert_dir, mirrored
):
  inputs, labels = _batch()
  # Token ids repeat within the batch: the word-embedding gradient has
  # duplicate rows, whose unmerged norm is not the gradient's.
  assert len(np.unique(inputs["input_ids"])) < np.size(inputs["input_ids"])
  reference = _compiled(tiny_bert_dir)
  expected = float(
      tf.linalg.global_norm(_dense_gradients(reference, inputs, labels))
  )
  strategy = (
      tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if mirrored else None
  )
  model = _compiled(tiny_bert_dir, strategy)
  for name, value in _weights(reference).items():
    np.testing.assert_array_equal(_weights(model)[name], value, err_msg=name)
  with training.precision_policy("fp32"):
    logs = model.train_on_batch(inputs, labels, return_dict=True)
  assert logs["grad_norm"] == pytest.approx(expected, rel=1e-4)


def test_clipping_scales_the_gradient_to_the_clip_norm(tiny_bert_dir):
  """Adam's first step, by hand, from the clipped gradient g' = g x c / |g|:
  m = (1 - b1) g', v = (1 - b2) g'^2, and the weight moves by
  lr sqrt(1 - b2) / (1 - b1) x m / (sqrt(v) + eps). A large eps makes the
  move proportional to g', so a step from the unclipped gradient would be
  several times longer."""
  inputs, labels = _batch()
  learning_rate, epsilon = 1e-2, 1.0
  reference = _compiled(tiny_bert_dir)
  gradients = _dense_gradients(reference, inputs, labels)
  norm = float(tf.linalg.global_norm(gradients))
  clip_norm = norm / 4
  model = _compiled(
      tiny_bert_dir,
      clip_norm=clip_norm,
      learning_rate=learning_rate,
      adam_epsilon=epsilon,
      weight_decay=0.0,
  )
  before = [v.numpy().copy() for v in model.trainable_variables]
  _train_step(model, inputs, labels)
  beta_1, beta_2 = 0.9, 0.999
  alpha = learning_rate * np.sqrt(1 - beta_2) / (1 - beta_1)
  expected_moves = []
  for gradient in gradients:
    clipped = gradient.numpy().astype(np.float64) * clip_norm / norm
    m = (1 - beta_1) * clipped
    v = (1 - beta_2) * clipped**2
    expected_moves.append(-alpha * m / (np.sqrt(v) + epsilon))
  largest = max(np.abs(expected).max() for expected in expected_moves)
  moves = []
  for variable, old, expected in zip(
      model.trainable_variables, before, expected_moves
  ):
    move = variable.numpy() - old
    # Storing the new weight rounds it to float32; gradients that are zero
    # in exact arithmetic (the attention keys' biases) are rounding noise.
    atol = 2 * np.spacing(np.abs(old).max()) + 1e-6 * largest
    np.testing.assert_allclose(
        move, expected, rtol=1e-3, atol=atol, err_msg=variable.name
    )
    moves.append(move)
  # The step is the one of a gradient of norm clip_norm: a quarter of the
  # unclipped one.
  step = np.sqrt(sum(np.sum(move**2) for move in moves))
  assert step == pytest.approx(
      learning_rate * np.sqrt(1 - beta_2) * clip_norm / epsilon, rel=0.01
  )


def test_frozen_layers_and_embeddings_stay_bit_identical(tiny_bert_dir):
  model = _compiled(
      tiny_bert_dir, freeze_layers=1, freeze_embeddings=True, weight_decay=0.1
  )
  before = _weights(model)
  _train_step(model, *_batch())
  after = _weights(model)
  frozen = [
      name for name in before if "layer_._0/" in name or "embeddings" in name
  ]
  trained = [
      name for name in before if "layer_._1/" in name or "classifier" in name
  ]
  assert frozen and trained
  for name in frozen:
    np.testing.assert_array_equal(after[name], before[name], err_msg=name)
  for name in trained:
    assert not np.array_equal(after[name], before[name]), name


def test_freezing_more_layers_than_the_encoder_has_is_an_error(tiny_bert_dir):
  with pytest.raises(
      ValueError,
      match=r"--freeze_layers=3 is more than the " r"encoder's 2 layers",
  ):
    _compiled(tiny_bert_dir, freeze_layers=3)


def test_gradual_unfreezing_opens_one_layer_per_epoch_from_the_top(
    tiny_bert_dir,
):
  model = _compiled(tiny_bert_dir, unfreeze_schedule="gradual")
  unfreezing = tasks.get_task(config_lib.task_config()).training_callbacks(
      model, _run_config(tiny_bert_dir, unfreeze_schedule="gradual")
  )[0]
  # 2 layers: epoch 1 none, epoch 2 the top one, epoch 3 both, then the
  # embeddings too.
  assert [unfreezing.frozen_for_epoch(e) for e in range(4)] == [
      (2, True),
      (1, True),
      (0, True),
      (0, False),
  ]
  changed_per_epoch = []

  class Changed(tf_keras.callbacks.Callback):

    def on_epoch_begin(self, epoch, logs=None):
      self.before = _weights(self.model)

    def on_epoch_end(self, epoch, logs=None):
      after = _weights(self.model)
      changed_per_epoch.append(
          {
              part
              for part in (
                  "layer_._0/",
                  "layer_._1/",
                  "embeddings",
                  "classifier",
              )
              if any(
                  part in name
                  and not np.array_equal(after[name], self.before[name])
                  for name in after
              )
          }
      )

  inputs, labels = _batch()
  model.fit(
      inputs,
      labels,
      batch_size=BATCH,
      epochs=4,
      verbose=0,
      callbacks=[unfreezing, Changed()],
  )
  assert changed_per_epoch == [
      {"classifier"},
      {"classifier", "layer_._1/"},
      {"classifier", "layer_._1/", "layer_._0/"},
      {"classifier", "layer_._1/", "layer_._0/", "embeddings"},
  ]


def test_layerwise_multipliers_per_variable(tiny_bert_dir):
  backbone = backbone_lib.load_backbone(tiny_bert_dir)
  multipliers = backbone_lib.layerwise_lr_multipliers(backbone, 0.5)
  by_part = {}
  for name, value in multipliers.items():
    part = next(
        p for p in ("layer_._0/", "layer_._1/", "embeddings") if p in name
    )
    by_part.setdefault(part, set()).add(value)
  # Top layer at the base rate, each one below halved, embeddings last.
  assert by_part == {
      "layer_._1/": {1.0},
      "layer_._0/": {0.5},
      "embeddings": {0.25},
  }
  assert not any("pooler" in name for name in multipliers)
  assert backbone_lib.layerwise_lr_multipliers(backbone, 1.0) == {}


@pytest.mark.parametrize("mirrored", [False, True])
def test_layerwise_decay_scales_each_variables_update(tiny_bert_dir, mirrored):
  # Adam's first step moves every weight with a non-zero gradient by
  # exactly its learning rate (m / sqrt(v) = sign(g)), so the largest move
  # of each variable is its rate: 1e-3 x multiplier.
  strategy = (
      tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if mirrored else None
  )
  model = _compiled(
      tiny_bert_dir,
      strategy,
      layerwise_lr_decay=0.5,
      weight_decay=0.0,
      clip_norm=0.0,
      adam_epsilon=1e-12,
  )
  before = _weights(model)
  _train_step(model, *_batch())
  expected = {
      "layer_._1/attention/self/query/kernel": 1e-3,
      "layer_._0/attention/self/query/kernel": 5e-4,
      "embeddings/word_embeddings": 2.5e-4,
      "classifier/kernel": 1e-3,
  }
  for name, value in _weights(model).items():
    for part, rate in expected.items():
      if part in name:
        move = np.abs(value - before[name]).max()
        assert move == pytest.approx(rate, rel=1e-3), name


def test_label_smoothing_golden_value():
  logits = tf.constant([[2.0, 0.0]])
  labels = tf.constant([0])
  # softmax = [0.8808, 0.1192]; targets 0.9 / 0.1 with smoothing 0.2.
  plain = float(sparse_cross_entropy(0.0)(labels, logits)[0])
  smoothed = float(sparse_cross_entropy(0.2)(labels, logits)[0])
  assert plain == pytest.approx(0.126928, rel=1e-5)
  assert smoothed == pytest.approx(0.9 * 0.126928 + 0.1 * 2.126928, rel=1e-5)


def test_backbone_penalties_skip_layer_norm_biases_and_embeddings(
    tiny_bert_dir,
):
  backbone = backbone_lib.load_backbone(tiny_bert_dir)
  names = [
      v.name
      for v in backbone_lib.penalized_variables(
          backbone, include_embeddings=False
      )
  ]
  # 6 kernels per layer (query, key, value, attention output, intermediate,
  # output) x 2 layers + the pooler's.
  assert len(names) == 13
  assert all("kernel" in name for name in names)
  with_embeddings = backbone_lib.penalized_variables(
      backbone, include_embeddings=True
  )
  assert len(with_embeddings) == 16  # + word, position, token type tables.


def test_l2_sp_is_the_distance_from_the_pretrained_weights(tiny_bert_dir):
  model = _compiled(tiny_bert_dir, model={"l2_sp": 0.5})
  assert float(tf.add_n(model.losses)) == 0.0  # At the pretrained weights.
  _train_step(model, *_batch())
  pretrained = backbone_lib.load_backbone(tiny_bert_dir)
  start = backbone_lib.penalized_variables(pretrained, include_embeddings=False)
  now = backbone_lib.penalized_variables(
      model.backbone, include_embeddings=False
  )
  expected = 0.5 * sum(
      np.sum((a.numpy() - b.numpy()) ** 2) for a, b in zip(now, start)
  )
  assert expected > 0
  assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-4)


def test_backbone_l2_penalty_value(tiny_bert_dir):
  model = _compiled(tiny_bert_dir, model={"backbone_l2": 0.01})
  kernels = backbone_lib.penalized_variables(
      model.backbone, include_embeddings=False
  )
  expected = 0.01 * sum(float(tf.reduce_sum(tf.square(v))) for v in kernels)
  assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)


def _trained_steps(tiny_bert_dir, steps=5, **model):
  """The model after `steps` updates on fixed batches (no weight decay)."""
  model = _compiled(
      tiny_bert_dir, model=model, weight_decay=0.0, learning_rate=1e-2
  )
  for step in range(steps):
    _train_step(model, *_batch(seed=step))
  return model


def _distance_from_pretrained(model, pretrained):
  now = backbone_lib.penalized_variables(
      model.backbone, include_embeddings=False
  )
  return sum(np.sum((a.numpy() - b) ** 2) for a, b in zip(now, pretrained))


def _backbone_kernels(model, power):
  kernels = backbone_lib.penalized_variables(
      model.backbone, include_embeddings=False
  )
  return sum(np.sum(np.abs(v.numpy()) ** power) for v in kernels)


# Each penalty, strong, against the same 5 steps without it: without the
# penalty's gradients in train_step the two runs end bit-identical. Measured
# on the tiny BERT (lr 1e-2): L2-SP keeps the kernels 30x closer to the
# pretrained ones, backbone L2 shrinks their squared norm 15x, backbone L1
# their L1 norm 3.5x, head L2 and L1 the head kernel's norms 3x.
@pytest.mark.parametrize(
    "penalty, measure",
    [
        ({"l2_sp": 1.0}, "distance_from_pretrained"),
        ({"backbone_l2": 1.0}, "backbone_squared_norm"),
        ({"backbone_l1": 0.1}, "backbone_l1_norm"),
        ({"l2": 10.0}, "head_norm"),
        ({"l1": 1.0}, "head_l1_norm"),
    ],
)
def test_each_penalty_pulls_the_weights_where_it_says(
    tiny_bert_dir, penalty, measure
):
  pretrained = [
      v.numpy()
      for v in backbone_lib.penalized_variables(
          backbone_lib.load_backbone(tiny_bert_dir), include_embeddings=False
      )
  ]
  measures = {
      "distance_from_pretrained": lambda m: _distance_from_pretrained(
          m, pretrained
      ),
      "backbone_squared_norm": lambda m: _backbone_kernels(m, 2),
      "backbone_l1_norm": lambda m: _backbone_kernels(m, 1),
      "head_norm": lambda m: np.linalg.norm(m.head.kernel.numpy()),
      "head_l1_norm": lambda m: np.abs(m.head.kernel.numpy()).sum(),
  }
  without = measures[measure](_trained_steps(tiny_bert_dir))
  with_penalty = measures[measure](_trained_steps(tiny_bert_dir, **penalty))
  assert with_penalty < 0.5 * without, (with_penalty, without)


def test_l2_sp_and_backbone_l2_together_is_an_error():
  with pytest.raises(ValueError, match="--l2_sp and --backbone_l2"):
    config_lib.ModelConfig(model="m", l2_sp=0.1, backbone_l2=0.1)


def test_dropout_overrides_reach_the_pretrained_config(tiny_bert_dir):
  model = _compiled(
      tiny_bert_dir, model={"hidden_dropout": 0.3, "attention_dropout": 0.2}
  )
  assert model.backbone.config.hidden_dropout_prob == 0.3
  assert model.backbone.config.attention_probs_dropout_prob == 0.2


def test_fp16_scales_the_loss_and_trains(tiny_bert_dir):
  model = _compiled(tiny_bert_dir, precision="fp16")
  assert isinstance(
      model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer
  )
  before = _weights(model)
  _train_step(model, *_batch(), precision="fp16")
  after = _weights(model)
  assert all(np.isfinite(value).all() for value in after.values())
  assert not np.array_equal(
      after[next(n for n in after if "classifier" in n)],
      before[next(n for n in before if "classifier" in n)],
  )
  assert tf_keras.mixed_precision.global_policy().name == "float32"


def test_xla_step_matches_the_plain_step(tiny_bert_dir):
  inputs, labels = _batch()
  plain = _compiled(tiny_bert_dir)
  _train_step(plain, inputs, labels)
  compiled = _compiled(tiny_bert_dir, jit_compile=True)
  _train_step(compiled, inputs, labels)
  for name, value in _weights(plain).items():
    np.testing.assert_allclose(
        _weights(compiled)[name], value, atol=1e-5, err_msg=name
    )


def test_ema_weights_are_validated_and_kept(
    tmp_path, tiny_bert_dir, sentiment_files
):
  def run(name, **train):
    return training.train(
        _run_config(
            tiny_bert_dir,
            tmp_path / name,
            epochs=2,
            learning_rate=3e-3,
            log_every_steps=5,
            early_stopping_metric="val_loss",
            data={
                "train_file": sentiment_files["train"],
                "validation_file": sentiment_files["validation"],
                "batch_size": 16,
            },
            **train,
        )
    )

  summary = run("ema", ema_decay=0.9)
  # What validation measured is what was kept: re-evaluating the final
  # weights reproduces the validation loss of the kept epoch.
  results = json.load(open(tmp_path / "ema" / "eval_results.json"))
  kept = summary.history["val_loss"][summary.best_epoch - 1]
  assert results["validation"]["loss"] == pytest.approx(kept, rel=1e-4)
  # And it is not what the raw weights give (same run without EMA).
  raw = run("raw")
  assert summary.history["val_loss"] != pytest.approx(
      raw.history["val_loss"], rel=1e-3
  )
  assert summary.history["loss"] == pytest.approx(raw.history["loss"], rel=1e-4)


def _unnumbered(name):
  """`name` without Keras' instance numbers ("text_classifier_3/" ->
  "text_classifier/"; the layer indices "layer_._0/" stay) and the model's
  prefix of a reloaded backbone's names."""
  name = re.sub(r"(?<!\.)_\d+/", "/", name)
  return re.sub(r"^text_classifier/(?=tf_bert_model/)", "", name)


class _RecordWeights(tf_keras.callbacks.Callback):
  """At each epoch's end, by name: the raw weights and the optimizer's
  averages; and the head kernel's average computed here from its value
  after every step: the average starts at the initial weights and update n
  takes average = d x average + (1 - d) x weight with the ramped decay
  d = min(decay, (1 + n) / (10 + n)). `initial_share` is the weight the
  initial kernel keeps in it.
  """

  def __init__(self, ema_decay):
    super().__init__()
    self.ema_decay = ema_decay
    self.raw, self.averaged, self.head_average = [], [], []
    self.initial_share = []

  def on_train_begin(self, logs=None):
    self._head_average = self.model.head.kernel.numpy().astype(np.float64)
    self._share, self._updates = 1.0, 0

  def on_train_batch_end(self, batch, logs=None):
    self._updates += 1
    n = self._updates
    decay = min(self.ema_decay, (1 + n) / (10 + n))
    self._head_average = decay * self._head_average + (
        1 - decay
    ) * self.model.head.kernel.numpy().astype(np.float64)
    self._share *= decay

  def on_epoch_end(self, epoch, logs=None):
    optimizer = self.model.optimizer
    variables = [v for v in self.model.weights if v.trainable]
    self.raw.append({_unnumbered(v.name): v.numpy().copy() for v in variables})
    self.averaged.append(
        {
            _unnumbered(v.name): optimizer.moving_average_of(v).numpy().copy()
            for v in variables
        }
    )
    self.head_average.append(self._head_average.copy())
    self.initial_share.append(self._share)


_DUMP_SAVED_MODEL_VARIABLES = """
import sys
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the tokenizer's ops)
loaded = tf.saved_model.load(sys.argv[1])
np.savez(sys.argv[2], **{
    v.name: v.numpy() for v in loaded.signatures["serving_default"].variables
})
"""


@pytest.mark.parametrize("ema_decay, validation", [(0.999, True), (0.5, False)])
def test_the_export_holds_the_moving_averages(
    tmp_path, tiny_bert_dir, sentiment_files, monkeypatch, ema_decay, validation
):
  """The SavedModel, loaded in a fresh process, holds the averaged weights,
  not the raw ones: with validation those of the best epoch, without it
  those of the last; the head kernel's is the ramped average of its
  recorded values, in which the initial (random) kernel has almost no
  share, even at --ema_decay=0.999."""
  recorder = _RecordWeights(ema_decay)
  task_class = type(tasks.get_task(config_lib.task_config()))
  own_callbacks = task_class.training_callbacks
  monkeypatch.setattr(
      task_class,
      "training_callbacks",
      lambda self, model, config: own_callbacks(self, model, config)
      + [recorder],
  )
  data = {"train_file": sentiment_files["train"], "batch_size": 16}
  if validation:
    data["validation_file"] = sentiment_files["validation"]
  summary = training.train(
      _run_config(
          tiny_bert_dir,
          tmp_path / "run",
          epochs=2,
          learning_rate=3e-3,
          ema_decay=ema_decay,
          early_stopping_metric="val_loss",
          export=True,
          data=data,
      )
  )
  epoch = summary.best_epoch - 1 if validation else -1
  averaged, raw = recorder.averaged[epoch], recorder.raw[epoch]
  dump = str(tmp_path / "exported.npz")
  result = run_python(
      ["-c", _DUMP_SAVED_MODEL_VARIABLES, summary.export_dir, dump]
  )
  assert result.returncode == 0, result.stderr[-2000:]
  with np.load(dump) as values:
    exported = {_unnumbered(name): values[name] for name in values.files}
  # 12 updates an epoch: after the first, the initial kernel's share is
  # 10! 13! / 22! = 2e-5 (Keras' fixed 0.999 would leave 0.999^12 = 0.99).
  assert recorder.initial_share[epoch] < 1e-4
  compared = 0
  for name, average in averaged.items():
    if np.array_equal(average, raw[name]):
      continue  # Not moved (the unused pooler): says nothing.
    np.testing.assert_array_equal(exported[name], average, err_msg=name)
    compared += 1
  head = "text_classifier/classifier/kernel:0"
  np.testing.assert_allclose(
      exported[head], recorder.head_average[epoch], rtol=1e-5, atol=1e-8
  )
  assert compared > len(averaged) // 2, (compared, sorted(exported))


def test_moving_averages_swap_in_and_back(tiny_bert_dir):
  model = _compiled(tiny_bert_dir, ema_decay=0.5)
  _train_step(model, *_batch())
  raw = _weights(model)
  averages = [
      model.optimizer.moving_average_of(variable).numpy()
      for variable in model.weights
      if variable.trainable
  ]
  with callbacks.moving_averages_swapped_in(model):
    inside = _weights(model)
  for value, average in zip(inside.values(), averages):
    np.testing.assert_array_equal(value, average)
  assert any(not np.array_equal(inside[n], raw[n]) for n in raw)
  for name, value in _weights(model).items():
    np.testing.assert_array_equal(value, raw[name])


def _scalars(log_dir, tag):
  """{step: value} of a scalar in the TensorBoard event files of log_dir."""
  found = {}
  for name in sorted(os.listdir(log_dir)):
    for record in tf.data.TFRecordDataset(os.path.join(log_dir, name)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag == tag:
          found[event.step] = float(tf.make_ndarray(value.tensor))
  return found


def test_the_logged_learning_rate_is_the_one_each_step_used(
    tmp_path, tiny_bert_dir
):
  """Warmup over 4 steps from 0 to 1e-3, two epochs of two steps: the
  steps' rates are 0, 2.5e-4, 5e-4 and 7.5e-4, and an epoch's is its last
  step's. The first step, at rate 0, leaves the weights alone."""
  model = _compiled(
      tiny_bert_dir,
      learning_rate=1e-3,
      schedule="linear",
      warmup_steps=4,
      weight_decay=0.0,
  )
  step_logger = callbacks.StepLogger(
      str(tmp_path), every_steps=1, total_steps=100, global_batch_size=BATCH
  )
  tensorboard = callbacks.TensorBoard(str(tmp_path), profile_batch=0)
  inputs, labels = _batch(size=2 * BATCH)
  before = _weights(model)

  class FirstStep(tf_keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      if not hasattr(self, "after"):
        self.after = _weights(self.model)

  first_step = FirstStep()
  with training.precision_policy("fp32"):
    model.fit(
        inputs,
        labels,
        batch_size=BATCH,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[step_logger, tensorboard, first_step],
    )
  train_logs = str(tmp_path / "train")
  assert _scalars(train_logs, "learning_rate") == pytest.approx(
      {1: 0.0, 2: 2.5e-4, 3: 5e-4, 4: 7.5e-4}
  )
  assert _scalars(train_logs, "epoch_learning_rate") == pytest.approx(
      {0: 2.5e-4, 1: 7.5e-4}
  )
  for name, value in first_step.after.items():
    np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_steps_per_execution_runs_several_steps_per_call(tiny_bert_dir):
  model = _compiled(tiny_bert_dir, steps_per_execution=3)
  assert int(model._steps_per_execution.numpy()) == 3
  calls = []

  class CountCalls(tf_keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      calls.append(batch)

  inputs, labels = _batch(size=24)
  model.fit(
      inputs,
      labels,
      batch_size=4,
      epochs=1,
      verbose=0,
      callbacks=[CountCalls()],
  )
  assert int(model.optimizer.iterations.numpy()) == 6  # 24 / 4 steps...
  assert len(calls) == 2  # ...in two calls of three.
