"""The question-answering task: reading, windows, the span head, answers."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow as tf
from absl import logging

from tf_finetune import io_utils
from tf_finetune.data import pipeline, readers
from tf_finetune.tasks import encoder as encoder_lib
from tf_finetune.tasks.question_answering.metrics import (
    PositionAccuracy,
    best_threshold_scores,
    span_loss,
    squad_scores,
)
from tf_finetune.tasks.question_answering.postprocess import (
    IMPOSSIBLE_SCORE,
    answers_from_spans,
    best_spans,
)
from tf_finetune.tasks.question_answering.reading import (
    ANSWERS_KEY,
    ID_KEY,
    check_answers,
    examples_from_rows,
    is_squad_json,
    read_squad_json,
    record_answers,
)
from tf_finetune.tasks.question_answering.server import QuestionAnsweringServer
from tf_finetune.tasks.question_answering.windows import (
    QuestionAnsweringFeatures,
    make_windows,
    question_budget,
    tokenize_context,
    window_targets,
)

# The head's two outputs per token.
LABEL_VOCAB = ("start", "end")


# Examples tokenized and windowed per call.
_CHUNK = 1024


class QuestionAnswering(encoder_lib.EncoderTask):
  """The span of a context that answers a question."""

  name = "question_answering"
  per_token = True
  splits_words = True
  checked_output = "score"
  input_names = ("question", "context")

  # Reading.
  def resolve_data(self, data):
    # The question and context are the text pair every shared path sees
    # (tokenizer check, export, prediction).
    return dataclasses.replace(
        data,
        text_column=self.config.question_column,
        text_pair_column=self.config.context_column,
    )

  def read(self, data, split, *, path=None, with_labels=True):
    path = path or getattr(data, f"{split}_file")
    flag = f"--{split}_file"
    if path:
      return self.read_file(path, flag, with_labels=with_labels)
    tfds_split = getattr(data, f"tfds_{split}_split")
    if not (data.tfds_name and tfds_split):
      return None
    return self._read_tfds(data, tfds_split, with_labels=with_labels)

  def read_file(
      self, path: str, flag: str, *, with_labels: bool
  ) -> readers.Examples:
    """SQuAD JSON, or JSONL/CSV/TSV records (see the module docstring)."""
    if is_squad_json(path):
      rows = read_squad_json(path, flag, with_labels=with_labels)
      return examples_from_rows(
          path, rows, list(range(1, len(rows) + 1)), with_labels=with_labels
      )
    records, lines, columns = readers.read_records(path, flag)
    fmt = readers.file_format(path, flag)
    if with_labels and fmt != "jsonl":
      raise ValueError(
          f"{flag}={path!r}: CSV/TSV files cannot hold SQuAD "
          "answers; use a SQuAD JSON file or JSONL lines with "
          'an "answers" field.'
      )
    rows = []
    for record, line in zip(records, lines):
      qid = record.get(ID_KEY, line)
      source = f"{path}:{line}"
      row = {ID_KEY: str(qid)}
      for key, column, name in (
          ("question", self.config.question_column, "--question_column"),
          ("context", self.config.context_column, "--context_column"),
      ):
        value = record.get(column)
        if not isinstance(value, str):
          raise ValueError(
              f"{source}: {name}={column!r} must be a string "
              f"field, got {value!r}; fields are: "
              f"{', '.join(columns)}."
          )
        row[key] = value
      if with_labels:
        is_impossible = bool(record.get("is_impossible", False))
        row[ANSWERS_KEY] = check_answers(
            source,
            qid,
            row["context"],
            record_answers(record.get(ANSWERS_KEY, [])),
            is_impossible,
        )
        row["is_impossible"] = is_impossible or not row[ANSWERS_KEY]
      rows.append(dict(record, **row))
    return examples_from_rows(path, rows, lines, with_labels=with_labels)

  def _read_tfds(self, data, split, *, with_labels):
    import tensorflow_datasets as tfds

    dataset, info = tfds.load(
        data.tfds_name,
        split=split,
        data_dir=data.tfds_data_dir,
        with_info=True,
        shuffle_files=False,
    )
    for feature in ("id", "question", "context", "answers"):
      if feature not in info.features:
        raise ValueError(
            f"--tfds_name={data.tfds_name} has no {feature!r} "
            "feature; question answering reads SQuAD-style "
            "data sets (squad/v1.1, squad/v2.0)."
        )
    source = f"{data.tfds_name}[{split}]"
    rows = []
    for record in tfds.as_numpy(dataset):
      qid = record["id"].decode("utf-8")
      context = record["context"].decode("utf-8")
      row = {
          ID_KEY: qid,
          "question": record["question"].decode("utf-8"),
          "context": context,
      }
      if with_labels:
        is_impossible = bool(record.get("is_impossible", False))
        answers = [
            {"text": text.decode("utf-8"), "answer_start": int(start)}
            for text, start in zip(
                record["answers"]["text"], record["answers"]["answer_start"]
            )
        ]
        row[ANSWERS_KEY] = check_answers(
            source, qid, context, answers, is_impossible
        )
        row["is_impossible"] = is_impossible
      rows.append(row)
    return examples_from_rows(
        source, rows, list(range(1, len(rows) + 1)), with_labels=with_labels
    )

  def read_prediction_input(self, path, *, text_column, text_pair_column):
    del text_column, text_pair_column  # Questions and contexts.
    return self.read_file(path, "--input_file", with_labels=False)

  # Labels.
  def label_vocab_of(self, examples):
    unanswerable = sum(not answers for answers in examples.labels)
    if unanswerable and not self.config.allow_no_answer:
      raise ValueError(
          f"{examples.source}: {unanswerable} of {len(examples)} questions "
          "are unanswerable (SQuAD v2.0); set --allow_no_answer so the model "
          "learns to answer nothing."
      )
    return list(LABEL_VOCAB)

  def encode(self, examples, encoder):
    chunks = [
        self._encode_chunk(examples, encoder, start)
        for start in range(0, len(examples), _CHUNK)
    ]
    offset = np.cumsum([0] + [len(c["contexts"]) for c in chunks[:-1]])
    input_ids = tf.concat([c["input_ids"] for c in chunks], axis=0)
    type_ids = tf.concat([c["token_type_ids"] for c in chunks], axis=0)
    label_ids = None
    if examples.labels is not None:
      label_ids = np.concatenate([c["labels"] for c in chunks]).astype(np.int32)
    truncated = sum(c["truncated"] for c in chunks)
    if truncated:
      logging.info(
          "%s: %d of %d questions were longer than %d tokens and " "were cut.",
          examples.source,
          truncated,
          len(examples),
          question_budget(
              encoder.max_seq_length, self.config.max_question_length
          ),
      )
    return QuestionAnsweringFeatures(
        input_ids,
        type_ids,
        input_ids.row_lengths().numpy(),
        label_ids,
        int(truncated),
        pad_id=encoder.pad_id,
        window_example=np.concatenate(
            [c["example"] + o for c, o in zip(chunks, offset)]
        ),
        window_start=np.concatenate([c["start"] for c in chunks]),
        window_length=np.concatenate([c["length"] for c in chunks]),
        window_offset=np.concatenate([c["offset"] for c in chunks]),
        token_starts=[s for c in chunks for s in c["token_starts"]],
        token_ends=[e for c in chunks for e in c["token_ends"]],
        contexts=[x for c in chunks for x in c["contexts"]],
    )

  def _encode_chunk(self, examples, encoder, start):
    stop = start + _CHUNK
    contexts = examples.text_pairs[start:stop]
    questions = encoder.tokenize(tf.constant(examples.texts[start:stop]))
    tokens, token_starts, token_ends = tokenize_context(
        encoder, tf.constant(contexts)
    )
    windows = make_windows(
        questions,
        tokens,
        max_seq_length=encoder.max_seq_length,
        doc_stride=self.config.doc_stride,
        max_question_length=self.config.max_question_length,
        cls_id=encoder.cls_id,
        sep_id=encoder.sep_id,
    )
    chunk = {
        name: windows[name].numpy()
        for name in ("example", "start", "length", "offset")
    }
    chunk.update(
        input_ids=windows["input_ids"],
        contexts=contexts,
        token_type_ids=windows["token_type_ids"],
        token_starts=[np.array(s, np.int32) for s in token_starts.to_list()],
        token_ends=[np.array(e, np.int32) for e in token_ends.to_list()],
        truncated=int(
            np.sum(
                questions.row_lengths().numpy()
                > question_budget(
                    encoder.max_seq_length, self.config.max_question_length
                )
            )
        ),
    )
    if examples.labels is not None:
      chunk["labels"] = window_targets(
          examples.labels[start:stop],
          chunk["token_starts"],
          chunk["token_ends"],
          chunk["example"],
          chunk["start"],
          chunk["length"],
          chunk["offset"],
      )
    return chunk

  # The model.
  def loss_fn(self, train):
    return span_loss

  def keras_metrics(self):
    return [PositionAccuracy()]

  # Evaluation.
  def predict(self, model, encoded, *, batch_size):
    """Per example: the best span's answer, offsets, score, null score."""
    dataset, order = pipeline.inference_dataset(
        encoded, batch_size=batch_size, with_labels=False
    )
    seq_len = int(np.max(encoded.lengths)) if len(encoded) else 1
    logits = np.full((len(encoded), seq_len, 2), IMPOSSIBLE_SCORE, np.float32)
    row = 0
    for features in dataset:
      batch = tf.cast(model(features, training=False), tf.float32).numpy()
      logits[order[row : row + len(batch)], : batch.shape[1]] = batch
      row += len(batch)
    spans = best_spans(
        logits[:, :, 0],
        logits[:, :, 1],
        window_example=encoded.window_example,
        window_start=encoded.window_start,
        window_length=encoded.window_length,
        window_offset=encoded.window_offset,
        num_examples=encoded.num_examples,
        n_best_size=self.config.n_best_size,
        max_answer_length=self.config.max_answer_length,
    )
    lengths = [len(starts) for starts in encoded.token_starts]

    def ragged(rows):
      return tf.RaggedTensor.from_row_lengths(
          np.concatenate(rows + [np.zeros(0, np.int32)]).astype(np.int32),
          np.array(lengths, np.int64),
      )

    answers = answers_from_spans(
        spans,
        tf.constant(encoded.contexts, tf.string),
        ragged(encoded.token_starts),
        ragged(encoded.token_ends),
        allow_no_answer=False,
        null_score_threshold=0.0,
    )
    return {
        "answer": [a.decode("utf-8") for a in answers["answer"].numpy()],
        "start": answers["start"].numpy(),
        "end": answers["end"].numpy(),
        "score": spans["score"].numpy(),
        "null_score": spans["null_score"].numpy(),
    }

  @property
  def threshold(self) -> float:
    """The no-answer threshold: given, tuned on validation, or 0."""
    if self.config.null_score_threshold is not None:
      return self.config.null_score_threshold
    return float(self.state.chosen.get("null_score_threshold", 0.0))

  def final_answers(self, outputs: dict) -> list[str]:
    """The answers after the no-answer decision."""
    if not self.config.allow_no_answer:
      return list(outputs["answer"])
    threshold = self.threshold
    return [
        answer if null - score <= threshold else ""
        for answer, score, null in zip(
            outputs["answer"], outputs["score"], outputs["null_score"]
        )
    ]

  def choose(self, examples, encoded, outputs):
    if not self.config.allow_no_answer:
      return {}
    if self.config.null_score_threshold is not None:
      return {"null_score_threshold": self.config.null_score_threshold}
    best = best_threshold_scores(
        outputs["answer"], examples.labels, _null_minus_span(outputs)
    )
    logging.info(
        "No-answer threshold %.4f: F1 %.2f on %s, which chose it.",
        best["best_f1_thresh"],
        best["best_f1"],
        examples.source,
    )
    return {
        "null_score_threshold": best["best_f1_thresh"],
        "tuned_on": examples.source,
    }

  def selection(self):
    if not self.config.allow_no_answer:
      return {}
    if self.config.null_score_threshold is not None:
      chosen_by = "--null_score_threshold"
    elif "null_score_threshold" in self.state.chosen:
      chosen_by = "validation"
    else:
      chosen_by = "default (no validation data)"
    return {"no_answer_threshold": chosen_by}

  def metrics(self, examples, encoded, outputs):
    if not self.config.allow_no_answer:
      scores = squad_scores(self.final_answers(outputs), examples.labels)
    else:
      # As the SQuAD v2.0 script: `exact` and `f1` at the threshold used;
      # `best_*` at the threshold best for these questions themselves.
      scores = squad_scores(
          self.final_answers(outputs), examples.labels, exact_key="exact"
      )
      scores.update(
          best_threshold_scores(
              outputs["answer"], examples.labels, _null_minus_span(outputs)
          )
      )
      scores["null_score_threshold"] = self.threshold
    scores.update(
        num_examples=len(examples),
        num_windows=len(encoded),
        num_truncated_questions=encoded.num_truncated,
    )
    return scores

  def describe(self, metrics):
    exact = metrics.get("exact", metrics.get("exact_match"))
    line = f"exact match: {exact:.2f}  F1: {metrics['f1']:.2f}"
    if "NoAns_f1" in metrics and "HasAns_f1" in metrics:
      line += (
          f"  (HasAns F1 {metrics['HasAns_f1']:.2f}, NoAns F1 "
          f"{metrics['NoAns_f1']:.2f})"
      )
    if "best_f1" in metrics:
      line += (
          f"  at no-answer threshold {metrics['null_score_threshold']:.4f}"
          f"; best F1 {metrics['best_f1']:.2f} at "
          f"{metrics['best_f1_thresh']:.4f}"
      )
    return line + f"  ({metrics['num_examples']} questions)"

  # Serving and prediction files.
  def server(self, trained):
    return QuestionAnsweringServer(
        trained.model,
        trained.encoder,
        self.config,
        null_score_threshold=self.threshold,
        task_name=self.name,
        label_vocab=self.state.label_vocab,
        input_names=self.input_names,
    )

  def prediction_rows(self, outputs):
    return [
        {
            "answer": answer.decode("utf-8"),
            "score": float(score),
            "null_score": float(null),
            "start": int(start),
            "end": int(end),
        }
        for answer, score, null, start, end in zip(
            outputs["answer"],
            outputs["score"],
            outputs["null_score"],
            outputs["start"],
            outputs["end"],
        )
    ]

  def write_prediction_file(self, path, examples, rows):
    """A .json output is the official predictions file {id: answer}; other
    formats repeat each input row with answer, score and offsets."""
    if not path.lower().endswith(".json"):
      return super().write_prediction_file(path, examples, rows)
    answers = {
        row[ID_KEY]: prediction["answer"]
        for row, prediction in zip(examples.rows, rows)
    }
    io_utils.write_text_atomically(
        path, json.dumps(answers, ensure_ascii=False, indent=2) + "\n"
    )
    logging.info("Wrote %d answers to %s.", len(answers), path)


def _null_minus_span(outputs: dict) -> np.ndarray:
  """float [questions]: no-answer score - best span score."""
  return np.asarray(outputs["null_score"]) - np.asarray(outputs["score"])
