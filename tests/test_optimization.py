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
    assert float(schedule(step)) == pytest.approx(value, rel=1e-6,
                                                  abs=1e-12), step


@pytest.mark.parametrize("decay, options, expected", [
    # max(f, peak * sqrt(100 / s)) after 100 warmup steps.
    ("inverse_sqrt", {}, {50: 0.5, 100: 1.0, 400: 0.5, 900: 1 / 3}),
    ("inverse_sqrt", {"min_lr_ratio": 0.4}, {400: 0.5, 900: 0.4}),
    # Two cosine cycles over the 900 decay steps: restart at 550.
    ("cosine_restarts", {"cycles": 2},
     {100: 1.0, 325: 0.5, 549: 1.2185e-5, 550: 1.0, 775: 0.5, 1000: 0.0}),
    # Halved every 200 steps after warmup, floored at 0.2.
    ("step", {"factor": 0.5, "every_steps": 200, "min_lr_ratio": 0.2},
     {100: 1.0, 299: 1.0, 300: 0.5, 500: 0.25, 700: 0.2, 1000: 0.2}),
    ("linear", {"min_lr_ratio": 0.1}, {50: 0.5, 550: 0.55, 1000: 0.1}),
    ("cosine", {"min_lr_ratio": 0.1}, {550: 0.55, 1000: 0.1}),
    ("polynomial", {"min_lr_ratio": 0.1}, {550: 0.325, 1000: 0.1}),
])
def test_more_schedules_golden_values(decay, options, expected):
  schedule = optimization.WarmupDecaySchedule(1.0, TOTAL, WARMUP, decay,
                                              **options)
  for step, value in expected.items():
    assert float(schedule(step)) == pytest.approx(value, rel=1e-4,
                                                  abs=1e-6), step


@pytest.mark.parametrize("decay", optimization.DECAYS)
def test_every_schedule_serializes_through_keras(decay):
  schedule = optimization.WarmupDecaySchedule(
      PEAK, TOTAL, WARMUP, decay, min_lr_ratio=0.1, cycles=3, factor=0.3,
      every_steps=70)
  restored = tf_keras.optimizers.schedules.deserialize(
      tf_keras.optimizers.schedules.serialize(schedule))
  assert restored.get_config() == schedule.get_config()
  for step in (0, 99, 100, 431, 1000):
    assert float(restored(step)) == float(schedule(step))


def test_step_schedule_defaults_to_one_epoch_intervals():
  config = TrainConfig(schedule="step", warmup_ratio=0.0,
                       step_decay_factor=0.1)
  schedule = optimization.create_schedule(config, 300, steps_per_epoch=100)
  assert [float(schedule(s)) for s in (99, 100, 200)] == pytest.approx(
      [5e-5, 5e-6, 5e-7])


def test_range_test_schedule_is_geometric():
  schedule = optimization.ExponentialRangeSchedule(1e-7, 1.0, 8)
  assert float(schedule(0)) == pytest.approx(1e-7)
  assert float(schedule(7)) == pytest.approx(1.0, rel=1e-5)
  ratios = [float(schedule(s + 1)) / float(schedule(s)) for s in range(7)]
  assert ratios == pytest.approx([10.0] * 7, rel=1e-4)


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
