"""What every task answers, and the shared behaviour of text-level tasks.

A task says how examples are read, how labels become model targets, the size
of the head and whether it reads one vector per text or one per token, the
per-example loss, the Keras metrics shown during training, the evaluation
metrics, how the model's outputs are post-processed, and the serving
signature. The training, evaluation, prediction and export code paths call
these methods and nothing task-specific.

`TextTask` implements the parts shared by the tasks that predict for a whole
text or text pair (classification, regression, multi-label): they read the
`--text_column` / `--text_pair_column` of CSV, TSV, JSONL files or TFDS.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from tf_finetune.config import DataConfig, TaskConfig, TrainConfig
from tf_finetune.data import pipeline, readers
from tf_finetune.tokenization import TextEncoder

# TFDS text features of the data sets with a known layout: (text, text pair,
# label). A run whose --text_column is not a feature of the data set gets
# these; a pair data set read with one text column is refused.
TFDS_TEXT_FEATURES = {
    "glue/cola": ("sentence", None, "label"),
    "glue/sst2": ("sentence", None, "label"),
    "glue/mrpc": ("sentence1", "sentence2", "label"),
    "glue/qqp": ("question1", "question2", "label"),
    "glue/stsb": ("sentence1", "sentence2", "label"),
    "glue/mnli": ("premise", "hypothesis", "label"),
    "glue/qnli": ("question", "sentence", "label"),
    "glue/rte": ("sentence1", "sentence2", "label"),
    "glue/wnli": ("sentence1", "sentence2", "label"),
    "glue/ax": ("premise", "hypothesis", "label"),
}


def tfds_columns(data: DataConfig) -> tuple[str, Optional[str], str]:
  """The (text, pair, label) features to read from `data.tfds_name`.

  Raises:
    ValueError: when a sentence-pair data set is read with one text column.
  """
  known = TFDS_TEXT_FEATURES.get(data.tfds_name.split(":")[0])
  if known is None:
    return data.text_column, data.text_pair_column, data.label_column
  defaults = data.text_column == DataConfig.text_column
  text = known[0] if defaults else data.text_column
  pair = data.text_pair_column or (known[1] if defaults else None)
  label = (known[2] if data.label_column == DataConfig.label_column
           else data.label_column)
  if known[1] and pair is None:
    raise ValueError(
        f"--tfds_name={data.tfds_name} is a sentence-pair task "
        f"({known[0]}, {known[1]}) but only --text_column={text!r} was "
        f"given; set --text_pair_column={known[1]} (or leave both unset).")
  return text, pair, label


def read_text_split(data: DataConfig, split: str, *,
                    path: Optional[str] = None,
                    with_labels: bool = True) -> Optional[readers.Examples]:
  """Reads the train, validation or test split named by the data config.

  Args:
    data: The data config.
    split: "train", "validation" or "test".
    path: A file that replaces the config's file for this split.
    with_labels: Read the label column.

  Returns:
    The examples, or None when the config names no such split.
  """
  path = path or getattr(data, f"{split}_file")
  if path:
    return readers.read_file(
        path, text_column=data.text_column,
        text_pair_column=data.text_pair_column,
        label_column=data.label_column if with_labels else None,
        flag=f"--{split}_file")
  tfds_split = getattr(data, f"tfds_{split}_split")
  if data.tfds_name and tfds_split:
    text, pair, label = tfds_columns(data)
    return readers.read_tfds(data.tfds_name, tfds_split,
                             data_dir=data.tfds_data_dir, text_column=text,
                             text_pair_column=pair,
                             label_column=label if with_labels else None)
  return None


def check_label_lists(examples: readers.Examples, label_vocab: Sequence[str],
                      flag: str, *, noun: str = "label") -> None:
  """Refuses an example whose list of labels (or tags) has an unknown one.

  Raises:
    ValueError: naming the file and line, the label and the flag.
  """
  known = set(label_vocab)
  for labels, line in zip(examples.labels or (), examples.line_numbers):
    unknown = [label for label in labels if label not in known]
    if unknown:
      raise ValueError(
          f"{examples.source}:{line}: {noun} {unknown[0]!r} (from {flag}) "
          f"was never seen in training; the model knows: "
          f"{', '.join(label_vocab)}.")


class Task:
  """The interface every task implements; see the module docstring."""

  name = ""
  # The head reads every token's hidden state rather than a pooled vector.
  per_token = False
  # The serving output the export check compares before and after reloading.
  checked_output = "probabilities"
  # The names of serving_default's inputs: the text and the pair.
  input_names = ("text", "text_pair")
  # The task brings its own model, tokenizer and export instead of a head on
  # a pretrained encoder (translation's encoder-decoder); it then implements
  # the hooks under "A task's own model" below, and the shared training,
  # evaluation and prediction code calls them.
  owns_model = False

  def __init__(self, config: TaskConfig):
    self.config = config

  # Reading and labels.
  def resolve_data(self, data: DataConfig) -> DataConfig:
    """`data` with the columns the task will read filled in (TFDS layouts)."""
    return data

  def read(self, data: DataConfig, split: str, *, path: Optional[str] = None,
           with_labels: bool = True) -> Optional[readers.Examples]:
    raise NotImplementedError

  def read_splits(self, data: DataConfig) -> dict[str, readers.Examples]:
    """The train, validation and test splits the data config names.

    Raises:
      ValueError: when the training split has no labels.
    """
    examples = {split: self.read(data, split)
                for split in ("train", "validation", "test")}
    examples = {split: found for split, found in examples.items()
                if found is not None}
    if examples["train"].labels is None:
      raise ValueError(f"{examples['train'].source} has no labels.")
    return examples

  def label_vocab(self, examples: readers.Examples) -> list[str]:
    """The names of the head's outputs, from the training examples."""
    raise NotImplementedError

  def check_labels(self, examples: readers.Examples,
                   label_vocab: Sequence[str], flag: str) -> None:
    """Raises if `examples` hold labels the model cannot learn or predict."""

  def encode(self, examples: readers.Examples, encoder: TextEncoder,
             label_vocab: Sequence[str]) -> pipeline.EncodedExamples:
    raise NotImplementedError

  # The model.
  def head_size(self, label_vocab: Sequence[str]) -> int:
    return len(label_vocab)

  def loss_fn(self, train: TrainConfig) -> Optional[Callable]:
    """(labels, logits) -> float32 [batch]; None: the model's default."""
    return None

  def keras_metrics(self, label_vocab: Sequence[str]) -> list:
    raise NotImplementedError

  # Evaluation.
  def predict(self, model, encoded: pipeline.EncodedExamples, *,
              batch_size: int, pad_id: int) -> Any:
    """The post-processed model outputs of every example, in input order."""
    raise NotImplementedError

  def fit_state(self, examples: readers.Examples,
                encoded: pipeline.EncodedExamples, outputs: Any,
                label_vocab: Sequence[str]) -> dict:
    """Values chosen on validation data and saved with the model."""
    return {}

  def metrics(self, examples: readers.Examples,
              encoded: pipeline.EncodedExamples, outputs: Any,
              label_vocab: Sequence[str], state: dict) -> dict:
    raise NotImplementedError

  def describe(self, metrics: dict) -> str:
    """One line of the metrics for the log and the binaries' output."""
    raise NotImplementedError

  # A task's own model (owns_model = True).
  def prepare(self, config) -> dict:
    """Reads and encodes the splits: a dict of `training.PreparedData`'s
    fields (label_vocab, tokenizer, encoder, examples, encoded)."""
    raise NotImplementedError

  def build_model(self, config, prepared, *, total_steps: int,
                  steps_per_epoch: int, learning_rate=None):
    """The compiled Keras model, built inside the strategy scope."""
    raise NotImplementedError

  def save_run_files(self, model_dir: str, config, prepared, model) -> None:
    """What evaluation, prediction and export need besides weights."""
    raise NotImplementedError

  def load_trained(self, model_dir: str, config):
    """The finished run (fields of `artifacts.TrainedModel`)."""
    raise NotImplementedError

  def export(self, trained, *, export_base: str,
             sample_texts: Sequence[str] = ()) -> str:
    """Exports a SavedModel version; returns its directory."""
    raise NotImplementedError

  # Serving and prediction files.
  def server(self, model, encoder: TextEncoder, label_vocab: Sequence[str],
             *, text_pair: bool, state: dict) -> tf.Module:
    """A tf.Module with `signatures()`, `serve(**inputs)` and label vocab."""
    raise NotImplementedError

  def prediction_rows(self, outputs: dict[str, np.ndarray],
                      label_vocab: Sequence[str]) -> list[dict]:
    """Per-example columns (name -> value) from one batch of signature
    outputs, added to each input row of a prediction file."""
    raise NotImplementedError

  def read_prediction_input(self, path: str, *, text_column: Optional[str],
                            text_pair_column: Optional[str]
                            ) -> readers.Examples:
    """The texts of `predict --input_file` (`text_column` None: "text")."""
    return readers.read_file(path, text_column=text_column or "text",
                             text_pair_column=text_pair_column,
                             label_column=None, flag="--input_file")

  def write_prediction_file(self, path: str, examples: readers.Examples,
                            rows: Sequence[dict]) -> None:
    """Writes `predict --output_file`: each input row with its columns."""
    from tf_finetune import prediction  # Local: prediction imports tasks.
    prediction.write_prediction_rows(path, examples, rows)


class TextTask(Task):
  """A task predicting for a whole text or text pair."""

  def resolve_data(self, data):
    if not data.tfds_name or data.train_file:
      return data
    text, pair, label = tfds_columns(data)
    return dataclasses.replace(data, text_column=text, text_pair_column=pair,
                               label_column=label)

  def read(self, data, split, *, path=None, with_labels=True):
    return read_text_split(data, split, path=path, with_labels=with_labels)

  def label_ids(self, examples: readers.Examples,
                label_vocab: Sequence[str]) -> np.ndarray:
    """The model targets of `examples`, one row per example."""
    raise NotImplementedError

  def encode(self, examples, encoder, label_vocab):
    encoded = pipeline.encode_examples(examples, encoder)
    if examples.labels is None:
      return encoded
    return dataclasses.replace(encoded,
                               label_ids=self.label_ids(examples, label_vocab))

  def logits(self, model, encoded: pipeline.EncodedExamples, *,
             batch_size: int, pad_id: int) -> np.ndarray:
    """float32 [num_examples, head_size] logits, in input order."""
    dataset, order = pipeline.inference_dataset(
        encoded, batch_size=batch_size, pad_id=pad_id, with_labels=False)
    logits = model.predict(dataset, verbose=0)
    restored = np.empty_like(logits, dtype=np.float32)
    restored[order] = logits
    return restored
