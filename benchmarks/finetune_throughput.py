r"""Fine-tuning throughput: tf_finetune against the Hugging Face recipes.

  .venv/bin/pip install -r requirements-bench.txt
  .venv/bin/python benchmarks/finetune_throughput.py            # 2 full epochs
  .venv/bin/python benchmarks/finetune_throughput.py --max_steps=30 \
      --pipelines=ours,hf_tf                                   # smoke run

Fine-tunes the same pretrained model on the same training file with the same
hyperparameters (AdamW, peak learning rate 5e-5, decoupled weight decay 0.01
skipping LayerNorm and biases, linear decay after 10% linear warmup, the same
number of optimizer steps, batch 32, at most 128 tokens) through:

  ours   tf_finetune's own training phases, as `training.train()` calls
         them: `prepare` (the task reads, checks the in-graph tokenizer
         against the model's and encodes), `plan_batches`,
         `training_dataset` (length bucketing), `build_model` (pretrained
         backbone, head, AdamW, compile) and `precision_policy`; the task's
         own `predict` and `metrics` evaluate. Left out are the callbacks
         that only write files (TensorBoard, backups, best checkpoints) and
         the per-epoch validation, which the other recipes do not do either.
  hf_tf  The Keras recipe of the `transformers` documentation:
         TFAutoModelForSequenceClassification (loads the PyTorch safetensors),
         AutoTokenizer, a `datasets.Dataset` tokenized with truncation,
         `model.prepare_tf_dataset(shuffle=True, tokenizer=...)` (per-batch
         dynamic padding through DataCollatorWithPadding),
         `transformers.create_optimizer`, compile() with the model's internal
         loss, fit().
  torch  The PyTorch Trainer with DataCollatorWithPadding, only when torch is
         importable (reported as skipped otherwise).

To make the optimizer identical rather than merely similar, the Hugging Face
recipes get the settings in which their defaults differ from tf_finetune's
TrainConfig defaults (read from it; now Adam epsilon 1e-6 and global-norm
gradient clipping at 1.0) and its seed: `create_optimizer(adam_epsilon=...,
adam_global_clipnorm=...)`; Trainer's `adam_epsilon`, `max_grad_norm`.
`prepare_tf_dataset(shuffle=True)` drops the last partial batch by default;
it is given `drop_remainder=False` so that an epoch is ceil(examples / batch)
steps, as in the other pipelines. With --max_steps=N every pipeline stops
after N optimizer steps and its learning rate schedule spans those N steps.

Each pipeline runs in its own subprocess (this script re-invoked with the
hidden --_worker flag), one after another, so peak RSS
(getrusage(RUSAGE_SELF).ru_maxrss) and TensorFlow's state belong to one
pipeline. Measurements:

* Step times: `time.perf_counter()` at the end of every optimizer step (Keras
  `on_train_batch_end`, Trainer `on_step_end`; both run after the step has
  finished on the CPU). Steady state is everything after the first
  --skip_steps steps (tracing, warm-up): examples/s and tokens/s are the
  examples and tokens of those steps over the time from the end of step
  --skip_steps to the end of the last step, epoch boundaries included.
* Tokens: the batches actually fed are observed, not re-created. The TF
  pipelines' datasets get one last, sequential `map` that records each
  batch's shape and the sum of its attention mask (a `tf.py_function` per
  batch, microseconds against steps of tenths of a second), in the order the
  training loop consumes them; the Trainer's collator is wrapped to record
  the same. Real tokens are attention-mask ones; padded tokens are
  batch x padded length; their ratio is reported over all steps run.
* Time to first step: from the start of pipeline construction (data reading,
  tokenization, model loading; after the Python imports, which are reported
  separately) to the end of the first optimizer step.
* Test accuracy: the trained model on test.csv (low after a short run).
* Model FLOPs utilization: the machine's sustained matmul rate is measured in
  the same run (tf.matmul of two --matmul_size square matrices in a
  tf.function, float32 and bfloat16, best and median of --matmul_repeats
  timed calls). Achieved training FLOP/s = real tokens/s x (6 x non-embedding
  parameters + 12 x layers x hidden size x mean padded length), the second
  term being attention scores and values, forward and backward. MFU is that
  divided by the best matmul rate of each precision.

Caveats. `ours` runs at tf_finetune's default precision unless --precision
says otherwise; where that default is "auto" it means mixed bfloat16 on CPUs
with native bfloat16 (AMX, AVX512-BF16), while the Hugging Face recipes run
in float32: use --precision=fp32 to compare like with like. A run shorter
than an epoch trains each pipeline on a different sample of batches, and the
length-bucketed batches of `ours` start an epoch shorter than average, so
there compare real tokens/s rather than examples/s; full epochs see every
example once in every pipeline. The machine is shared and small: numbers move
with its load (the load average is recorded).

The run prints a table, then one JSON line with everything (also appended to
--output when given). Each pipeline logs to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Optional

# The transformers TF models are Keras 2 models: set before TF is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

PIPELINES = ("ours", "hf_tf", "torch")
# Parameters that are looked up rather than multiplied: excluded from the
# 6 x N FLOPs of a token.
EMBEDDING_NAME_PARTS = (
    "word_embeddings",
    "position_embeddings",
    "token_type_embeddings",
)
# TrainConfig settings, besides the flags, that every pipeline copies.
COPIED_TRAIN_DEFAULTS = ("adam_epsilon", "clip_norm", "seed")
PROGRESS_EVERY_STEPS = 25


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _peak_rss_mib() -> float:
  # ru_maxrss is in KiB on Linux.
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _resolve_path(path: str) -> str:
  """`path` from the working directory, else from the repository root."""
  if os.path.isabs(path) or os.path.exists(path):
    return os.path.abspath(path)
  return os.path.join(REPO_ROOT, path)


# ---------------------------------------------------------------------------
# Measurement helpers shared by the workers.


class StepTimer:
  """End time of every optimizer step, and the step to stop after."""

  def __init__(self, name: str, max_steps: int):
    self.name = name
    self.max_steps = max_steps
    self.begin = None
    self.step_ends = []

  def train_begin(self) -> None:
    self.begin = time.perf_counter()

  def step_end(self) -> bool:
    """Records a step; returns whether training should stop now."""
    self.step_ends.append(time.perf_counter())
    steps = len(self.step_ends)
    if steps % PROGRESS_EVERY_STEPS == 0 or steps == self.max_steps:
      recent = self.step_ends[-min(steps, PROGRESS_EVERY_STEPS) :]
      rate = (
          (recent[-1] - recent[0]) / (len(recent) - 1)
          if len(recent) > 1
          else float("nan")
      )
      _log(
          f"[{self.name}] step {steps}/{self.max_steps}: " f"{rate:.3f} s/step"
      )
    return steps >= self.max_steps


class BatchLog:
  """(examples, padded length, real tokens) of each batch, in feeding order."""

  def __init__(self):
    self.batches = []
    self.enabled = True

  def record(self, examples: int, padded_length: int, real_tokens: int) -> None:
    if self.enabled:
      self.batches.append((int(examples), int(padded_length), int(real_tokens)))


def tap_tf_dataset(dataset, batch_log: BatchLog):
  """`dataset` of (features, labels) with each batch recorded as consumed.

  The map is sequential and last, so it runs when the training loop asks for
  the next batch: record k belongs to step k.
  """
  import tensorflow as tf

  def record(shape, real_tokens):
    batch_log.record(shape[0], shape[1], real_tokens)
    return 0

  def tap(features, labels):
    mask = features["attention_mask"]
    done = tf.py_function(
        record,
        [tf.shape(mask), tf.reduce_sum(tf.cast(mask, tf.int64))],
        Tout=tf.int64,
    )
    with tf.control_dependencies([done]):
      features = {name: tf.identity(value) for name, value in features.items()}
    return features, labels

  return dataset.map(tap)


def keras_timing_callback(timer: StepTimer):
  """A tf_keras callback that times steps and stops after `max_steps`."""
  import tf_keras

  class _Timing(tf_keras.callbacks.Callback):

    def on_train_begin(self, logs=None):
      timer.train_begin()

    def on_train_batch_end(self, batch, logs=None):
      if timer.step_end():
        self.model.stop_training = True

  return _Timing()


def step_statistics(
    timer: StepTimer, batch_log: BatchLog, skip_steps: int, start: float
) -> dict:
  """Throughput, padding and latency numbers from one training run."""
  ends = timer.step_ends
  steps = len(ends)
  if len(batch_log.batches) < steps:
    raise RuntimeError(
        f"{steps} steps ran but only {len(batch_log.batches)} "
        "batches were recorded."
    )
  batches = batch_log.batches[:steps]
  examples = sum(b[0] for b in batches)
  real = sum(b[2] for b in batches)
  padded = sum(b[0] * b[1] for b in batches)
  stats = {
      "steps": steps,
      "examples": examples,
      "real_tokens": real,
      "padded_tokens": padded,
      "padded_per_real_token": padded / real,
      "mean_real_length": real / examples,
      "mean_padded_length": padded / examples,
      "time_to_first_step_seconds": ends[0] - start,
      "train_seconds": ends[-1] - timer.begin,
      "overall_examples_per_second": examples / (ends[-1] - timer.begin),
      "steady": None,
  }
  if steps > skip_steps + 1:
    # Step i (0-based) ran from boundaries[i] to boundaries[i + 1].
    boundaries = [timer.begin] + ends
    window = batches[skip_steps:]
    seconds = ends[-1] - boundaries[skip_steps]
    durations = [
        boundaries[i + 1] - boundaries[i] for i in range(skip_steps, steps)
    ]
    w_examples = sum(b[0] for b in window)
    w_real = sum(b[2] for b in window)
    w_padded = sum(b[0] * b[1] for b in window)
    stats["steady"] = {
        "first_step": skip_steps + 1,
        "steps": len(window),
        "seconds": seconds,
        "examples_per_second": w_examples / seconds,
        "real_tokens_per_second": w_real / seconds,
        "padded_tokens_per_second": w_padded / seconds,
        "median_step_seconds": statistics.median(durations),
        "mean_padded_length": w_padded / w_examples,
        "mean_real_length": w_real / w_examples,
    }
  return stats


def count_parameters(named_sizes) -> dict:
  """Total and non-embedding parameter counts from (name, size) pairs."""
  total = embedding = 0
  for name, size in named_sizes:
    total += size
    if any(part in name for part in EMBEDDING_NAME_PARTS):
      embedding += size
  return {
      "total": total,
      "embedding": embedding,
      "non_embedding": total - embedding,
  }


def accuracy_and_macro_f1(
    label_ids, predictions, num_labels: int
) -> tuple[float, float]:
  import numpy as np

  label_ids, predictions = np.asarray(label_ids), np.asarray(predictions)
  f1s = []
  for label in range(num_labels):
    tp = np.sum((predictions == label) & (label_ids == label))
    denominator = np.sum(predictions == label) + np.sum(label_ids == label)
    f1s.append(2.0 * tp / denominator if denominator else 0.0)
  return float(np.mean(predictions == label_ids)), float(np.mean(f1s))


# ---------------------------------------------------------------------------
# Workers: each runs in its own process and returns a JSON-able dict.


def run_matmul(job: dict) -> dict:
  """Sustained tf.matmul FLOP/s in float32 and bfloat16."""
  import tensorflow as tf

  size, repeats = job["args"]["matmul_size"], job["args"]["matmul_repeats"]
  flops = 2.0 * size**3

  @tf.function
  def product(a, b):
    return tf.matmul(a, b)

  results = {
      "size": size,
      "repeats": repeats,
      "tensorflow_version": tf.__version__,
  }
  for name, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
    # Function arguments, not captured constants, so nothing is folded.
    a = tf.cast(tf.random.stateless_normal([size, size], seed=[1, 2]), dtype)
    b = tf.cast(tf.random.stateless_normal([size, size], seed=[3, 4]), dtype)
    for _ in range(2):  # Tracing and oneDNN primitive creation.
      product(a, b).numpy()
    rates = []
    for _ in range(repeats):
      begin = time.perf_counter()
      product(a, b).numpy()
      rates.append(flops / (time.perf_counter() - begin))
    results[name] = {
        "best_flops_per_second": max(rates),
        "median_flops_per_second": statistics.median(rates),
    }
    _log(
        f"[matmul] {name}: best {max(rates) / 1e9:.1f} GFLOP/s, median "
        f"{statistics.median(rates) / 1e9:.1f} GFLOP/s"
    )
  return results


def run_ours(job: dict) -> dict:
  """tf_finetune's own training phases (prepare, plan_batches,
  training_dataset, build_model), timed step by step."""
  args, plan = job["args"], job["plan"]
  import_begin = time.perf_counter()
  import tensorflow as tf
  import tf_keras
  import transformers
  from tf_finetune import optimization, training
  from tf_finetune.config import DataConfig, ModelConfig, RunConfig, TrainConfig

  start = time.perf_counter()

  train_options = (
      {} if args["precision"] is None else {"precision": args["precision"]}
  )
  config = RunConfig(
      model_dir=job["scratch_dir"],
      data=DataConfig(
          train_file=os.path.join(args["data_dir"], "train.csv"),
          test_file=os.path.join(args["data_dir"], "test.csv"),
          max_seq_length=args["max_seq_length"],
          batch_size=args["batch_size"],
      ),
      model=ModelConfig(model=args["model"]),
      train=TrainConfig(
          epochs=plan["epochs_to_run"],
          learning_rate=args["learning_rate"],
          schedule="linear",
          warmup_ratio=args["warmup_ratio"],
          weight_decay=args["weight_decay"],
          seed=args["seed"],
          export=False,
          **train_options,
      ),
  )
  train_config = config.train
  tf_keras.utils.set_random_seed(train_config.seed)

  strategy = training.get_strategy(train_config.distribution)
  prepared = training.prepare(config)
  config = prepared.config
  batches = training.plan_batches(
      config, len(prepared.encoded["train"]), strategy
  )
  total_steps = plan["total_steps"]
  batches = dataclasses.replace(batches, total_steps=total_steps)
  warmup_steps = optimization.warmup_steps_for(train_config, total_steps)
  if (batches.steps_per_epoch, warmup_steps) != (
      plan["steps_per_epoch"],
      plan["warmup_steps"],
  ):
    raise RuntimeError(
        f"The library plans {batches.steps_per_epoch} steps per epoch and "
        f"{warmup_steps} warmup steps; the benchmark planned "
        f"{plan['steps_per_epoch']} and {plan['warmup_steps']}."
    )
  batch_log = BatchLog()
  train_dataset = tap_tf_dataset(
      training.training_dataset(config, prepared, batches), batch_log
  )

  timer = StepTimer("ours", total_steps)
  task = prepared.task
  with training.precision_policy(train_config.precision), strategy.scope():
    model = training.build_model(config, prepared, batches)
    task.save_run_files(config.model_dir, config, prepared, model)
    model.fit(
        train_dataset,
        epochs=plan["epochs_to_run"],
        steps_per_epoch=batches.steps_per_epoch,
        callbacks=[keras_timing_callback(timer)],
        verbose=0,
    )
  rss_after_training = _peak_rss_mib()

  eval_begin = time.perf_counter()
  metrics = task.metrics(
      prepared.examples["test"],
      prepared.encoded["test"],
      task.predict(
          model, prepared.encoded["test"], batch_size=batches.eval_batch
      ),
  )
  eval_seconds = time.perf_counter() - eval_begin
  resolve_precision = training.resolve_precision
  return {
      "status": "ok",
      "description": "tf_finetune: prepare + bucketed training_dataset + "
      "build_classifier + create_optimizer (AdamW), Keras fit",
      "precision": resolve_precision(train_config.precision),
      "precision_setting": train_config.precision,
      "versions": {
          "tensorflow": tf.__version__,
          "transformers": transformers.__version__,
      },
      "import_seconds": start - import_begin,
      "train_examples": len(prepared.examples["train"]),
      "optimizer": {
          "class": type(model.optimizer).__name__,
          "epsilon": train_config.adam_epsilon,
          "global_clipnorm": train_config.clip_norm,
          "warmup_steps": warmup_steps,
          "total_steps": total_steps,
      },
      "parameters": count_parameters(
          (v.name, int(v.shape.num_elements()))
          for v in model.trainable_variables
      ),
      "training": step_statistics(timer, batch_log, args["skip_steps"], start),
      "test": {
          "examples": metrics["num_examples"],
          "accuracy": metrics["accuracy"],
          "macro_f1": metrics["macro_f1"],
          "eval_seconds": eval_seconds,
      },
      "peak_rss_after_training_mib": rss_after_training,
      "peak_rss_mib": _peak_rss_mib(),
  }


def _load_hf_splits(args: dict, cache_dir: str):
  """Train and test splits as the `datasets` documentation reads a CSV."""
  import datasets

  datasets.disable_progress_bars()
  raw = datasets.load_dataset(
      "csv",
      cache_dir=cache_dir,
      data_files={
          split: os.path.join(args["data_dir"], f"{split}.csv")
          for split in ("train", "test")
      },
  )
  # String labels to ids: ClassLabel sorts the names (fresh=0, rotten=1, as
  # tf_finetune's label vocabulary does).
  return raw.class_encode_column("label")


def _tokenized_hf_splits(args: dict, job: dict):
  """The Hugging Face recipes' data: `datasets` splits tokenized by the
  model's tokenizer with truncation (padding is left to the collator).

  Returns:
    (label names, tokenizer, DatasetDict of tokenized splits).
  """
  import transformers

  raw = _load_hf_splits(args, os.path.join(job["scratch_dir"], "datasets"))
  tokenizer = transformers.AutoTokenizer.from_pretrained(args["model"])

  def tokenize(batch):
    return tokenizer(
        batch["text"], truncation=True, max_length=args["max_seq_length"]
    )

  return (
      raw["train"].features["label"].names,
      tokenizer,
      raw.map(tokenize, batched=True),
  )


def run_hf_tf(job: dict) -> dict:
  """The Keras fine-tuning recipe of the transformers documentation."""
  args, plan = job["args"], job["plan"]
  import_begin = time.perf_counter()
  import datasets
  import numpy as np
  import tensorflow as tf
  import tf_keras
  import transformers

  transformers.logging.set_verbosity_error()
  start = time.perf_counter()

  tf_keras.utils.set_random_seed(args["seed"])
  label_names, tokenizer, tokenized = _tokenized_hf_splits(args, job)
  model = transformers.TFAutoModelForSequenceClassification.from_pretrained(
      args["model"], num_labels=len(label_names)
  )
  batch_log = BatchLog()
  train_dataset = tap_tf_dataset(
      model.prepare_tf_dataset(
          tokenized["train"],
          shuffle=True,
          batch_size=args["batch_size"],
          tokenizer=tokenizer,
          drop_remainder=False,
      ),
      batch_log,
  )
  total_steps = plan["total_steps"]
  optimizer, _ = transformers.create_optimizer(
      init_lr=args["learning_rate"],
      num_train_steps=total_steps,
      num_warmup_steps=plan["warmup_steps"],
      weight_decay_rate=args["weight_decay"],
      adam_epsilon=args["adam_epsilon"],
      adam_global_clipnorm=args["clip_norm"] or None,
  )
  model.compile(optimizer=optimizer)  # The model computes its own loss.
  timer = StepTimer("hf_tf", total_steps)
  model.fit(
      train_dataset,
      epochs=plan["epochs_to_run"],
      callbacks=[keras_timing_callback(timer)],
      verbose=0,
  )
  rss_after_training = _peak_rss_mib()

  eval_begin = time.perf_counter()
  test_dataset = model.prepare_tf_dataset(
      tokenized["test"],
      shuffle=False,
      batch_size=args["batch_size"],
      tokenizer=tokenizer,
  )
  logits = model.predict(test_dataset, verbose=0).logits
  test_labels = tokenized["test"]["label"]
  accuracy, macro_f1 = accuracy_and_macro_f1(
      test_labels, np.argmax(logits, axis=-1), len(label_names)
  )
  eval_seconds = time.perf_counter() - eval_begin
  return {
      "status": "ok",
      "description": "transformers TF recipe: datasets.map tokenization, "
      "prepare_tf_dataset (DataCollatorWithPadding), "
      "create_optimizer (AdamWeightDecay), internal loss, "
      "Keras fit",
      "precision": "fp32",
      "versions": {
          "tensorflow": tf.__version__,
          "transformers": transformers.__version__,
          "datasets": datasets.__version__,
      },
      "import_seconds": start - import_begin,
      "train_examples": len(tokenized["train"]),
      "optimizer": {
          "class": type(optimizer).__name__,
          "epsilon": args["adam_epsilon"],
          "global_clipnorm": args["clip_norm"],
          "warmup_steps": plan["warmup_steps"],
          "total_steps": total_steps,
      },
      "parameters": count_parameters(
          (v.name, int(v.shape.num_elements()))
          for v in model.trainable_variables
      ),
      "training": step_statistics(timer, batch_log, args["skip_steps"], start),
      "test": {
          "examples": len(test_labels),
          "accuracy": accuracy,
          "macro_f1": macro_f1,
          "eval_seconds": eval_seconds,
      },
      "peak_rss_after_training_mib": rss_after_training,
      "peak_rss_mib": _peak_rss_mib(),
  }


def run_torch(job: dict) -> dict:
  """The PyTorch Trainer recipe, when torch is importable."""
  args, plan = job["args"], job["plan"]
  import_begin = time.perf_counter()
  try:
    import torch
  except ImportError as e:
    return {"status": "skipped", "reason": f"torch is not importable: {e}"}
  import datasets
  import numpy as np
  import transformers

  transformers.logging.set_verbosity_error()
  start = time.perf_counter()

  transformers.set_seed(args["seed"])
  label_names, tokenizer, tokenized = _tokenized_hf_splits(args, job)
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      args["model"], num_labels=len(label_names)
  )
  batch_log = BatchLog()
  collator = transformers.DataCollatorWithPadding(tokenizer)

  def recording_collator(features):
    batch = collator(features)
    mask = batch["attention_mask"]
    batch_log.record(mask.shape[0], mask.shape[1], int(mask.sum()))
    return batch

  timer = StepTimer("torch", plan["total_steps"])

  class _Timing(transformers.TrainerCallback):

    def on_train_begin(self, *unused_args, **unused_kwargs):
      timer.train_begin()

    def on_step_end(self, *unused_args, **unused_kwargs):
      timer.step_end()

  training_args = transformers.TrainingArguments(
      output_dir=os.path.join(job["scratch_dir"], "trainer"),
      per_device_train_batch_size=args["batch_size"],
      per_device_eval_batch_size=args["batch_size"],
      learning_rate=args["learning_rate"],
      weight_decay=args["weight_decay"],
      adam_epsilon=args["adam_epsilon"],
      max_grad_norm=args["clip_norm"],
      lr_scheduler_type="linear",
      warmup_steps=plan["warmup_steps"],
      max_steps=plan["total_steps"],
      seed=args["seed"],
      use_cpu=True,
      dataloader_drop_last=False,
      save_strategy="no",
      eval_strategy="no",
      logging_strategy="no",
      report_to="none",
      disable_tqdm=True,
  )
  trainer = transformers.Trainer(
      model=model,
      args=training_args,
      train_dataset=tokenized["train"],
      data_collator=recording_collator,
      callbacks=[_Timing()],
  )
  trainer.train()
  rss_after_training = _peak_rss_mib()
  batch_log.enabled = False

  eval_begin = time.perf_counter()
  logits = trainer.predict(tokenized["test"]).predictions
  test_labels = tokenized["test"]["label"]
  accuracy, macro_f1 = accuracy_and_macro_f1(
      test_labels, np.argmax(logits, axis=-1), len(label_names)
  )
  eval_seconds = time.perf_counter() - eval_begin
  return {
      "status": "ok",
      "description": "transformers PyTorch Trainer with "
      "DataCollatorWithPadding, AdamW, linear schedule",
      "precision": "fp32",
      "versions": {
          "torch": torch.__version__,
          "transformers": transformers.__version__,
          "datasets": datasets.__version__,
      },
      "import_seconds": start - import_begin,
      "train_examples": len(tokenized["train"]),
      "optimizer": {
          "class": type(trainer.optimizer).__name__,
          "epsilon": args["adam_epsilon"],
          "global_clipnorm": args["clip_norm"],
          "warmup_steps": plan["warmup_steps"],
          "total_steps": plan["total_steps"],
      },
      "parameters": count_parameters(
          (name, p.numel())
          for name, p in model.named_parameters()
          if p.requires_grad
      ),
      "training": step_statistics(timer, batch_log, args["skip_steps"], start),
      "test": {
          "examples": len(test_labels),
          "accuracy": accuracy,
          "macro_f1": macro_f1,
          "eval_seconds": eval_seconds,
      },
      "peak_rss_after_training_mib": rss_after_training,
      "peak_rss_mib": _peak_rss_mib(),
  }


WORKERS: dict[str, Callable[[dict], dict]] = {
    "matmul": run_matmul,
    "ours": run_ours,
    "hf_tf": run_hf_tf,
    "torch": run_torch,
}


def worker_main(name: str, job_path: str) -> int:
  """Runs one worker; writes its result (or its failure) next to the job."""
  with open(job_path, encoding="utf-8") as f:
    job = json.load(f)
  try:
    result = WORKERS[name](job)
    status = 0
  except Exception as e:  # Reported to the parent, not raised past it.
    traceback.print_exc()
    result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    status = 1
  with open(job["result_file"], "w", encoding="utf-8") as f:
    json.dump(result, f)
  return status


# ---------------------------------------------------------------------------
# The parent: plans the run, starts the workers, reports.


def plan_run(args: argparse.Namespace) -> dict:
  """Steps every pipeline runs: same count, same warmup."""
  # Only the CSV reader: the parent process never imports TensorFlow.
  from tf_finetune.data import readers

  train_file = os.path.join(args.data_dir, "train.csv")
  examples = len(
      readers.read_file(
          train_file,
          text_column="text",
          text_pair_column=None,
          label_column="label",
      )
  )
  steps_per_epoch = math.ceil(examples / args.batch_size)
  total_steps = args.max_steps or args.epochs * steps_per_epoch
  return {
      "train_examples": examples,
      "steps_per_epoch": steps_per_epoch,
      "total_steps": total_steps,
      # tf_finetune's optimization.warmup_steps_for(); checked by `ours`.
      "warmup_steps": int(round(args.warmup_ratio * total_steps)),
      "epochs_to_run": math.ceil(total_steps / steps_per_epoch),
  }


def run_worker(
    name: str, args: argparse.Namespace, plan: dict, scratch: str
) -> dict:
  """Runs worker `name` in a fresh Python process and returns its result."""
  directory = tempfile.mkdtemp(prefix=f"{name}_", dir=scratch)
  job = {
      "args": vars(args),
      "plan": plan,
      "scratch_dir": directory,
      "result_file": os.path.join(directory, "result.json"),
  }
  job_path = os.path.join(directory, "job.json")
  with open(job_path, "w", encoding="utf-8") as f:
    json.dump(job, f)
  env = dict(
      os.environ,
      HF_HUB_OFFLINE="1",
      HF_DATASETS_OFFLINE="1",
      TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
  )
  _log(f"=== {name} ===")
  begin = time.perf_counter()
  process = subprocess.run(
      [
          sys.executable,
          os.path.abspath(__file__),
          f"--_worker={name}",
          f"--_job={job_path}",
      ],
      env=env,
      stdout=sys.stderr,
      check=False,
  )
  wall = time.perf_counter() - begin
  if os.path.isfile(job["result_file"]):
    with open(job["result_file"], encoding="utf-8") as f:
      result = json.load(f)
  else:
    result = {
        "status": "failed",
        "reason": f"worker exited with status {process.returncode} "
        "without a result (killed?); see its stderr",
    }
  result["process_wall_seconds"] = wall
  return result


def _model_shape(model_dir: str) -> dict:
  with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  return {
      "layers": config["num_hidden_layers"],
      "hidden_size": config["hidden_size"],
      "model_type": config.get("model_type"),
  }


def add_flops(result: dict, shape: dict, matmul: dict) -> None:
  """Adds achieved training FLOP/s and MFU to a pipeline's result."""
  steady = result.get("training", {}).get("steady")
  if result.get("status") != "ok" or not steady:
    return
  per_token = (
      6 * result["parameters"]["non_embedding"]
      + 12
      * shape["layers"]
      * shape["hidden_size"]
      * steady["mean_padded_length"]
  )
  achieved = per_token * steady["real_tokens_per_second"]
  flops = {"per_real_token": per_token, "achieved_flops_per_second": achieved}
  for precision in ("fp32", "bf16"):
    peak = (matmul.get(precision) or {}).get("best_flops_per_second")
    flops[f"mfu_{precision}"] = achieved / peak if peak else None
  flops["mfu_at_own_precision"] = flops.get(f"mfu_{result.get('precision')}")
  result["flops"] = flops


def report_notes(
    args: argparse.Namespace, plan: dict, pipelines: dict
) -> list[str]:
  """Caveats that apply to this particular run."""
  notes = []
  precisions = {
      name: r.get("precision")
      for name, r in pipelines.items()
      if r.get("status") == "ok"
  }
  if len(set(precisions.values())) > 1:
    notes.append(
        f"Pipelines ran at different precisions ({precisions}); "
        "pass --precision=fp32 for a like-for-like comparison."
    )
  if plan["total_steps"] < plan["steps_per_epoch"]:
    notes.append(
        "Shorter than an epoch: each pipeline trained on a different "
        "sample of batches (ours' length-bucketed batches start an "
        "epoch shorter than average), so examples/s is not "
        "comparable; real tokens/s is the fairer number, full "
        "epochs the fair run."
    )
  return notes


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def machine_description() -> dict:
  return {
      "cpu_model": _cpu_model(),
      "nproc": len(os.sched_getaffinity(0)),
      "cpu_count": os.cpu_count(),
      "load_average_at_start": os.getloadavg(),
      "python": platform.python_version(),
      "platform": platform.platform(),
  }


def _ratio(
    numerator: Optional[float], denominator: Optional[float]
) -> Optional[float]:
  if numerator is None or not denominator:
    return None
  return numerator / denominator


def _steady(result: dict, key: str) -> Optional[float]:
  steady = (result.get("training") or {}).get("steady") or {}
  return steady.get(key)


def ratios(pipelines: dict) -> dict:
  """ours / each other pipeline, for steady-state throughput."""
  found = {}
  ours = pipelines.get("ours", {})
  for name, result in pipelines.items():
    if (
        name == "ours"
        or result.get("status") != "ok"
        or (ours.get("status") != "ok")
    ):
      continue
    found[f"ours/{name}"] = {
        key: _ratio(_steady(ours, key), _steady(result, key))
        for key in ("real_tokens_per_second", "examples_per_second")
    }
  return found


def _format(value: Any, spec: str) -> str:
  if value is None:
    return "-"
  return format(value, spec)


def print_table(report: dict) -> None:
  """A human-readable summary of the report."""
  pipelines = report["pipelines"]
  names = list(pipelines)
  rows = [
      ("status", lambda r: r.get("status"), "s"),
      ("precision", lambda r: r.get("precision"), "s"),
      ("steps run", lambda r: r.get("training", {}).get("steps"), "d"),
      ("steady examples/s", lambda r: _steady(r, "examples_per_second"), ".1f"),
      (
          "steady real tokens/s",
          lambda r: _steady(r, "real_tokens_per_second"),
          ".0f",
      ),
      ("median step s", lambda r: _steady(r, "median_step_seconds"), ".3f"),
      (
          "padded/real tokens",
          lambda r: r.get("training", {}).get("padded_per_real_token"),
          ".3f",
      ),
      (
          "time to first step s",
          lambda r: r.get("training", {}).get("time_to_first_step_seconds"),
          ".1f",
      ),
      ("imports s", lambda r: r.get("import_seconds"), ".1f"),
      ("peak RSS MiB", lambda r: r.get("peak_rss_mib"), ".0f"),
      ("test accuracy", lambda r: r.get("test", {}).get("accuracy"), ".4f"),
      (
          "achieved GFLOP/s",
          lambda r: (r.get("flops", {}).get("achieved_flops_per_second") or 0)
          / 1e9
          if r.get("flops")
          else None,
          ".1f",
      ),
      (
          "MFU vs fp32 matmul %",
          lambda r: 100 * r["flops"]["mfu_fp32"]
          if r.get("flops", {}).get("mfu_fp32")
          else None,
          ".1f",
      ),
      (
          "MFU vs bf16 matmul %",
          lambda r: 100 * r["flops"]["mfu_bf16"]
          if r.get("flops", {}).get("mfu_bf16")
          else None,
          ".1f",
      ),
  ]
  width = 22
  print(f"{'':<{width}}" + "".join(f"{name:>14}" for name in names))
  for label, getter, spec in rows:
    cells = []
    for name in names:
      try:
        cells.append(_format(getter(pipelines[name]), spec))
      except (KeyError, TypeError, ValueError):
        cells.append("-")
    print(f"{label:<{width}}" + "".join(f"{cell:>14}" for cell in cells))
  for name, result in pipelines.items():
    if result.get("status") != "ok":
      print(f"{name}: {result.get('status')}: {result.get('reason')}")
  matmul = report["matmul"]
  for precision in ("fp32", "bf16"):
    rates = matmul.get(precision) or {}
    print(
        f"matmul {matmul.get('size')}^2 {precision}: best "
        f"{_format((rates.get('best_flops_per_second') or 0) / 1e9, '.1f')}"
        f" GFLOP/s, median "
        f"{_format((rates.get('median_flops_per_second') or 0) / 1e9, '.1f')}"
        " GFLOP/s"
    )
  for name, values in report["ratios"].items():
    print(
        f"{name}: real tokens/s x"
        f"{_format(values['real_tokens_per_second'], '.2f')}, examples/s x"
        f"{_format(values['examples_per_second'], '.2f')}"
    )
  for note in report["notes"]:
    print(f"Note: {note}")


def parse_args(argv=None) -> argparse.Namespace:
  # tf_finetune.config imports no TensorFlow.
  from tf_finetune import config as config_lib

  parser = argparse.ArgumentParser(
      description=__doc__.split("\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument(
      "--model",
      default="assets/minilm",
      help="Hugging Face model directory (BERT-style).",
  )
  parser.add_argument(
      "--data_dir",
      default="assets/rotten_tomatoes",
      help="Directory of train.csv and test.csv " "(columns text,label).",
  )
  parser.add_argument("--max_seq_length", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--learning_rate", type=float, default=5e-5)
  parser.add_argument("--weight_decay", type=float, default=0.01)
  parser.add_argument("--warmup_ratio", type=float, default=0.1)
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument(
      "--max_steps",
      type=int,
      default=0,
      help="0: full epochs; N > 0: stop every pipeline after "
      "N optimizer steps (throughput check), then "
      "evaluate on the test set.",
  )
  parser.add_argument(
      "--skip_steps",
      type=int,
      default=10,
      help="First steps left out of steady-state numbers.",
  )
  parser.add_argument(
      "--pipelines",
      default="ours,hf_tf",
      help=f"Comma list of {', '.join(PIPELINES)}.",
  )
  parser.add_argument(
      "--precision",
      choices=config_lib.PRECISIONS,
      default=None,
      help="Precision of `ours` (default: tf_finetune's "
      "TrainConfig default); the others run in fp32.",
  )
  parser.add_argument("--matmul_size", type=int, default=2048)
  parser.add_argument("--matmul_repeats", type=int, default=20)
  parser.add_argument(
      "--output", default=None, help="Also append the JSON line to this file."
  )
  parser.add_argument(
      "--_worker", choices=sorted(WORKERS), help=argparse.SUPPRESS
  )
  parser.add_argument("--_job", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._worker:
    return args
  args.model = _resolve_path(args.model)
  args.data_dir = _resolve_path(args.data_dir)
  args.pipelines = [
      name.strip() for name in args.pipelines.split(",") if name.strip()
  ]
  unknown = sorted(set(args.pipelines) - set(PIPELINES))
  if unknown:
    parser.error(
        f"--pipelines: unknown {', '.join(unknown)}; choose from "
        f"{', '.join(PIPELINES)}."
    )
  if args.max_steps < 0 or args.epochs < 1 or args.skip_steps < 0:
    parser.error("--max_steps and --skip_steps must be >= 0, --epochs >= 1.")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args._worker:
    return worker_main(args._worker, args._job)

  date = datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"
  )
  machine = machine_description()
  plan = plan_run(args)
  if plan["total_steps"] <= args.skip_steps + 1:
    raise SystemExit(
        f"{plan['total_steps']} steps leave no steady state "
        f"after --skip_steps={args.skip_steps}."
    )
  _log(f"Plan: {plan}")
  # tf_finetune.config imports no TensorFlow.
  from tf_finetune.config import TrainConfig

  train_defaults = TrainConfig()
  worker_args = argparse.Namespace(
      **{
          key: value
          for key, value in vars(args).items()
          if not key.startswith("_")
      },
      **{key: getattr(train_defaults, key) for key in COPIED_TRAIN_DEFAULTS},
  )
  with tempfile.TemporaryDirectory(prefix="finetune_throughput_") as scratch:
    matmul = run_worker("matmul", worker_args, plan, scratch)
    pipelines = {}
    for name in args.pipelines:
      if name == "torch" and importlib.util.find_spec("torch") is None:
        pipelines[name] = {
            "status": "skipped",
            "reason": "torch is not importable (not "
            "installed in this environment)",
        }
        continue
      pipelines[name] = run_worker(name, worker_args, plan, scratch)
  shape = _model_shape(args.model)
  for result in pipelines.values():
    add_flops(result, shape, matmul)
  machine["tensorflow_version"] = matmul.get("tensorflow_version")
  machine["date"] = date
  report = {
      "benchmark": "finetune_throughput",
      "date": date,
      "command": " ".join([os.path.relpath(__file__)] + sys.argv[1:]),
      "machine": machine,
      "model": {"path": args.model, **shape},
      "hyperparameters": {
          "optimizer": "AdamW (decoupled weight decay, not on LayerNorm or "
          "biases)",
          "learning_rate": args.learning_rate,
          "weight_decay": args.weight_decay,
          "adam_epsilon": worker_args.adam_epsilon,
          "global_clipnorm": worker_args.clip_norm,
          "schedule": "linear decay after linear warmup",
          "warmup_ratio": args.warmup_ratio,
          "batch_size": args.batch_size,
          "max_seq_length": args.max_seq_length,
          "epochs": args.epochs,
          "max_steps": args.max_steps,
          "seed": worker_args.seed,
      },
      "plan": plan,
      "skip_steps": args.skip_steps,
      "matmul": matmul,
      "flops_formula": "real_tokens_per_second * (6 * non_embedding_params + "
      "12 * layers * hidden_size * mean_padded_length); MFU "
      "divides by the best measured matmul FLOP/s",
      "pipelines": pipelines,
      "ratios": ratios(pipelines),
      "notes": report_notes(args, plan, pipelines),
  }
  print_table(report)
  line = json.dumps(report, allow_nan=False, default=str)
  print(line, flush=True)
  if args.output:
    with open(args.output, "a", encoding="utf-8") as f:
      f.write(line + "\n")
  return (
      0
      if all(r.get("status") in ("ok", "skipped") for r in pipelines.values())
      else 1
  )


if __name__ == "__main__":
  sys.exit(main())
