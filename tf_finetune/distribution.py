"""tf.distribute strategies, and which process of a cluster writes what.

One process trains on one machine with `MirroredStrategy` (several GPUs) or
TensorFlow's default strategy (one device). Several machines train together
with `MultiWorkerMirroredStrategy`, each running the same command with its own
`TF_CONFIG`; a TPU trains with `TPUStrategy`.

In a multi-worker run every worker computes the same steps, but only the chief
(the "chief" task, else worker 0) writes checkpoints, summaries, the run files,
evaluation results and exports to `--model_dir`. Saving a checkpoint is a
collective operation, so the other workers save too, into a scratch directory
of their own that is removed when they finish (TensorFlow's multi-worker Keras
guide prescribes the same).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any, Optional

import tensorflow as tf

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def read_tf_config(raw: Optional[str]) -> dict[str, Any]:
  """Parses and checks the TF_CONFIG environment variable of a worker.

  Args:
    raw: The value of TF_CONFIG, or None when it is not set.

  Returns:
    The parsed config: {"cluster": {job: ["host:port", ...]},
    "task": {"type": job, "index": i}}.

  Raises:
    ValueError: naming what is missing or malformed, with an example.
  """
  fix = f"set it on every worker, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'"
  if not raw or not raw.strip():
    raise ValueError(
        "--distribution=multi_worker needs the TF_CONFIG "
        "environment variable (the cluster's addresses and this "
        f"worker's place in it); {fix}."
    )
  try:
    parsed = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(
        f"TF_CONFIG is not valid JSON ({e.msg} at column "
        f"{e.colno}): {raw!r}; {fix}."
    ) from e
  cluster = parsed.get("cluster") if isinstance(parsed, dict) else None
  task = parsed.get("task") if isinstance(parsed, dict) else None
  if (
      not isinstance(cluster, dict)
      or not cluster
      or not all(
          isinstance(addresses, list)
          and addresses
          and all(isinstance(a, str) and ":" in a for a in addresses)
          for addresses in cluster.values()
      )
  ):
    raise ValueError(
        f'TF_CONFIG={raw!r} needs "cluster": a map from job '
        'name to a list of "host:port" addresses; '
        f"{fix}."
    )
  if not isinstance(task, dict) or task.get("type") not in cluster:
    raise ValueError(
        f'TF_CONFIG={raw!r} needs "task": {{"type": one of '
        f"{', '.join(sorted(cluster))}, \"index\": ...}}; {fix}."
    )
  index = task.get("index")
  if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
    raise ValueError(
        f"TF_CONFIG={raw!r}: task index {index!r} is not one of "
        f"the {len(cluster[task['type']])} {task['type']!r} "
        "addresses (counted from 0)."
    )
  return parsed


def get_strategy(
    distribution: str, tpu: Optional[str] = None
) -> tf.distribute.Strategy:
  """The tf.distribute strategy for `--distribution`.

  auto: MirroredStrategy over all GPUs when there are several, else one
  device. mirrored: MirroredStrategy over all GPUs, or over all (logical) CPU
  devices on a machine without GPUs. one_device: TensorFlow's default
  strategy, which places work on the first GPU, else the CPU (Keras'
  BackupAndRestore does not accept OneDeviceStrategy). multi_worker:
  MultiWorkerMirroredStrategy over the cluster in TF_CONFIG, all GPUs (else
  the CPU) of each worker. tpu: TPUStrategy on `tpu`.

  A multi-worker strategy must be created before the process runs any other
  TensorFlow operation, so create the strategy first.

  Raises:
    ValueError: for a missing or malformed TF_CONFIG.
  """
  if distribution == "multi_worker":
    read_tf_config(os.environ.get("TF_CONFIG"))
    return tf.distribute.MultiWorkerMirroredStrategy()
  if distribution == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
  cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
  if distribution == "mirrored" or (distribution == "auto" and len(gpus) > 1):
    return tf.distribute.MirroredStrategy(gpus or cpus)
  return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's outputs.

  True except on the non-chief workers of a multi-worker run.
  """
  return bool(strategy.extended.should_checkpoint)


def worker_name(strategy: tf.distribute.Strategy) -> str:
  """This process's task, "worker 1" for the second worker; "" if none."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return ""
  return f"{resolver.task_type} {resolver.task_id}"


def output_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this process writes.

  `model_dir` on the chief, else a scratch directory inside it,
  `model_dir/.scratch-<task>-<index>`.
  """
  if is_chief(strategy):
    return model_dir
  return os.path.join(
      model_dir, ".scratch-" + worker_name(strategy).replace(" ", "-")
  )


def remove_scratch(model_dir: str, strategy: tf.distribute.Strategy) -> None:
  """Removes a non-chief worker's scratch directory (no-op on the chief)."""
  if not is_chief(strategy):
    shutil.rmtree(output_dir(model_dir, strategy), ignore_errors=True)


def weights_fingerprint(model: tf.Module) -> str:
  """SHA-256 of the model's weights, names and values.

  Equal fingerprints on the workers of a run show they hold the same model.
  """
  digest = hashlib.sha256()
  for variable in model.weights:
    digest.update(variable.name.encode("utf-8"))
    digest.update(variable.numpy().tobytes())
  return digest.hexdigest()


def barrier(strategy: tf.distribute.Strategy) -> None:
  """Waits until every worker of a multi-worker run gets here (a one-value
  all-reduce); a no-op for the other strategies."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    strategy.reduce(
        tf.distribute.ReduceOp.SUM,
        strategy.run(lambda: tf.constant(1.0)),
        axis=None,
    )
