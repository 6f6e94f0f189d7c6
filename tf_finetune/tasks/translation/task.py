"""The translation task: reading, vocabulary, model, decoding, export."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import transformers
from absl import logging

from tf_finetune import artifacts, optimization, serving
from tf_finetune import config as config_lib
from tf_finetune import io_utils
from tf_finetune.data import pipeline
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.tasks import base
from tf_finetune.tasks.translation.decoding import (
    Decoding,
    generate_ids,
    translation_metrics,
)
from tf_finetune.tasks.translation.model import (
    LABEL_PADDING,
    Seq2SeqModel,
    build_seq2seq,
    freeze_warm_started,
    model_config_from,
    seq2seq_class,
    warm_start_lr_multipliers,
    warm_started_seq2seq,
)
from tf_finetune.tasks.translation.reading import (
    TFDS_FEATURE_HINT,
    is_plain_text,
    read_line_aligned,
    read_parallel_records,
    read_tfds_translation,
    with_prefix,
)
from tf_finetune.tasks.translation.server import (
    PythonTranslator,
    TRANSLATION_OUTPUT,
    TranslationServer,
)
from tf_finetune.tasks.translation.vocab import (
    HuggingFaceVocab,
    SentencePieceVocab,
    WarmStartVocab,
    graph_vocab_of,
    load_vocab,
    strip_generated_rows,
)


class Translation(base.Task):
  """A target-language text per source text, by an encoder-decoder."""

  name = "translation"
  checked_output = TRANSLATION_OUTPUT
  input_names = ("text",)

  # Reading.
  def read(self, data, split, *, path=None, with_labels=True):
    task = self.config
    target_path = None
    if path is None:
      path = getattr(data, f"{split}_file")
      target_path = self.config.target_file(split)
    flag = f"--{split}_file"
    if path:
      if target_path or (is_plain_text(path) and not with_labels):
        return read_line_aligned(
            path,
            target_path if with_labels else None,
            flag=flag,
            source_column=task.source_column,
            target_column=task.target_column,
        )
      if is_plain_text(path):
        raise ValueError(
            f"{flag}={path!r} is a plain text file; give its line-aligned "
            f"translations with --{split}_target_file, or use a .tsv, .csv "
            f"or .jsonl file with --source_column={task.source_column!r} "
            f"and --target_column={task.target_column!r}."
        )
      return read_parallel_records(
          path,
          flag=flag,
          source_column=task.source_column,
          target_column=task.target_column if with_labels else None,
      )
    tfds_split = getattr(data, f"tfds_{split}_split")
    if data.tfds_name and tfds_split:
      if not (task.source_language and task.target_language):
        raise ValueError(
            f"--tfds_name={data.tfds_name!r} needs "
            "--source_language and --target_language ("
            f"{TFDS_FEATURE_HINT})."
        )
      return read_tfds_translation(
          data.tfds_name,
          tfds_split,
          data_dir=data.tfds_data_dir,
          source_language=task.source_language,
          target_language=task.target_language,
          with_targets=with_labels,
      )
    return None

  def encode(self, examples, encoder):
    task = self.config
    sources = [with_prefix(task.source_prefix, text) for text in examples.texts]
    source_ids = encoder.encode(sources, task.max_source_length)
    lengths = np.array([len(ids) for ids in source_ids], np.int64)
    truncated = sum(
        1 for ids in source_ids if len(ids) >= task.max_source_length
    )
    input_ids = tf.ragged.constant(source_ids, dtype=tf.int32, ragged_rank=1)
    label_ids = None
    if examples.labels is not None:
      target_ids = encoder.encode(
          examples.labels, task.max_target_length, target=True
      )
      label_ids = tf.ragged.constant(target_ids, dtype=tf.int32, ragged_rank=1)
      long_targets = sum(
          1 for ids in target_ids if len(ids) >= task.max_target_length
      )
      if long_targets:
        logging.info(
            "%s: %d of %d targets reached --max_target_length=%d "
            "tokens (longer ones were cut).",
            examples.source,
            long_targets,
            len(examples),
            task.max_target_length,
        )
    if truncated:
      logging.info(
          "%s: %d of %d sources reached --max_source_length=%d "
          "tokens (longer ones were cut).",
          examples.source,
          truncated,
          len(examples),
          task.max_source_length,
      )
    # The pipeline batches (and buckets) by source length; targets pad with
    # LABEL_PADDING, which the loss masks out.
    return pipeline.EncodedExamples(
        input_ids=input_ids,
        token_type_ids=tf.zeros_like(input_ids),
        lengths=lengths,
        label_ids=label_ids,
        num_truncated=truncated,
        label_padding=LABEL_PADDING,
        pad_id=encoder.pad_id,
    )

  # The model.
  def prepare(self, config):
    """Reads and encodes the splits; loads or trains the vocabulary."""
    examples = self.read_splits(config.data)
    self.bind(base.TaskState())
    train_examples = examples["train"]
    model = config.model
    if self.config.model_config:
      logging.info(
          "Training a SentencePiece vocabulary of at most %d pieces "
          "on %d sources and targets.",
          self.config.vocab_size,
          len(train_examples),
      )
      vocab = SentencePieceVocab.train(
          [
              with_prefix(self.config.source_prefix, text)
              for text in train_examples.texts
          ]
          + train_examples.labels,
          self.config.vocab_size,
          seed=config.train.seed,
      )
      logging.info("Vocabulary: %d pieces.", vocab.size)
    else:
      backbone_lib.check_model_source(model.model, model.allow_pickle_weights)
      tokenizer = backbone_lib.load_tokenizer(model.model)
      vocab = (
          WarmStartVocab(tokenizer)
          if self.config.warm_start != "none"
          else HuggingFaceVocab(tokenizer)
      )
    encoded = {
        split: self.encode(found, vocab) for split, found in examples.items()
    }
    return base.PreparedData(
        config, examples, encoded, tokenizer=vocab, encoder=vocab, task=self
    )

  def build_model(
      self,
      config,
      prepared,
      *,
      total_steps,
      steps_per_epoch,
      learning_rate=None,
  ):
    """The compiled model: pretrained, or from --model_config."""
    model_config, train_config = config.model, config.train
    vocab = prepared.encoder
    if self.config.model_config:
      seq2seq = build_seq2seq(
          model_config_from(
              self.config.model_config,
              vocab.size,
              pad_id=vocab.pad_id,
              eos_id=vocab.eos_id,
          )
      )
    elif self.config.warm_start != "none":
      seq2seq = warm_started_seq2seq(
          model_config.model,
          vocab.tokenizer,
          share=self.config.share_encoder_decoder,
          from_pt=backbone_lib.check_model_source(
              model_config.model, model_config.allow_pickle_weights
          ),
      )
    else:
      # PyTorch .bin weights only with --allow_pickle_weights, as encoders.
      from_pt = backbone_lib.check_model_source(
          model_config.model, model_config.allow_pickle_weights
      )
      try:
        seq2seq = seq2seq_class().from_pretrained(
            model_config.model, from_pt=from_pt, trust_remote_code=False
        )
      except ImportError as e:
        if from_pt:
          raise backbone_lib.pytorch_needed(model_config.model) from e
        raise
      except (OSError, ValueError) as e:
        raise ValueError(
            f"--model={model_config.model!r} is not a TF "
            "encoder-decoder this toolkit can load: "
            f"{str(e).splitlines()[0]}"
        ) from e
    # An EncoderDecoderConfig keeps the vocabulary in its decoder's.
    vocab_size = getattr(seq2seq.config, "decoder", seq2seq.config).vocab_size
    if vocab.size > vocab_size:
      raise ValueError(
          f"--model={model_config.model!r}: the tokenizer has {vocab.size} "
          f"tokens but the model's embedding table only {vocab_size}; they "
          "do not belong together."
      )
    model = Seq2SeqModel(
        seq2seq, vocab=vocab, label_smoothing=train_config.label_smoothing
    )
    model(model.dummy_inputs())
    logging.info(
        "Encoder-decoder %s: %d parameters.",
        type(seq2seq).__name__,
        seq2seq.count_params(),
    )
    lr_multipliers = None
    if self.config.warm_start != "none":
      lr_multipliers = warm_start_lr_multipliers(
          seq2seq, train_config.layerwise_lr_decay or 1.0
      )
    optimizer = optimization.create_optimizer(
        train_config,
        total_steps,
        steps_per_epoch=steps_per_epoch,
        learning_rate=learning_rate,
        lr_multipliers=lr_multipliers,
        model=model,
    )
    if self.config.warm_start != "none" and (
        train_config.freeze_layers or train_config.freeze_embeddings
    ):
      # Slots for every variable first, as the encoder tasks do: a run
      # resumed with other frozen layers finds the same optimizer state.
      optimizer.build(model.trainable_variables)
      freeze_warm_started(
          seq2seq,
          frozen_layers=train_config.freeze_layers or 0,
          freeze_embeddings=bool(train_config.freeze_embeddings),
      )
    model.compile(
        optimizer=optimizer,
        steps_per_execution=train_config.steps_per_execution,
        jit_compile=train_config.jit_compile,
    )
    return model

  def save_run_files(self, model_dir, config, prepared, model):
    """config.json, the vocabulary (tokenizer/) and the architecture."""
    config_lib.write_config(config, model_dir)
    artifacts.save_directories(
        model_dir,
        {
            artifacts.TOKENIZER_DIR: prepared.encoder.save,
            artifacts.BACKBONE_DIR: model.seq2seq.config.save_pretrained,
        },
    )

  def load_trained(self, model_dir, config):
    """Rebuilds the trained model from `model_dir` (no download)."""
    weights_dir = artifacts.final_weights_dir(model_dir)
    self.bind(base.TaskState())
    vocab = load_vocab(
        os.path.join(model_dir, artifacts.TOKENIZER_DIR),
        warm_start=self.config.warm_start,
    )
    model_config = transformers.AutoConfig.from_pretrained(
        os.path.join(model_dir, artifacts.BACKBONE_DIR)
    )
    model = Seq2SeqModel(build_seq2seq(model_config), vocab=vocab)
    model(model.dummy_inputs())
    artifacts.restore_weights(model, weights_dir)
    return base.TrainedModel(config, self, vocab, vocab, model)

  # Evaluation.
  def predict(self, model, encoded, *, batch_size):
    """Translations (strings) of every example, in input order."""
    source_ids = encoded.input_ids.to_list()
    generated = generate_ids(
        model.seq2seq,
        source_ids,
        batch_size=batch_size,
        num_beams=self.config.num_beams,
        max_new_tokens=self.config.max_target_length,
        pad_id=encoded.pad_id,
        jit_compile=self.config.jit_generate,
        no_repeat_ngram_size=self.config.no_repeat_ngram_size,
        length_penalty=self.config.length_penalty,
    )
    vocab = model.vocab
    return vocab.decode(strip_generated_rows(generated, vocab))

  def metrics(self, examples, encoded, outputs):
    return dict(
        translation_metrics(outputs, examples.labels),
        num_beams=self.config.num_beams,
        length_penalty=self.config.length_penalty,
        no_repeat_ngram_size=self.config.no_repeat_ngram_size,
    )

  def describe(self, metrics):
    return (
        f"BLEU: {metrics['bleu']:.2f} (ignoring case: "
        f"{metrics['bleu_lowercase']:.2f})  chrF: {metrics['chrf']:.2f}  "
        f"({metrics['num_examples']} examples)"
    )

  # Serving and prediction files.
  def server(self, trained):
    """Tokenizes and searches (--num_beams, --length_penalty,
    --no_repeat_ngram_size) in the graph.

    Raises:
      ValueError: when the vocabulary cannot tokenize in the graph.
    """
    vocab = trained.encoder
    if not vocab.in_graph:
      vocab = graph_vocab_of(vocab, trained.config)
    return TranslationServer(
        trained.model.seq2seq,
        vocab,
        source_prefix=self.config.source_prefix,
        max_source_length=self.config.max_source_length,
        max_target_length=self.config.max_target_length,
        decoding=Decoding.of(self.config),
    )

  def python_serving(self, trained):
    """Translates in Python: any vocabulary."""
    return PythonTranslator(trained.model, self.config).serve

  def export(self, trained, *, export_base, sample_texts=(), sample_pairs=None):
    """Exports raw strings -> translations; returns the version directory."""
    del sample_pairs  # A translator reads one text.
    texts = ["Hello.", "", "A longer sentence, with punctuation: ok?"] + list(
        sample_texts
    )
    return serving.export_server(
        self.server(trained),
        export_base=export_base,
        sample_inputs={"text": texts},
        checked_output=TRANSLATION_OUTPUT,
        exact=True,
    )

  def prediction_rows(self, outputs):
    return [
        {
            TRANSLATION_OUTPUT: text.decode("utf-8")
            if isinstance(text, bytes)
            else text
        }
        for text in outputs[TRANSLATION_OUTPUT]
    ]

  def read_prediction_input(self, path, *, text_column, text_pair_column):
    """A plain text file (any extension but .csv, .tsv, .jsonl) holds one
    source per line; a CSV/TSV/JSONL file has a source column."""
    del text_pair_column  # Translation reads one text.
    if is_plain_text(path):
      return read_line_aligned(path, None, flag="--input_file")
    return read_parallel_records(
        path,
        flag="--input_file",
        source_column=text_column or self.config.source_column,
        target_column=None,
    )

  def write_prediction_file(self, path, examples, rows):
    """One translation per line for a plain text file; otherwise each input
    row with its `translation` column."""
    if not is_plain_text(path):
      return super().write_prediction_file(path, examples, rows)
    io_utils.write_text_atomically(
        path,
        "".join(
            row[TRANSLATION_OUTPUT].replace("\n", " ") + "\n" for row in rows
        ),
    )
