"""Command-line flags of the binaries, and their translation into configs.

Only the binaries (train.py, evaluate.py, predict.py, export.py) import this
module; the library takes the typed configs built here. Flag defaults are the
config defaults, so a flag and the config field it sets cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable

from absl import app, flags, logging

from tf_finetune import config as config_lib

FLAGS = flags.FLAGS

_DATA = {field.name: field.default
         for field in dataclasses.fields(config_lib.DataConfig)}
_MODEL = {field.name: field.default
          for field in dataclasses.fields(config_lib.ModelConfig)}
_TRAIN = {field.name: field.default
          for field in dataclasses.fields(config_lib.TrainConfig)}
_TASK = {field.name: field.default
         for field in dataclasses.fields(config_lib.TaskConfig)}


def define_flag(kind: Callable, name: str, default, help_text: str, **kwargs):
  """Defines a flag unless it exists (binaries' main() may run repeatedly)."""
  if name not in FLAGS:
    kind(name=name, default=default, help=help_text, **kwargs)


def define_data_flags() -> None:
  s, i, b = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_bool
  define_flag(s, "train_file", None, "Training examples: .csv, .tsv or .jsonl.")
  define_flag(s, "validation_file", None,
          "Validation examples (early stopping, best checkpoint).")
  define_flag(s, "test_file", None, "Test examples, evaluated after training.")
  define_flag(s, "tfds_name", None,
          "TensorFlow Datasets name used instead of files, e.g. glue/sst2.")
  define_flag(s, "tfds_data_dir", None, "Where TFDS stores prepared data.")
  define_flag(s, "tfds_train_split", _DATA["tfds_train_split"],
          "TFDS split for training.")
  define_flag(s, "tfds_validation_split", _DATA["tfds_validation_split"],
          "TFDS split for validation ('' for none).")
  define_flag(s, "tfds_test_split", None, "TFDS split for testing.")
  define_flag(s, "text_column", _DATA["text_column"],
          "Column (or TFDS feature) holding the text.")
  define_flag(s, "text_pair_column", None,
          "Column holding the second text of sentence-pair tasks.")
  define_flag(s, "label_column", _DATA["label_column"],
          "Column holding the label (strings or integers).")
  define_flag(i, "max_seq_length", _DATA["max_seq_length"],
          "Maximum tokens per example, [CLS] and [SEP] included; longer "
          "texts are truncated.")
  define_flag(i, "batch_size", _DATA["batch_size"],
          "Examples per replica per step; the global batch is this times the "
          "number of replicas.")
  define_flag(b, "bucketing", _DATA["bucketing"],
          "Batch examples of similar length together to avoid padding.")
  define_flag(i, "shuffle_buffer", _DATA["shuffle_buffer"],
          "Shuffle buffer size in examples.")
  for split in ("train", "validation", "test"):
    define_flag(s, f"{split}_target_file", None,
            f"--task=translation from plain line-aligned files: the "
            f"target-language lines of --{split}_file (which then holds the "
            "source-language lines, one per line).")


def define_model_flags() -> None:
  s, f = flags.DEFINE_string, flags.DEFINE_float
  define_flag(s, "model", None,
          "Pretrained encoder: a hub name (bert-base-uncased) or a local "
          "directory with config.json, weights and tokenizer files.")
  define_flag(flags.DEFINE_enum, "pooling", _MODEL["pooling"],
          "How the sequence becomes one vector.",
          enum_values=list(config_lib.POOLINGS))
  define_flag(f, "dropout", _MODEL["dropout"], "Dropout before the head.")
  define_flag(f, "l2", _MODEL["l2"], "L2 penalty on the head's kernel.")
  define_flag(f, "l1", _MODEL["l1"], "L1 penalty on the head's kernel.")
  define_flag(flags.DEFINE_bool, "allow_pickle_weights",
          _MODEL["allow_pickle_weights"],
          "Allow loading pickled PyTorch .bin weights (can run code; only "
          "for files you trust).")
  define_flag(f, "hidden_dropout", None,
          "Replace the pretrained config's hidden dropout rate.")
  define_flag(f, "attention_dropout", None,
          "Replace the pretrained config's attention dropout rate.")
  define_flag(f, "backbone_l2", _MODEL["backbone_l2"],
          "L2 penalty on the encoder's kernels (not LayerNorm, biases or "
          "embeddings).")
  define_flag(f, "backbone_l1", _MODEL["backbone_l1"],
          "L1 penalty on the encoder's kernels.")
  define_flag(f, "l2_sp", _MODEL["l2_sp"],
          "L2-SP: penalize the squared distance of the encoder's kernels from "
          "their pretrained values (e.g. 0.01); 0 turns it off.")
  define_flag(flags.DEFINE_bool, "regularize_embeddings",
          _MODEL["regularize_embeddings"],
          "Apply --backbone_l1/--backbone_l2/--l2_sp to the embeddings too.")
  define_flag(s, "model_config", None,
          "--task=translation from scratch, instead of --model: a Hugging "
          "Face config.json of an encoder-decoder (e.g. a small T5), or "
          f"'{config_lib.DEFAULT_MODEL_CONFIG}' for the built-in small T5; a "
          "SentencePiece vocabulary of --vocab_size is trained on the "
          "training data.")


def define_task_flags() -> None:
  s, f = flags.DEFINE_string, flags.DEFINE_float
  define_flag(flags.DEFINE_enum, "task", _TASK["task"],
          "What the model predicts: one label per text or pair "
          "(classification), a number (regression), any number of labels "
          "(multi_label), a tag per word (token_classification), the span "
          "of a context that answers a question (question_answering), or a "
          "translation by an encoder-decoder (translation).",
          enum_values=list(config_lib.TASKS))
  define_flag(flags.DEFINE_enum, "regression_loss", _TASK["regression_loss"],
          "Loss of --task=regression.",
          enum_values=list(config_lib.REGRESSION_LOSSES))
  define_flag(f, "huber_delta", _TASK["huber_delta"],
          "Where --regression_loss=huber turns from quadratic to linear.")
  define_flag(s, "label_delimiter", None,
          "--task=multi_label: separates the labels in the label column, "
          "e.g. '|'.")
  define_flag(s, "label_columns", None,
          "--task=multi_label: comma-separated 0/1 columns, one per label, "
          "instead of --label_column.")
  define_flag(f, "threshold", _TASK["threshold"],
          "--task=multi_label: predict a label at or above this probability.")
  define_flag(flags.DEFINE_bool, "tune_threshold", _TASK["tune_threshold"],
          "--task=multi_label: pick the threshold with the best validation "
          "micro-F1 and save it with the model.")
  define_flag(s, "tokens_column", _TASK["tokens_column"],
          "--task=token_classification, JSONL: field with the list of words.")
  define_flag(s, "tags_column", _TASK["tags_column"],
          "--task=token_classification, JSONL: field with the list of tags.")
  define_flag(flags.DEFINE_integer, "tag_column_index",
          _TASK["tag_column_index"],
          "--task=token_classification, CoNLL files: column of the tag "
          "(-1: the last).")
  define_flag(s, "tagging_scheme", _TASK["tagging_scheme"],
          "--task=token_classification: how tags mark entities: "
          f"{', '.join(config_lib.TAGGING_SCHEMES)}.")
  i = flags.DEFINE_integer
  define_flag(s, "question_column", _TASK["question_column"],
          "--task=question_answering, JSONL/CSV: field with the question.")
  define_flag(s, "context_column", _TASK["context_column"],
          "--task=question_answering, JSONL/CSV: field with the context.")
  define_flag(i, "doc_stride", _TASK["doc_stride"],
          "--task=question_answering: a long context is read in windows, "
          "each starting this many tokens after the previous one.")
  define_flag(i, "max_question_length", _TASK["max_question_length"],
          "--task=question_answering: question tokens kept (at most half "
          "of --max_seq_length).")
  define_flag(i, "max_answer_length", _TASK["max_answer_length"],
          "--task=question_answering: longest answer, in tokens.")
  define_flag(i, "n_best_size", _TASK["n_best_size"],
          "--task=question_answering: start and end candidates per window.")
  define_flag(flags.DEFINE_bool, "allow_no_answer", _TASK["allow_no_answer"],
          "--task=question_answering: the model may answer nothing (SQuAD "
          "v2.0 unanswerable questions).")
  define_flag(f, "null_score_threshold", None,
          "--task=question_answering with --allow_no_answer: answer nothing "
          "when the no-answer score beats the best span's by more than this; "
          "unset: chosen on the validation data for the best F1.")
  define_flag(s, "source_column", _TASK["source_column"],
          "--task=translation: column (JSONL field) of the source text.")
  define_flag(s, "target_column", _TASK["target_column"],
          "--task=translation: column (JSONL field) of the translation.")
  define_flag(s, "source_language", None,
          "--task=translation with --tfds_name: source language code (en).")
  define_flag(s, "target_language", None,
          "--task=translation with --tfds_name: target language code (de).")
  define_flag(s, "source_prefix", _TASK["source_prefix"],
          "--task=translation: text put before every source, e.g. "
          "'translate English to German: ' for T5.")
  define_flag(i, "max_source_length", _TASK["max_source_length"],
          "--task=translation: tokens per source (end-of-sequence included); "
          "longer sources are cut.")
  define_flag(i, "max_target_length", _TASK["max_target_length"],
          "--task=translation: tokens per target in training and most tokens "
          "generated per translation.")
  define_flag(i, "num_beams", _TASK["num_beams"],
          "--task=translation: beam width of evaluation and prediction "
          "(1: greedy).")
  define_flag(i, "vocab_size", _TASK["vocab_size"],
          "--task=translation with --model_config: pieces of the "
          "SentencePiece vocabulary trained on the training data.")
  define_flag(i, "no_repeat_ngram_size", _TASK["no_repeat_ngram_size"],
          "--task=translation: evaluation and prediction never repeat an "
          "n-gram of this size in a translation (e.g. 3); 0 = off. The "
          "SavedModel decodes without it.")
  define_flag(flags.DEFINE_bool, "jit_generate", _TASK["jit_generate"],
          "--task=translation: XLA-compile generation in evaluation and "
          "prediction; each new batch shape is compiled first, then greedy "
          "decoding runs faster: for large sets only.")


def define_train_flags() -> None:
  s, i, f, b = (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float,
                flags.DEFINE_bool)
  define_data_flags()
  define_model_flags()
  define_task_flags()
  define_flag(s, "model_dir", None, "Where the run writes everything.")
  define_flag(s, "export_dir", None,
          "Base directory of exported SavedModels (default: "
          "<model_dir>/export).")
  define_flag(i, "epochs", _TRAIN["epochs"], "Passes over the training data.")
  define_flag(f, "learning_rate", _TRAIN["learning_rate"],
          "Peak learning rate (after warmup).")
  define_flag(flags.DEFINE_enum, "schedule", _TRAIN["schedule"],
          "Learning-rate decay after warmup.",
          enum_values=list(config_lib.SCHEDULES))
  define_flag(f, "warmup_ratio", _TRAIN["warmup_ratio"],
          "Warmup as a fraction of all steps.")
  define_flag(i, "warmup_steps", None, "Warmup steps; overrides --warmup_ratio.")
  define_flag(f, "polynomial_power", _TRAIN["polynomial_power"],
          "Exponent of --schedule=polynomial.")
  define_flag(f, "min_lr_ratio", _TRAIN["min_lr_ratio"],
          "Floor of the decayed learning rate, as a fraction of the peak.")
  define_flag(i, "restart_cycles", _TRAIN["restart_cycles"],
          "Cycles of --schedule=cosine_restarts.")
  define_flag(f, "step_decay_factor", _TRAIN["step_decay_factor"],
          "--schedule=step multiplies the rate by this...")
  define_flag(i, "step_decay_every_steps", _TRAIN["step_decay_every_steps"],
          "...every this many steps (0: every epoch).")
  define_flag(f, "layerwise_lr_decay", _TRAIN["layerwise_lr_decay"],
          "Top encoder layer at the base rate, each lower layer and the "
          "embeddings this factor times the one above (e.g. 0.9); 1 = off.")
  define_flag(b, "freeze_embeddings", _TRAIN["freeze_embeddings"],
          "Keep the embeddings at their pretrained values.")
  define_flag(i, "freeze_layers", _TRAIN["freeze_layers"],
          "Keep the bottom N encoder layers at their pretrained values.")
  define_flag(flags.DEFINE_enum, "unfreeze_schedule",
          _TRAIN["unfreeze_schedule"],
          "gradual: train the head first, then one more encoder layer per "
          "epoch from the top.",
          enum_values=list(config_lib.UNFREEZE_SCHEDULES))
  define_flag(f, "label_smoothing", _TRAIN["label_smoothing"],
          "Label smoothing of the cross-entropy (e.g. 0.1).")
  define_flag(i, "grad_accum_steps", _TRAIN["grad_accum_steps"],
          "Accumulate gradients over N micro-batches of --batch_size per "
          "update (effective batch N x batch_size x replicas).")
  define_flag(b, "jit_compile", _TRAIN["jit_compile"],
          "XLA-compile the training step.")
  define_flag(f, "ema_decay", _TRAIN["ema_decay"],
          "Keep an exponential moving average of the weights (e.g. 0.999), "
          "validate and export it; 0 = off.")
  define_flag(f, "weight_decay", _TRAIN["weight_decay"],
          "AdamW decoupled weight decay (LayerNorm and biases excluded).")
  define_flag(f, "clip_norm", _TRAIN["clip_norm"],
          "Global gradient-norm clipping; 0 turns it off.")
  define_flag(f, "adam_epsilon", _TRAIN["adam_epsilon"], "AdamW epsilon.")
  define_flag(flags.DEFINE_enum, "early_stopping_metric",
          _TRAIN["early_stopping_metric"],
          "Validation metric for early stopping and the best checkpoint; "
          "auto: the task's (val_accuracy, val_pearson, val_micro_f1, "
          "val_loss for token classification).",
          enum_values=list(config_lib.EARLY_STOPPING_METRICS))
  define_flag(i, "early_stopping_patience", _TRAIN["early_stopping_patience"],
          "Epochs without improvement before stopping; 0 turns it off.")
  define_flag(f, "early_stopping_min_delta", _TRAIN["early_stopping_min_delta"],
          "Smallest change of the metric that counts as improvement.")
  define_flag(b, "restore_best_weights", _TRAIN["restore_best_weights"],
          "Keep the best validation epoch's weights, not the last epoch's.")
  define_flag(i, "seed", _TRAIN["seed"], "Random seed (head, dropout, shuffle).")
  define_flag(flags.DEFINE_enum, "distribution", _TRAIN["distribution"],
          "tf.distribute strategy; auto mirrors over several GPUs; "
          "multi_worker trains on the cluster described by the TF_CONFIG "
          "environment variable; tpu on --tpu.",
          enum_values=list(config_lib.DISTRIBUTIONS))
  define_flag(s, "tpu", None,
          "TPU for --distribution=tpu: name, grpc:// address or 'local'.")
  define_flag(i, "save_every_steps", _TRAIN["save_every_steps"],
          "Back up the run every N steps so a killed run resumes (0: every "
          "epoch).")
  define_flag(i, "log_every_steps", _TRAIN["log_every_steps"],
          "TensorBoard learning-rate and loss logging interval.")
  define_flag(i, "steps_per_execution", _TRAIN["steps_per_execution"],
          "Training steps per call into the TensorFlow runtime.")
  define_flag(flags.DEFINE_enum, "precision", _TRAIN["precision"],
          "fp32; bf16 or fp16 mixed precision (float32 weights; fp16 with "
          "loss scaling); auto: bf16 where the hardware has it.",
          enum_values=list(config_lib.PRECISIONS))
  define_flag(b, "export", _TRAIN["export"],
          "Export a SavedModel when training ends.")


def _values(names) -> dict:
  return {name: FLAGS[name].value for name in names}


def run_config_from_flags() -> config_lib.RunConfig:
  """Builds the validated run config from parsed flags."""
  if not FLAGS.model_dir:
    raise ValueError("--model_dir is required: the directory the run writes "
                     "its checkpoints, logs and exports to.")
  data = _values(_DATA)
  if data["tfds_validation_split"] == "":
    data["tfds_validation_split"] = None
  return config_lib.RunConfig(
      model_dir=FLAGS.model_dir, export_dir=FLAGS.export_dir,
      data=config_lib.DataConfig(**data),
      model=config_lib.ModelConfig(**_values(_MODEL)),
      train=config_lib.TrainConfig(**_values(_TRAIN)),
      task=config_lib.TaskConfig(**_values(_TASK)))


def run_main(program: str, argv, main: Callable[[], object]) -> None:
  """Runs a binary's body; user errors become one line and exit code 2.

  Args:
    program: The binary's name, for messages.
    argv: What absl left of the command line (the program name only, unless
      something was not a flag).
    main: The body, reading FLAGS.
  """
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.INFO)
  try:
    main()
  except ValueError as e:
    logging.error("%s", e)
    print(f"{program}: error: {e}", file=sys.stderr)
    sys.exit(2)
