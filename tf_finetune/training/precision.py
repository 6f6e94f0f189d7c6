"""The run's numeric precision: fp32, bf16 or fp16 mixed precision."""

from __future__ import annotations

import contextlib

import tensorflow as tf
import tf_keras


def has_native_bfloat16() -> bool:
  """Whether the devices training would use compute bfloat16 natively."""
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    return all(
        tf.config.experimental.get_device_details(gpu).get(
            "compute_capability", (0, 0)
        )
        >= (8, 0)
        for gpu in gpus
    )
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      flags = f.read()
  except OSError:
    return False
  return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
  if precision != "auto":
    return precision
  return "bf16" if has_native_bfloat16() else "fp32"


@contextlib.contextmanager
def precision_policy(precision: str):
  """Sets the Keras mixed-precision policy for the run, then restores it.

  auto resolves to bf16 where the hardware computes in bfloat16 natively
  (`has_native_bfloat16`), else to fp32; the README compares their speed.
  """
  previous = tf_keras.mixed_precision.global_policy()
  name = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[
      resolve_precision(precision)
  ]
  tf_keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)
