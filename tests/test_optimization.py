import json
import math
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tf_finetune import optimization, schedules
from tf_finetune.config import SCHEDULES, TrainConfig

PEAK, WARMUP, TOTAL = 5e-5, 100, 1000


@pytest.mark.parametrize(
    "decay, expected",
    [
        (
            "linear",
            {0: 0.0, 50: 2.5e-5, 100: 5e-5, 550: 2.5e-5, 1000: 0.0, 1200: 0.0},
        ),
        ("cosine", {50: 2.5e-5, 100: 5e-5, 550: 2.5e-5, 1000: 0.0}),
        ("polynomial", {100: 5e-5, 550: 1.25e-5, 1000: 0.0}),  # power 2
        ("constant", {50: 2.5e-5, 100: 5e-5, 999: 5e-5}),
    ],
)
def test_schedule_golden_values(decay, expected):
  schedule = schedules.warmup_decay(decay, PEAK, TOTAL, WARMUP, power=2.0)
  for step, value in expected.items():
    assert float(schedule(step)) == pytest.approx(
        value, rel=1e-6, abs=1e-12
    ), step


@pytest.mark.parametrize(
    "decay, options, expected",
    [
        # max(f, peak * sqrt(100 / s)) after 100 warmup steps.
        ("inverse_sqrt", {}, {50: 0.5, 100: 1.0, 400: 0.5, 900: 1 / 3}),
        ("inverse_sqrt", {"min_lr_ratio": 0.4}, {400: 0.5, 900: 0.4}),
        # Two cosine cycles over the 900 decay steps: restart at 550.
        (
            "cosine_restarts",
            {"cycles": 2},
            {100: 1.0, 325: 0.5, 549: 1.2185e-5, 550: 1.0, 775: 0.5, 1000: 0.0},
        ),
        # Halved every 200 steps after warmup, floored at 0.2.
        (
            "step",
            {"factor": 0.5, "every_steps": 200, "min_lr_ratio": 0.2},
            {100: 1.0, 299: 1.0, 300: 0.5, 500: 0.25, 700: 0.2, 1000: 0.2},
        ),
        ("linear", {"min_lr_ratio": 0.1}, {50: 0.5, 550: 0.55, 1000: 0.1}),
        ("cosine", {"min_lr_ratio": 0.1}, {550: 0.55, 1000: 0.1}),
        ("polynomial", {"min_lr_ratio": 0.1}, {550: 0.325, 1000: 0.1}),
    ],
)
def test_more_schedules_golden_values(decay, options, expected):
  schedule = schedules.warmup_decay(decay, 1.0, TOTAL, WARMUP, **options)
  for step, value in expected.items():
    assert float(schedule(step)) == pytest.approx(
        value, rel=1e-4, abs=1e-6
    ), step


# Learning rates of every schedule with non-default options at GOLDEN_STEPS,
# peak 3e-4: (TrainConfig options, total steps, steps per epoch, rates).
# Recorded by evaluating create_schedule() of the seven-way WarmupDecaySchedule
# (commit feac83b) in float32 at each step, printed with
# np.format_float_scientific(unique=True). Any rewrite of the schedules must
# reproduce them.
GOLDEN_STEPS = (
    0,
    1,
    17,
    36,
    37,
    59,
    60,
    99,
    100,
    101,
    150,
    169,
    170,
    239,
    240,
    333,
    399,
    400,
    401,
    550,
    622,
    699,
    700,
    701,
    776,
    777,
    900,
    999,
    1000,
    1001,
    1200,
    3000,
)
GOLDEN_CASES = [
    (
        dict(schedule="linear", warmup_steps=100, min_lr_ratio=0.1),
        1000,
        1,
        [
            0.0,
            3.0e-6,
            5.1000003e-5,
            1.08e-4,
            1.1100001e-4,
            1.7700001e-4,
            1.8000002e-4,
            2.9700002e-4,
            3.0e-4,
            2.997e-4,
            2.8500002e-4,
            2.793e-4,
            2.79e-4,
            2.5830002e-4,
            2.5800001e-4,
            2.301e-4,
            2.103e-4,
            2.1e-4,
            2.0970003e-4,
            1.65e-4,
            1.4340002e-4,
            1.20300014e-4,
            1.20000004e-4,
            1.1970001e-4,
            9.720001e-5,
            9.69e-5,
            6.0000002e-5,
            3.0299996e-5,
            3.0000001e-5,
            3.0000001e-5,
            3.0000001e-5,
            3.0000001e-5,
        ],
    ),
    (
        dict(schedule="linear", warmup_ratio=0.0),
        1000,
        1,
        [
            3.0e-4,
            2.997e-4,
            2.949e-4,
            2.8920002e-4,
            2.8890002e-4,
            2.823e-4,
            2.8200002e-4,
            2.7030002e-4,
            2.7000002e-4,
            2.6970002e-4,
            2.5500002e-4,
            2.493e-4,
            2.49e-4,
            2.2830002e-4,
            2.28e-4,
            2.0010001e-4,
            1.803e-4,
            1.8000002e-4,
            1.797e-4,
            1.3500001e-4,
            1.1340001e-4,
            9.0300004e-5,
            9.000001e-5,
            8.970001e-5,
            6.7199995e-5,
            6.69e-5,
            3.0000008e-5,
            2.9999615e-7,
            0.0,
            0.0,
            0.0,
            0.0,
        ],
    ),
    (
        dict(schedule="cosine", warmup_steps=100, min_lr_ratio=0.1),
        1000,
        1,
        [
            0.0,
            3.0e-6,
            5.1000003e-5,
            1.08e-4,
            1.1100001e-4,
            1.7700001e-4,
            1.8000002e-4,
            2.9700002e-4,
            3.0e-4,
            2.999992e-4,
            2.9794907e-4,
            2.9610316e-4,
            2.9598994e-4,
            2.8441843e-4,
            2.8419794e-4,
            2.5775682e-4,
            2.329077e-4,
            2.3250001e-4,
            2.320915e-4,
            1.6499999e-4,
            1.3142687e-4,
            9.7908516e-5,
            9.75e-5,
            9.70923e-5,
            6.920795e-5,
            6.8876485e-5,
            3.814149e-5,
            3.0000821e-5,
            3.0000001e-5,
            3.0000001e-5,
            3.0000001e-5,
            3.0000001e-5,
        ],
    ),
    (
        dict(schedule="cosine", warmup_steps=1000),
        1000,
        1,
        [
            0.0,
            3.0e-7,
            5.1e-6,
            1.08e-5,
            1.1100001e-5,
            1.7700002e-5,
            1.8e-5,
            2.9700002e-5,
            3.0000001e-5,
            3.0300002e-5,
            4.5e-5,
            5.07e-5,
            5.1000003e-5,
            7.170001e-5,
            7.2e-5,
            9.9900004e-5,
            1.1970001e-4,
            1.20000004e-4,
            1.203e-4,
            1.65e-4,
            1.8660001e-4,
            2.097e-4,
            2.1000001e-4,
            2.1030002e-4,
            2.3280001e-4,
            2.3310001e-4,
            2.7000002e-4,
            2.997e-4,
            3.0e-4,
            0.0,
            0.0,
            0.0,
        ],
    ),
    (
        dict(
            schedule="polynomial",
            warmup_ratio=0.06,
            polynomial_power=1.5,
            min_lr_ratio=0.05,
        ),
        1000,
        1,
        [
            0.0,
            5.0000003e-6,
            8.5e-5,
            1.8e-4,
            1.8500001e-4,
            2.9500003e-4,
            3.0e-4,
            2.8244857e-4,
            2.8200346e-4,
            2.8155858e-4,
            2.6006514e-4,
            2.5189432e-4,
            2.5146684e-4,
            2.2260132e-4,
            2.2219226e-4,
            1.853499e-4,
            1.6070178e-4,
            1.6033828e-4,
            1.5997508e-4,
            1.09399974e-4,
            8.7675966e-5,
            6.664198e-5,
            6.638484e-5,
            6.612814e-5,
            4.815318e-5,
            4.793142e-5,
            2.4889016e-5,
            1.50098895e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
        ],
    ),
    (
        dict(schedule="constant", warmup_steps=100, min_lr_ratio=0.1),
        1000,
        1,
        [
            0.0,
            3.0e-6,
            5.1000003e-5,
            1.08e-4,
            1.1100001e-4,
            1.7700001e-4,
            1.8000002e-4,
            2.9700002e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
        ],
    ),
    (
        dict(schedule="inverse_sqrt", warmup_steps=100, min_lr_ratio=0.3),
        1000,
        1,
        [
            0.0,
            3.0e-6,
            5.1000003e-5,
            1.08e-4,
            1.1100001e-4,
            1.7700001e-4,
            1.8000002e-4,
            2.9700002e-4,
            3.0e-4,
            2.9851118e-4,
            2.4494898e-4,
            2.3076925e-4,
            2.3008951e-4,
            1.9405388e-4,
            1.9364918e-4,
            1.64399e-4,
            1.5018786e-4,
            1.5e-4,
            1.4981285e-4,
            1.2792043e-4,
            1.2028904e-4,
            1.1347043e-4,
            1.13389346e-4,
            1.13308444e-4,
            1.07693726e-4,
            1.076244e-4,
            1.00000005e-4,
            9.49158e-5,
            9.486833e-5,
            9.482093e-5,
            9.000001e-5,
            9.000001e-5,
        ],
    ),
    (
        dict(schedule="inverse_sqrt", warmup_ratio=0.0),
        1000,
        1,
        [
            3.0e-4,
            3.0e-4,
            7.276069e-5,
            5.0000002e-5,
            4.9319697e-5,
            3.9056675e-5,
            3.8729835e-5,
            3.0151135e-5,
            3.0000001e-5,
            2.9851117e-5,
            2.4494899e-5,
            2.3076926e-5,
            2.3008952e-5,
            1.9405388e-5,
            1.9364918e-5,
            1.64399e-5,
            1.5018785e-5,
            1.50000005e-5,
            1.4981286e-5,
            1.2792043e-5,
            1.2028904e-5,
            1.1347043e-5,
            1.1338935e-5,
            1.1330844e-5,
            1.0769372e-5,
            1.076244e-5,
            1.0000001e-5,
            9.49158e-6,
            9.486834e-6,
            9.482093e-6,
            8.660254e-6,
            5.477226e-6,
        ],
    ),
    (
        dict(
            schedule="cosine_restarts",
            warmup_steps=100,
            restart_cycles=3,
            min_lr_ratio=0.1,
        ),
        1000,
        1,
        [
            0.0,
            3.0e-6,
            5.1000003e-5,
            1.08e-4,
            1.1100001e-4,
            1.7700001e-4,
            1.8000002e-4,
            2.9700002e-4,
            3.0e-4,
            2.9999262e-4,
            2.8191344e-4,
            2.66265e-4,
            2.6532455e-4,
            1.8051652e-4,
            1.7911133e-4,
            6.188752e-5,
            3.0007404e-5,
            3.0e-4,
            2.9999262e-4,
            1.6499999e-4,
            7.258614e-5,
            3.0007404e-5,
            3.0e-4,
            2.9999262e-4,
            2.5945457e-4,
            2.5843934e-4,
            9.749998e-5,
            3.0007404e-5,
            3.0000001e-5,
            3.0000001e-5,
            3.0000001e-5,
            3.0000001e-5,
        ],
    ),
    (
        dict(schedule="cosine_restarts", warmup_ratio=0.037, restart_cycles=5),
        777,
        1,
        [
            0.0,
            1.0344828e-5,
            1.7586208e-4,
            2.9838228e-4,
            2.9788818e-4,
            2.7120428e-4,
            2.6932187e-4,
            1.6509436e-4,
            1.6195726e-4,
            1.588149e-4,
            2.625035e-5,
            3.0378612e-6,
            2.4395765e-6,
            1.9467174e-4,
            1.9165504e-4,
            2.9923863e-4,
            1.6258513e-4,
            1.5944379e-4,
            1.5629818e-4,
            1.5818584e-4,
            9.634227e-7,
            1.6007242e-4,
            1.5692742e-4,
            1.5377956e-4,
            3.307164e-8,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ],
    ),
    (
        dict(
            schedule="step",
            warmup_steps=100,
            step_decay_factor=0.3,
            step_decay_every_steps=70,
            min_lr_ratio=0.05,
        ),
        1000,
        1,
        [
            0.0,
            3.0e-6,
            5.1000003e-5,
            1.08e-4,
            1.1100001e-4,
            1.7700001e-4,
            1.8000002e-4,
            2.9700002e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            9.000001e-5,
            9.000001e-5,
            2.7000002e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
            1.50000005e-5,
        ],
    ),
    (
        dict(schedule="step", step_decay_factor=0.7),
        1000,
        125,
        [
            0.0,
            3.0e-6,
            5.1000003e-5,
            1.08e-4,
            1.1100001e-4,
            1.7700001e-4,
            1.8000002e-4,
            2.9700002e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            3.0e-4,
            2.1000001e-4,
            2.1000001e-4,
            2.1000001e-4,
            1.47e-4,
            1.47e-4,
            1.47e-4,
            1.02900005e-4,
            7.203e-5,
            7.203e-5,
            7.203e-5,
            7.203e-5,
            5.0421e-5,
            5.0421e-5,
            3.52947e-5,
            2.4706289e-5,
            2.4706289e-5,
            2.4706289e-5,
            1.7294402e-5,
            8.210621e-8,
        ],
    ),
]


@pytest.mark.parametrize(
    "options, total_steps, steps_per_epoch, expected",
    GOLDEN_CASES,
    ids=[f"{case[0]['schedule']}-{i}" for i, case in enumerate(GOLDEN_CASES)],
)
def test_schedules_reproduce_recorded_learning_rates(
    options, total_steps, steps_per_epoch, expected
):
  peak = 3e-4
  schedule = optimization.create_schedule(
      TrainConfig(learning_rate=peak, **options),
      total_steps,
      steps_per_epoch=steps_per_epoch,
  )
  actual = [
      float(schedule(tf.constant(step, tf.int64))) for step in GOLDEN_STEPS
  ]
  # 1e-6 of the rate, or of the peak where a cosine nears zero: float32
  # rounding of the cycle position moves such rates by ~1e-12 absolute.
  assert actual == pytest.approx(expected, rel=1e-6, abs=1e-6 * peak)


@pytest.mark.parametrize("decay", optimization.DECAYS)
def test_every_schedule_serializes_through_keras(decay):
  schedule = schedules.warmup_decay(
      decay,
      PEAK,
      TOTAL,
      WARMUP,
      min_lr_ratio=0.1,
      cycles=3,
      factor=0.3,
      every_steps=70,
  )
  restored = tf_keras.optimizers.schedules.deserialize(
      tf_keras.optimizers.schedules.serialize(schedule)
  )
  assert restored.get_config() == schedule.get_config()
  for step in (0, 99, 100, 431, 1000):
    assert float(restored(step)) == float(schedule(step))


def test_every_configurable_schedule_has_a_decay():
  assert set(schedules.DECAYS) == set(SCHEDULES)
  with pytest.raises(ValueError, match="exponential"):
    schedules.warmup_decay("exponential", PEAK, TOTAL, WARMUP)


def test_warmup_offsets_any_keras_decay_and_serializes():
  # 1.0 for the decay's steps 0..10, then 0.5; warmup 5 steps, floor 0.6.
  decay = tf_keras.optimizers.schedules.PiecewiseConstantDecay(
      [10.0], [1.0, 0.5]
  )
  schedule = schedules.WarmUp(decay, 1.0, warmup_steps=5, min_learning_rate=0.6)
  restored = tf_keras.optimizers.schedules.deserialize(
      json.loads(json.dumps(tf_keras.optimizers.schedules.serialize(schedule)))
  )
  for candidate in (schedule, restored):
    rates = [float(candidate(step)) for step in (0, 2, 5, 15, 16, 100)]
    assert rates == pytest.approx([0.0, 0.4, 1.0, 1.0, 0.6, 0.6])
  assert restored.get_config() == schedule.get_config()


def test_step_schedule_defaults_to_one_epoch_intervals():
  config = TrainConfig(schedule="step", warmup_ratio=0.0, step_decay_factor=0.1)
  schedule = optimization.create_schedule(config, 300, steps_per_epoch=100)
  assert [float(schedule(s)) for s in (99, 100, 200)] == pytest.approx(
      [5e-5, 5e-6, 5e-7]
  )


def test_range_test_schedule_is_geometric():
  schedule = optimization.ExponentialRangeSchedule(1e-7, 1.0, 8)
  assert float(schedule(0)) == pytest.approx(1e-7)
  assert float(schedule(7)) == pytest.approx(1.0, rel=1e-5)
  ratios = [float(schedule(s + 1)) / float(schedule(s)) for s in range(7)]
  assert ratios == pytest.approx([10.0] * 7, rel=1e-4)


def test_cosine_quarter_point():
  schedule = schedules.warmup_decay("cosine", 1.0, 1000, 0)
  assert float(schedule(250)) == pytest.approx(
      0.5 * (1 + math.cos(math.pi / 4))
  )


def test_schedule_serializes_through_keras():
  schedule = schedules.warmup_decay("cosine", PEAK, TOTAL, WARMUP)
  config = tf_keras.optimizers.schedules.serialize(schedule)
  restored = tf_keras.optimizers.schedules.deserialize(config)
  assert isinstance(restored, schedules.WarmUp)
  assert isinstance(restored.decay, tf_keras.optimizers.schedules.CosineDecay)
  assert restored.get_config() == schedule.get_config()


def test_warmup_steps_override_ratio():
  assert optimization.warmup_steps_for(TrainConfig(warmup_ratio=0.1), 500) == 50
  assert (
      optimization.warmup_steps_for(
          TrainConfig(warmup_ratio=0.1, warmup_steps=7), 500
      )
      == 7
  )


MIRRORED = pytest.mark.parametrize(
    "mirrored", [False, True], ids=["one_device", "mirrored"]
)


def _adamw(model=None, **options):
  """AdamW at rate 0.1, halved for the variables named slow/*."""
  options = {
      "learning_rate": 0.1,
      "weight_decay": 0.5,
      "warmup_ratio": 0.0,
      "schedule": "constant",
      "clip_norm": 0.0,
      "adam_epsilon": 1e-12,
      **options,
  }
  return optimization.create_optimizer(
      TrainConfig(**options),
      total_steps=10,
      lr_multipliers={"slow/kernel:0": 0.5, "slow/bias:0": 0.5},
      model=model,
  )


def _named_variables():
  kernel = np.array([[1.0, -2.0], [0.5, 4.0]], np.float32)
  return {
      name: tf.Variable(kernel if "kernel" in name else kernel[1], name=name)
      for name in (
          "dense/kernel",
          "slow/kernel",
          "dense/bias",
          "slow/bias",
          "LayerNorm/gamma",
      )
  }


def _one_step(mirrored, gradient, **options):
  """Weights before and after one step, the copies of every replica."""
  # Gradients reduced by copying to one device, not by collective ops: a
  # collective launched here would share its instance keys with the
  # strategies later tests create in this process, and theirs would fail.
  strategy = (
      tf.distribute.MirroredStrategy(
          ["/cpu:0", "/cpu:1"],
          cross_device_ops=tf.distribute.ReductionToOneDevice(),
      )
      if mirrored
      else tf.distribute.get_strategy()
  )
  with strategy.scope():
    optimizer, variables = _adamw(**options), _named_variables()
  before = {name: v.numpy() for name, v in variables.items()}

  @tf.function
  def step():
    optimizer.apply_gradients(
        (tf.fill(v.shape, gradient), v) for v in variables.values()
    )

  strategy.run(step)
  after = {
      name: [copy.numpy() for copy in strategy.experimental_local_results(v)]
      for name, v in variables.items()
  }
  assert all(len(copies) == (2 if mirrored else 1) for copies in after.values())
  return before, after


@MIRRORED
def test_weight_decay_is_rate_times_decay_times_weight(mirrored):
  # Zero gradients: only decoupled decay moves a weight, by rate * 0.5 * w at
  # the variable's own rate; LayerNorm and biases are not decayed.
  before, after = _one_step(mirrored, 0.0)
  rates = {
      "dense/kernel": 0.1,
      "slow/kernel": 0.05,
      "dense/bias": 0.0,
      "slow/bias": 0.0,
      "LayerNorm/gamma": 0.0,
  }
  for name, rate in rates.items():
    for copy in after[name]:
      np.testing.assert_allclose(
          before[name] - copy,
          rate * 0.5 * before[name],
          rtol=1e-6,
          atol=1e-7,
          err_msg=name,
      )


@MIRRORED
def test_each_variable_steps_at_its_own_rate(mirrored):
  # Adam's first step moves a weight by rate * g / |g| (epsilon 1e-12).
  before, after = _one_step(mirrored, 3.0, weight_decay=0.0)
  rates = {
      "dense/kernel": 0.1,
      "slow/kernel": 0.05,
      "dense/bias": 0.1,
      "slow/bias": 0.05,
      "LayerNorm/gamma": 0.1,
  }
  for name, rate in rates.items():
    for copy in after[name]:
      np.testing.assert_allclose(
          before[name] - copy, rate, rtol=1e-5, err_msg=name
      )


def test_keras_state_is_what_keras_keeps_and_checkpoints():
  optimizer, variables = _adamw(ema_decay=0.5), _named_variables()
  before = {name: v.numpy() for name, v in variables.items()}
  optimizer.apply_gradients(
      (tf.fill(v.shape, 2.0), v) for v in variables.values()
  )
  saved = {id(v) for v in optimizer.variables}  # What checkpoints hold.
  for name, variable in variables.items():
    state = optimizer._keras_state(variable)
    # First step from zero slots, g = 2: m = (1 - 0.9) g, v = (1 - 0.999) g^2.
    np.testing.assert_allclose(state.momentum.numpy(), 0.2, rtol=1e-6)
    np.testing.assert_allclose(state.velocity.numpy(), 0.004, rtol=1e-4)
    # The average starts at the weights; the first update's decay is the
    # ramp's 2 / 11 (below --ema_decay=0.5).
    np.testing.assert_allclose(
        state.average.numpy(),
        2 / 11 * before[name] + 9 / 11 * variable.numpy(),
        rtol=1e-6,
    )
    assert optimizer.moving_average_of(variable) is state.average
    assert {id(state.momentum), id(state.velocity), id(state.average)} <= saved
    assert state.decays == ("kernel" in name), name
  assert len(
      {optimizer._keras_state(v).key for v in variables.values()}
  ) == len(variables)


def test_adam_is_bias_corrected_every_step():
  """Under a constant gradient g every update is rate * g / |g|, from the
  first: Adam's bias correction divides m and v by 1 - beta^t. Without it
  (the original BERT optimizer) the first update would be
  rate * 0.1 / sqrt(0.001) = 3.2 x rate, the tenth 6.5 x rate."""
  optimizer = _adamw(weight_decay=0.0)
  variable = tf.Variable(np.array([1.0, -2.0], np.float32), name="w")
  moves = []
  for _ in range(10):
    before = variable.numpy()
    optimizer.apply_gradients([(tf.constant([3.0, -0.5]), variable)])
    moves.append(before - variable.numpy())
  np.testing.assert_allclose(
      np.array(moves), np.tile([0.1, -0.1], (10, 1)), rtol=1e-4
  )


def test_moving_average_is_debiased_by_the_ramp():
  """The average after each update is the ramped average of the recorded
  weights, min(decay, (1 + n) / (10 + n)) at update n, so the starting
  weights keep a share of 10! (n + 1)! / (n + 10)!, not decay^n."""
  decay, updates = 0.999, 40
  optimizer = _adamw(ema_decay=decay, weight_decay=0.0)
  start = np.array([1.0, -2.0])
  variable = tf.Variable(start.astype(np.float32), name="w")
  expected, share = start.copy(), 1.0
  for n in range(1, updates + 1):
    optimizer.apply_gradients([(tf.constant([1.0, 1.0]), variable)])
    ramp = min(decay, (1 + n) / (10 + n))
    expected = ramp * expected + (1 - ramp) * variable.numpy()
    share *= ramp
    np.testing.assert_allclose(
        optimizer.moving_average_of(variable).numpy(),
        expected,
        rtol=1e-5,
        err_msg=f"update {n}",
    )
  assert share < 1e-8  # Keras' fixed decay would leave 0.999^40 = 0.96.
  # The weights moved by 0.1 per update; the average sits near the end of
  # the path, 40 x 0.1 = 4 from the start, not at the start.
  average = optimizer.moving_average_of(variable).numpy()
  assert np.all(start - average > 3.0), average


def _dense_variables():
  return [
      tf.Variable(
          np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(2, 3),
          name="dense/kernel",
      ),
      tf.Variable(np.full(3, 0.5, np.float32), name="dense/bias"),
  ]


def _step(optimizer, variables, step):
  """One update with gradients that differ per step and per element."""
  optimizer.apply_gradients(
      (
          tf.reshape(tf.range(tf.size(v), dtype=tf.float32), v.shape) * 0.1
          - 0.2
          + 0.05 * step,
          v,
      )
      for v in variables
  )


CHECKPOINT_CONFIG = TrainConfig(
    learning_rate=1e-2,
    schedule="cosine_restarts",
    warmup_steps=2,
    restart_cycles=2,
    min_lr_ratio=0.1,
    weight_decay=0.1,
)


def _checkpoint_optimizer():
  return optimization.create_optimizer(
      CHECKPOINT_CONFIG, total_steps=10, lr_multipliers={"dense/kernel:0": 0.5}
  )


def test_optimizer_with_schedule_resumes_from_a_checkpoint(tmp_path):
  original, variables = _checkpoint_optimizer(), _dense_variables()
  for step in range(3):
    _step(original, variables, step)
  path = tf.train.Checkpoint(optimizer=original, weights=variables).save(
      str(tmp_path / "ckpt")
  )

  # A fresh run's optimizer takes the saved state (as BackupAndRestore).
  restored, restored_variables = _checkpoint_optimizer(), _dense_variables()
  restored.build(restored_variables)
  tf.train.Checkpoint(optimizer=restored, weights=restored_variables).restore(
      path
  ).assert_consumed()
  assert int(restored.iterations) == 3

  for step in range(3, 7):  # Across the restart at step 6.
    _step(original, variables, step)
    _step(restored, restored_variables, step)
    assert optimization.current_learning_rate(restored) == pytest.approx(
        optimization.current_learning_rate(original), rel=1e-6
    )
  for mine, theirs in zip(variables, restored_variables):
    np.testing.assert_allclose(theirs.numpy(), mine.numpy(), rtol=1e-6)


def test_optimizer_config_round_trips_through_json():
  original = _checkpoint_optimizer()
  serialized = json.dumps(tf_keras.optimizers.serialize(original))
  restored = tf_keras.optimizers.deserialize(json.loads(serialized))
  assert isinstance(restored, optimization.AdamW)
  assert json.dumps(tf_keras.optimizers.serialize(restored)) == serialized
  variables, restored_variables = _dense_variables(), _dense_variables()
  for step in range(8):  # Warmup, two cosine cycles, the floor.
    _step(original, variables, step)
    _step(restored, restored_variables, step)
    assert optimization.current_learning_rate(restored) == pytest.approx(
        optimization.current_learning_rate(original), rel=1e-6
    )
  # The same updates: per-variable rates, and no decay of the bias.
  for mine, theirs in zip(variables, restored_variables):
    np.testing.assert_allclose(
        theirs.numpy(), mine.numpy(), rtol=1e-6, err_msg=mine.name
    )


def _tiny_seq2seq(model_type):
  import transformers  # pylint: disable=import-outside-toplevel

  sizes = dict(
      vocab_size=40,
      d_model=16,
      encoder_layers=1,
      decoder_layers=1,
      encoder_attention_heads=2,
      decoder_attention_heads=2,
      encoder_ffn_dim=32,
      decoder_ffn_dim=32,
      max_position_embeddings=32,
      pad_token_id=0,
      decoder_start_token_id=0,
  )
  config = {
      "bart": lambda: transformers.BartConfig(**sizes),
      "marian": lambda: transformers.MarianConfig(**sizes),
      "t5": lambda: transformers.T5Config(
          vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2
      ),
  }[model_type]()
  model = transformers.TFAutoModelForSeq2SeqLM.from_config(config)
  ids = tf.constant([[3, 4, 1]])
  model(input_ids=ids, decoder_input_ids=ids)
  return model


def _tiny_encoder(model_type):
  import transformers  # pylint: disable=import-outside-toplevel

  config = transformers.AutoConfig.for_model(
      model_type,
      vocab_size=40,
      hidden_size=16,
      embedding_size=16,
      intra_bottleneck_size=16,
      true_hidden_size=16,
      num_feedforward_networks=1,
      num_hidden_layers=1,
      num_attention_heads=2,
      intermediate_size=32,
      max_position_embeddings=32,
  )
  model = transformers.TFAutoModel.from_config(config)
  model(model.dummy_inputs)
  return model


def _is_norm_or_bias(name):
  """What the variable is, from `transformers`' naming of these families:
  a norm's scale or offset, or a bias (BART's final_logits_bias, T5's
  relative_attention_bias table, as Hugging Face's Trainer counts them)."""
  path = name.rsplit(":", 1)[0]
  return bool(
      re.search(r"/(gamma|beta)$|bias(/embeddings)?$|[Nn]orm/weight$", path)
  )


@pytest.mark.parametrize(
    "build",
    [
        lambda: _tiny_seq2seq("bart"),
        lambda: _tiny_seq2seq("t5"),
        lambda: _tiny_seq2seq("marian"),
        lambda: _tiny_encoder("mobilebert"),
    ],
    ids=["bart", "t5", "marian", "mobilebert"],
)
def test_weight_decay_skips_every_norm_and_bias_of_a_model(build):
  model = build()
  optimizer = optimization.create_optimizer(
      TrainConfig(weight_decay=0.01), total_steps=10, model=model
  )
  optimizer.build(model.trainable_variables)
  decays = {
      v.name: optimizer._keras_state(v).decays
      for v in model.trainable_variables
  }
  wrong = sorted(
      name for name, decay in decays.items() if decay == _is_norm_or_bias(name)
  )
  assert not wrong, f"decay on norms/biases or none on kernels: {wrong}"
  # Both kinds are there: norms and biases kept, kernels and embeddings
  # decayed.
  assert any(decays.values()) and not all(decays.values())


@MIRRORED
def test_norm_found_by_its_layer_is_not_decayed_on_any_replica(mirrored):
  # A norm whose name says nothing ("embedding_scale"): zero gradients, so
  # only decay moves a weight; the kernel moves on every replica, the norm
  # and the bias on none.
  strategy = (
      tf.distribute.MirroredStrategy(
          ["/cpu:0", "/cpu:1"],
          cross_device_ops=tf.distribute.ReductionToOneDevice(),
      )
      if mirrored
      else tf.distribute.get_strategy()
  )
  with strategy.scope():
    model = tf_keras.Sequential(
        [
            tf_keras.layers.Dense(2, bias_initializer="ones", name="dense"),
            tf_keras.layers.LayerNormalization(name="embedding_scale"),
        ]
    )
    model.build([None, 2])
    optimizer = _adamw(model=model)
  before = {v.name: v.numpy() for v in model.trainable_variables}

  @tf.function
  def step():
    optimizer.apply_gradients(
        (tf.zeros_like(v), v) for v in model.trainable_variables
    )

  strategy.run(step)
  for variable in model.trainable_variables:
    copies = strategy.experimental_local_results(variable)
    assert len(copies) == (2 if mirrored else 1)
    for copy in copies:
      moved = not np.allclose(copy.numpy(), before[variable.name])
      assert moved == variable.name.startswith("dense/kernel"), copy.name
