import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tf_finetune import optimization
from tf_finetune.config import TrainConfig

PEAK, WARMUP, TOTAL = 5e-5, 100, 1000


@pytest.mark.parametrize("decay, expected", [
    ("linear", {0: 0.0, 50: 2.5e-5, 100: 5e-5, 550: 2.5e-5, 1000: 0.0,
                1200: 0.0}),
    ("cosine", {50: 2.5e-5, 100: 5e-5, 550: 2.5e-5, 1000: 0.0}),
    ("polynomial", {100: 5e-5, 550: 1.25e-5, 1000: 0.0}),  # power 2
    ("constant", {50: 2.5e-5, 100: 5e-5, 999: 5e-5}),
])
def test_schedule_golden_values(decay, expected):
  schedule = optimization.WarmupDecaySchedule(PEAK, TOTAL, WARMUP, decay,
                                              power=2.0)
  for step, value in expected.items():
    assert float(schedule(step)) == pytest.approx(value, rel=1e-6, abs=1e-12), step


def test_cosine_quarter_point():
  schedule = optimization.WarmupDecaySchedule(1.0, 1000, 0, "cosine")
  assert float(schedule(250)) == pytest.approx(0.5 * (1 + math.cos(math.pi /
                                                                   4)))


def test_schedule_serializes_through_keras():
  schedule = optimization.WarmupDecaySchedule(PEAK, TOTAL, WARMUP, "cosine")
  config = tf_keras.optimizers.schedules.serialize(schedule)
  restored = tf_keras.optimizers.schedules.deserialize(config)
  assert isinstance(restored, optimization.WarmupDecaySchedule)
  assert restored.get_config() == schedule.get_config()


def test_warmup_steps_override_ratio():
  assert optimization.warmup_steps_for(TrainConfig(warmup_ratio=0.1), 500) == 50
  assert optimization.warmup_steps_for(
      TrainConfig(warmup_ratio=0.1, warmup_steps=7), 500) == 7


def test_weight_decay_skips_layer_norm_and_biases():
  optimizer = optimization.create_optimizer(
      TrainConfig(learning_rate=0.1, weight_decay=0.5, warmup_ratio=0.0,
                  schedule="constant", clip_norm=0.0), total_steps=10)
  with tf.name_scope("encoder"):
    kernel = tf.Variable(np.ones((2, 2), np.float32), name="dense/kernel")
    bias = tf.Variable(np.ones(2, np.float32), name="dense/bias")
    gamma = tf.Variable(np.ones(2, np.float32), name="LayerNorm/gamma")
  variables = [kernel, bias, gamma]
  optimizer.apply_gradients((tf.zeros_like(v), v) for v in variables)
  # Zero gradients: only decoupled decay can move a weight: 1 - 0.1 * 0.5.
  np.testing.assert_allclose(kernel.numpy(), 0.95, rtol=1e-6)
  np.testing.assert_allclose(bias.numpy(), 1.0)
  np.testing.assert_allclose(gamma.numpy(), 1.0)
