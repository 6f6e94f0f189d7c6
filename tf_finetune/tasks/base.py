"""What every task answers: the abstract `Task` and the run's shared types.

A task reads and encodes its examples, builds its model, saves and loads a
trained run, predicts, chooses post-hoc values on validation data (a
multi-label threshold), computes and describes its metrics, and serves raw
text. `training`, `evaluation`, `prediction` and the binaries call these
methods and nothing task-specific.

`tasks.encoder.EncoderTask` implements the model half once for the tasks
that put a head on a pretrained encoder; translation implements its own.

Per-run state, the label vocabulary and the values chosen after training,
is one `TaskState` bound to the task once it is known (`bind`): methods read
it as `self.state` instead of taking it as arguments.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from tf_finetune import config as config_lib
from tf_finetune import serving
from tf_finetune.data import pipeline, readers, writers

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class TaskState:
  """What a task knows of one run beyond its config.

  Attributes:
    label_vocab: The names of the model's outputs, in id order (class
      labels, tags; empty for a translator).
    text_pair: Whether the model reads sentence pairs.
    chosen: Values chosen on validation data after training and saved with
      the run (`task_state.json`), e.g. {"threshold": 0.4}.
  """

  label_vocab: tuple[str, ...] = ()
  text_pair: bool = False
  chosen: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PreparedData:
  """A run's examples, read, checked and encoded by its task.

  Attributes:
    config: The run config with what the task resolved (a TFDS data set's
      own feature names): the one the run saves.
    examples: Split name -> examples as read.
    encoded: Split name -> model inputs and targets.
    tokenizer: The model's own tokenizer (Hugging Face), or the task's
      vocabulary.
    encoder: What tokenizes in the graph and pads (`pad_id`).
    task: The task, its run's state bound.
  """

  config: config_lib.RunConfig
  examples: dict[str, readers.Examples]
  encoded: dict[str, pipeline.EncodedExamples]
  tokenizer: Any
  encoder: Any
  task: Task


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A finished run loaded back from its `model_dir`, its task bound."""

  config: config_lib.RunConfig
  task: Task
  tokenizer: Any
  encoder: Any
  model: tf_keras.Model

  @property
  def label_vocab(self) -> list[str]:
    return list(self.task.state.label_vocab)


class Task(abc.ABC):
  """The interface every task implements; see the module docstring."""

  # The --task name.
  name: ClassVar[str] = ""
  # The serving output the export compares before and after reloading.
  checked_output: ClassVar[str] = "probabilities"
  # The names of serving_default's inputs.
  input_names: ClassVar[tuple[str, ...]] = ("text", "text_pair")

  def __init__(self, config: config_lib.TaskConfig):
    self.config = config
    self._state: Optional[TaskState] = None

  # Per-run state.
  @property
  def state(self) -> TaskState:
    if self._state is None:
      raise RuntimeError(
          f"The {self.name} task has no run bound yet: call "
          "prepare() or load_trained() first."
      )
    return self._state

  def bind(self, state: TaskState) -> None:
    """Binds the run's state; later calls may only add chosen values."""
    if self._state is not None and (
        self._state.label_vocab != state.label_vocab
    ):
      raise RuntimeError(f"The {self.name} task is bound to another run.")
    self._state = state

  # Reading and encoding.
  @abc.abstractmethod
  def read(
      self,
      data: config_lib.DataConfig,
      split: str,
      *,
      path: Optional[str] = None,
      with_labels: bool = True,
  ) -> Optional[readers.Examples]:
    """Reads a split named by the data config (or `path` instead).

    Returns:
      The examples, or None when the config names no such split.
    """

  def read_splits(
      self, data: config_lib.DataConfig
  ) -> dict[str, readers.Examples]:
    """The train, validation and test splits the data config names.

    Raises:
      ValueError: when the training split has no labels.
    """
    examples = {split: self.read(data, split) for split in SPLITS}
    examples = {
        split: found for split, found in examples.items() if found is not None
    }
    if examples["train"].labels is None:
      raise ValueError(f"{examples['train'].source} has no labels.")
    return examples

  def check_labels(self, examples: readers.Examples, flag: str) -> None:
    """Raises if `examples` hold labels the bound model cannot predict.

    By default every label is accepted (a translator's targets).
    """
    del examples, flag

  @abc.abstractmethod
  def encode(
      self, examples: readers.Examples, encoder: Any
  ) -> pipeline.EncodedExamples:
    """Model inputs (and targets, when labelled) of `examples`."""

  @abc.abstractmethod
  def prepare(self, config: config_lib.RunConfig) -> PreparedData:
    """Reads, checks and encodes the splits; binds the run's state.

    Raises:
      ValueError: for bad files, columns, labels or model, naming the flag.
    """

  # The model.
  @abc.abstractmethod
  def build_model(
      self,
      config: config_lib.RunConfig,
      prepared: PreparedData,
      *,
      total_steps: int,
      steps_per_epoch: int,
      learning_rate=None,
  ) -> tf_keras.Model:
    """The compiled Keras model; called inside the strategy scope.

    Args:
      config: The run config.
      prepared: The run's data, tokenizer and encoder.
      total_steps: Optimizer updates in the whole run (for the schedule).
      steps_per_epoch: Updates per epoch.
      learning_rate: A schedule replacing the config's (the range test's).
    """

  def training_callbacks(
      self, model: tf_keras.Model, config: config_lib.RunConfig
  ) -> list:
    """Callbacks the task's model needs during `fit` (gradual unfreezing)."""
    del model, config
    return []

  @abc.abstractmethod
  def save_run_files(
      self,
      model_dir: str,
      config: config_lib.RunConfig,
      prepared: PreparedData,
      model: tf_keras.Model,
  ) -> None:
    """Writes what evaluation, prediction and export need besides weights."""

  @abc.abstractmethod
  def load_trained(
      self, model_dir: str, config: config_lib.RunConfig
  ) -> TrainedModel:
    """Rebuilds the trained model from `model_dir` (no download); binds."""

  # Evaluation.
  @abc.abstractmethod
  def predict(
      self,
      model: tf_keras.Model,
      encoded: pipeline.EncodedExamples,
      *,
      batch_size: int,
  ) -> Any:
    """The post-processed model outputs of every example, in input order."""

  def choose(
      self,
      examples: readers.Examples,
      encoded: pipeline.EncodedExamples,
      outputs: Any,
  ) -> dict:
    """Values chosen on validation data after training (`TaskState.chosen`)."""
    del examples, encoded, outputs
    return {}

  def selection(self) -> dict[str, str]:
    """What chose each post-hoc value of the bound run, by value name:
    "validation" for a value chosen on validation data, else the flag
    that set it (eval_results.json's "selection" block)."""
    return {}

  @abc.abstractmethod
  def metrics(
      self,
      examples: readers.Examples,
      encoded: pipeline.EncodedExamples,
      outputs: Any,
  ) -> dict:
    """The evaluation metrics (JSON-serializable) of labelled examples."""

  @abc.abstractmethod
  def describe(self, metrics: dict) -> str:
    """One line of the metrics for the log and the binaries' output."""

  # Serving and prediction files.
  @abc.abstractmethod
  def server(self, trained: TrainedModel) -> tf.Module:
    """The trained model behind the serving signatures (`serving.Server`)."""

  def python_serving(self, trained: TrainedModel) -> Callable[..., dict]:
    """What `predict --model_dir` runs on string tensors [batch]: by
    default serving_default of `server(trained)`, as the export would."""
    return self.server(trained).signatures()[serving.DEFAULT_SIGNATURE]

  @abc.abstractmethod
  def export(
      self,
      trained: TrainedModel,
      *,
      export_base: str,
      sample_texts: Sequence[str] = (),
      sample_pairs: Optional[Sequence[str]] = None,
  ) -> str:
    """Exports a SavedModel version under `export_base`; returns its dir."""

  @abc.abstractmethod
  def prediction_rows(self, outputs: dict[str, np.ndarray]) -> list[dict]:
    """Per-example columns (name -> value) from one batch of signature
    outputs, added to each input row of a prediction file."""

  def read_prediction_input(
      self,
      path: str,
      *,
      text_column: Optional[str],
      text_pair_column: Optional[str],
  ) -> readers.Examples:
    """The texts of `predict --input_file` (`text_column` None: "text")."""
    return readers.read_file(
        path,
        text_column=text_column or "text",
        text_pair_column=text_pair_column,
        label_column=None,
        flag="--input_file",
    )

  def write_prediction_file(
      self, path: str, examples: readers.Examples, rows: Sequence[dict]
  ) -> None:
    """Writes `predict --output_file`: each input row with its columns."""
    writers.write_prediction_rows(path, examples, rows)
