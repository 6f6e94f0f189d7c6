"""The model half of every task that puts a head on a pretrained encoder.

Classification, sentence pairs, regression, multi-label, token
classification and question answering all fine-tune a `transformers` TF
encoder with a small head (`models.classifier.TextClassifier`). This module
does, once for all of them: loading the model's tokenizer and checking the
in-graph tokenizer against it, building and compiling the model with every
optimization lever of the config, saving and loading a run, and exporting
it. A task adds what it alone knows: how it reads and labels examples, the
head's size, loss and metrics, post-processing and its server.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from typing import Callable, Optional

import tensorflow as tf
from absl import logging

from tf_finetune import artifacts, callbacks, optimization, serving
from tf_finetune import config as config_lib
from tf_finetune.data import labels, readers
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.models.chunked import ChunkedTextClassifier
from tf_finetune.models.classifier import TextClassifier
from tf_finetune.tasks import base
from tf_finetune.text import families
from tf_finetune.text.long_documents import LongDocuments
from tf_finetune.text.tokenization import (
    TRICKY_TEXTS,
    TextEncoder,
    TokenizerNotSupportedError,
    check_matches_tokenizer,
)

# Training texts compared against the model's own tokenizer before training.
TOKENIZER_CHECK_SAMPLES = 256


def build_classifier(
    backbone,
    head_size: int,
    model_config: config_lib.ModelConfig,
    seed: int,
    *,
    label_smoothing: float = 0.0,
    grad_accum_steps: int = 1,
    per_token: bool = False,
    loss_fn: Optional[Callable] = None,
    chunk_pooling: Optional[str] = None,
) -> TextClassifier:
  """The task model on `backbone`, its variables created.

  Args:
    backbone: The Hugging Face TF encoder.
    head_size: Outputs of the head.
    model_config: Pooling, dropout and head penalties.
    seed: Seeds the head's initializer and dropout.
    label_smoothing: For the default (cross-entropy) loss.
    grad_accum_steps: Micro-batches per update.
    per_token: A head on every token (token classification).
    loss_fn: The task's per-example loss; default cross-entropy.
    chunk_pooling: For documents read in windows: how their logits are
      pooled ("mean" or "max"); None: one window per example.
  """
  pooling = model_config.pooling
  if not per_token:  # A head on every token pools nothing.
    pooling = families.resolve_pooling(
        pooling, families.family_of(backbone.config.model_type)
    )
  settings = dict(
      pooling=pooling,
      dropout=model_config.dropout,
      l1=model_config.l1,
      l2=model_config.l2,
      seed=seed,
      label_smoothing=label_smoothing,
      grad_accum_steps=grad_accum_steps,
      per_token=per_token,
      loss_fn=loss_fn,
  )
  if chunk_pooling is None:
    model = TextClassifier(backbone, head_size, **settings)
  else:
    model = ChunkedTextClassifier(
        backbone, head_size, chunk_pooling=chunk_pooling, **settings
    )
  model(model.dummy_inputs())  # Creates the head's variables.
  return model


def add_backbone_penalties(
    model: TextClassifier, model_config: config_lib.ModelConfig
) -> None:
  """Adds --backbone_l1/--backbone_l2 or --l2_sp to the model's losses."""
  l1, l2, l2_sp = (
      model_config.backbone_l1,
      model_config.backbone_l2,
      model_config.l2_sp,
  )
  if not (l1 or l2 or l2_sp):
    return
  variables = backbone_lib.penalized_variables(
      model.backbone, include_embeddings=model_config.regularize_embeddings
  )
  if l1 or l2:

    def penalty():
      total = 0.0
      for variable in variables:
        if l1:
          total += l1 * tf.reduce_sum(tf.abs(variable))
        if l2:
          total += l2 * tf.reduce_sum(tf.square(variable))
      return total

    model.add_loss(penalty)
  if l2_sp:
    # The pretrained values, outside the model's checkpoint: a resumed run
    # loads them again from --model, so they always mean "pretrained".
    anchors = [
        tf.Variable(variable.read_value(), trainable=False)
        for variable in variables
    ]

    def distance_from_pretrained():
      return l2_sp * tf.add_n(
          [
              tf.reduce_sum(tf.square(variable - anchor))
              for variable, anchor in zip(variables, anchors)
          ]
      )

    model.add_loss(distance_from_pretrained)
  logging.info(
      "Backbone penalties on %d kernels: l1=%g l2=%g l2_sp=%g.",
      len(variables),
      l1,
      l2,
      l2_sp,
  )


def freeze_initial_layers(
    backbone, train_config: config_lib.TrainConfig
) -> None:
  """Freezes --freeze_layers/--freeze_embeddings (all, if gradual)."""
  gradual = train_config.unfreeze_schedule == "gradual"
  if not (
      gradual or train_config.freeze_layers or train_config.freeze_embeddings
  ):
    return
  num_layers = len(backbone_lib.encoder_layers(backbone))
  backbone_lib.set_trainable_layers(
      backbone,
      frozen_layers=num_layers if gradual else train_config.freeze_layers,
      freeze_embeddings=gradual or train_config.freeze_embeddings,
  )


class EncoderTask(base.Task):
  """A head on a pretrained encoder; subclasses say what the head learns."""

  # The head reads every token's hidden state rather than a pooled vector.
  per_token = False
  # The task splits text into words and tokenizes each word alone (token
  # classification, question answering): WordPiece in BERT's layout only.
  splits_words = False

  # What each encoder task says.
  def resolve_data(self, data: config_lib.DataConfig) -> config_lib.DataConfig:
    """`data` with the columns the task will read filled in (TFDS layouts)."""
    return data

  @abc.abstractmethod
  def label_vocab_of(self, examples: readers.Examples) -> list[str]:
    """The names of the head's outputs, from the training examples."""

  def head_size(self) -> int:
    return len(self.state.label_vocab)

  def long_documents(self) -> LongDocuments:
    """How a text longer than --max_seq_length is read: its head is kept."""
    return LongDocuments()

  def chunk_pooling(self) -> Optional[str]:
    """How window logits are pooled, when texts are read in windows."""
    policy = self.long_documents()
    return policy.pooling if policy.chunks else None

  def loss_fn(self, train: config_lib.TrainConfig) -> Optional[Callable]:
    """(labels, logits) -> float32 [batch]; None: cross-entropy."""
    del train
    return None

  @abc.abstractmethod
  def keras_metrics(self) -> list:
    """The metrics Keras shows during training and validation."""

  # Reading and encoding.
  def prepare(self, config):
    data = self.resolve_data(config.data)
    config = dataclasses.replace(config, data=data)
    examples = self.read_splits(data)
    train_examples = examples["train"]
    self.bind(
        base.TaskState(
            label_vocab=tuple(self.label_vocab_of(train_examples)),
            text_pair=data.text_pair_column is not None,
        )
    )
    for split in ("validation", "test"):
      if split in examples:
        self.check_labels(examples[split], f"--{split}_file")
    label_vocab = self.state.label_vocab
    logging.info(
        "Task %s; outputs (%d): %s",
        self.name,
        len(label_vocab),
        ", ".join(label_vocab),
    )

    backbone_lib.check_model_source(
        config.model.model, config.model.allow_pickle_weights
    )
    family = backbone_lib.model_family(config.model.model)
    if not self.per_token:
      families.resolve_pooling(config.model.pooling, family)
    tokenizer = backbone_lib.load_tokenizer(config.model.model)
    # Before anything in model_dir changes (a rerun's fingerprint check,
    # --overwrite_model_dir), not when the model is built.
    backbone_lib.check_tokenizer_fits(
        tokenizer,
        backbone_lib.load_model_config(config.model.model),
        config.model.model,
    )
    config = self.choose_text_length_settings(config, tokenizer, train_examples)
    encoder = self.text_encoder(
        tokenizer, data.max_seq_length, family, model=config.model.model
    )
    sample = slice(0, TOKENIZER_CHECK_SAMPLES)
    check_matches_tokenizer(
        encoder,
        tokenizer,
        train_examples.texts[sample],
        None
        if train_examples.text_pairs is None
        else train_examples.text_pairs[sample],
    )
    encoded = {
        split: self.encode(found, encoder) for split, found in examples.items()
    }
    return base.PreparedData(
        config, examples, encoded, tokenizer, encoder, self
    )

  def choose_text_length_settings(
      self,
      config: config_lib.RunConfig,
      tokenizer,
      train_examples: readers.Examples,
  ) -> config_lib.RunConfig:
    """`config` with the settings --recipe chooses from the training
    texts' lengths filled, before they are encoded; a task without such
    settings returns `config`."""
    del tokenizer, train_examples
    return config

  def text_encoder(
      self,
      tokenizer,
      max_seq_length: int,
      family: families.Family,
      *,
      model: str,
  ) -> TextEncoder:
    """The in-graph encoder of `tokenizer` for a model of `family`.

    Raises:
      ValueError: for a tokenizer that cannot be reproduced in the graph,
        or a word-level task on a family whose tokenizer is not WordPiece in
        BERT's layout; both name the family.
    """
    try:
      encoder = TextEncoder.from_hf_tokenizer(
          tokenizer,
          max_seq_length,
          model_inputs=family.model_inputs,
          long_documents=self.long_documents(),
      )
    except TokenizerNotSupportedError as e:
      raise ValueError(f"--model={model!r} ({family.name}): {e}") from e
    if self.splits_words and not encoder.bert_layout:
      raise ValueError(
          f"--task={self.name} does not support {family.name} models "
          f"(--model={model!r}): it tokenizes each word alone, which matches "
          f"tokenizing the whole text only for WordPiece tokenizers packed as "
          f"[CLS] a [SEP] b [SEP] (BERT, DistilBERT, ELECTRA), and this "
          f"model's is a {encoder.tokenizer_type} tokenizer packed as "
          f"{encoder.template.render(tokenizer.convert_ids_to_tokens)}."
      )
    return encoder

  # The model.
  def build_model(
      self,
      config,
      prepared,
      *,
      total_steps,
      steps_per_epoch,
      learning_rate=None,
  ):
    """The pretrained backbone with a fresh head, compiled for fine-tuning.

    Applies every optimization lever of the config: dropout overrides,
    re-initialized top layers, backbone penalties (L1/L2 or L2-SP), layer-wise learning rates, frozen
    layers, label smoothing, gradient accumulation, EMA, XLA.
    """
    model_config, train_config = config.model, config.train
    backbone = backbone_lib.load_backbone(
        model_config.model,
        allow_pickle_weights=model_config.allow_pickle_weights,
        config_overrides=model_config.config_overrides,
    )
    backbone_lib.check_tokenizer_fits(
        prepared.tokenizer, backbone.config, model_config.model
    )
    model = build_classifier(
        backbone,
        self.head_size(),
        model_config,
        train_config.seed,
        label_smoothing=train_config.label_smoothing,
        grad_accum_steps=train_config.grad_accum_steps,
        per_token=self.per_token,
        loss_fn=self.loss_fn(train_config),
        chunk_pooling=self.chunk_pooling(),
    )
    if train_config.reinit_layers:
      # Before L2-SP takes its anchors and the optimizer its averages: both
      # start from the re-initialized values.
      backbone_lib.reinitialize_top_layers(
          backbone,
          train_config.reinit_layers,
          include_pooler=not self.per_token and model.pooling == "pooler",
          seed=train_config.seed,
      )
    add_backbone_penalties(model, model_config)
    optimizer = optimization.create_optimizer(
        train_config,
        total_steps,
        steps_per_epoch=steps_per_epoch,
        learning_rate=learning_rate,
        lr_multipliers=backbone_lib.layerwise_lr_multipliers(
            backbone, train_config.layerwise_lr_decay
        ),
        model=model,
    )
    # Slots for every variable now, before any is frozen: layers unfrozen
    # later must find theirs (optimizer variables cannot be created mid-fit).
    optimizer.build(model.trainable_variables)
    freeze_initial_layers(backbone, train_config)
    model.compile(
        optimizer=optimizer,
        metrics=self.keras_metrics(),
        steps_per_execution=train_config.steps_per_execution,
        jit_compile=train_config.jit_compile,
    )
    return model

  def training_callbacks(self, model, config):
    train_config = config.train
    if train_config.unfreeze_schedule != "gradual":
      return []
    return [
        callbacks.GradualUnfreezing(
            model.backbone,
            num_layers=len(backbone_lib.encoder_layers(model.backbone)),
            freeze_layers=train_config.freeze_layers,
            freeze_embeddings=train_config.freeze_embeddings,
        )
    ]

  # Saving and loading a run.
  def save_run_files(self, model_dir, config, prepared, model):
    """config.json, label_vocab.txt, the tokenizer and the architecture."""
    config_lib.write_config(config, model_dir)
    labels.write_label_vocab(self.state.label_vocab, model_dir)
    artifacts.save_directories(
        model_dir,
        {
            artifacts.TOKENIZER_DIR: prepared.tokenizer.save_pretrained,
            artifacts.BACKBONE_DIR: model.backbone.config.save_pretrained,
        },
    )

  def load_trained(self, model_dir, config):
    weights_dir = artifacts.final_weights_dir(model_dir)
    self.bind(
        base.TaskState(
            label_vocab=tuple(labels.read_label_vocab(model_dir)),
            text_pair=config.data.text_pair_column is not None,
            chosen=artifacts.read_task_state(model_dir),
        )
    )
    tokenizer = backbone_lib.load_tokenizer(
        os.path.join(model_dir, artifacts.TOKENIZER_DIR)
    )
    backbone_dir = os.path.join(model_dir, artifacts.BACKBONE_DIR)
    family = backbone_lib.model_family(backbone_dir)
    encoder = self.text_encoder(
        tokenizer, config.data.max_seq_length, family, model=backbone_dir
    )
    backbone = backbone_lib.backbone_from_config(backbone_dir)
    model = build_classifier(
        backbone,
        self.head_size(),
        config.model,
        config.train.seed,
        per_token=self.per_token,
        loss_fn=self.loss_fn(config.train),
        chunk_pooling=self.chunk_pooling(),
    )
    artifacts.restore_weights(model, weights_dir)
    return base.TrainedModel(config, self, tokenizer, encoder, model)

  # Serving.
  def export(self, trained, *, export_base, sample_texts=(), sample_pairs=None):
    """Exports the task's server, its tokenizer checked first.

    The in-graph tokenizer is checked against the model's own tokenizer on
    `sample_texts` plus built-in tricky texts before anything is written.
    """
    texts = list(TRICKY_TEXTS) + list(sample_texts)
    inputs = {self.input_names[0]: texts}
    pairs = None
    if self.state.text_pair:
      pairs = list(reversed(TRICKY_TEXTS)) + list(sample_pairs or sample_texts)
      pairs = pairs[: len(texts)] + [""] * (len(texts) - len(pairs))
      inputs[self.input_names[1]] = pairs
    check_matches_tokenizer(trained.encoder, trained.tokenizer, texts, pairs)
    return serving.export_server(
        self.server(trained),
        export_base=export_base,
        sample_inputs=inputs,
        checked_output=self.checked_output,
    )
