"""Token classification: a tag per word (named entities, parts of speech).

Reads CoNLL-2003 style files (one word per line, its tag in the last column
or `--tag_column_index`, a blank line between sentences, `-DOCSTART-` lines
skipped), JSONL files with a list of words (`--tokens_column`) and a list of
tags (`--tags_column`) per line, or the TFDS `conll2003` data set.

Each word is split into WordPiece sub-words; its tag is the target of its
first sub-word and the other sub-words are ignored by the loss (label
`IGNORE_LABEL`), as in the BERT paper's NER setup. The head reads every
token's hidden state; predictions are the tags of first sub-words, mapped
back to words. Entity-level precision, recall and F1 come from `seqeval`
(conlleval rules for IOB1/IOB2, strict IOBES rules for IOBES).

The export takes raw text: it splits words the way BERT's basic tokenizer
does (whitespace; each punctuation mark and CJK character is a word of its
own) and returns per word its text, tag, tag probability and character
offsets [start, end) into the input.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf
import tf_keras

from tf_finetune import serving
from tf_finetune.data import labels as labels_lib
from tf_finetune.data import pipeline, readers
from tf_finetune.tasks import encoder as encoder_lib
from tf_finetune.text import words as words_lib

IGNORE_LABEL = -100
DOCSTART = "-DOCSTART-"
# The tag of a word the model has no position for (a word with no sub-words,
# such as a lone control character).
OUTSIDE = "O"
SCHEME_PREFIXES = {"IOB1": "BI", "IOB2": "BI", "IOBES": "BIES"}
TOKENS_KEY = "tokens"
TAGS_KEY = "tags"


def check_tags(
    tags: Sequence[str], scheme: str, source: str, line: int
) -> None:
  """Raises unless every tag is O or <prefix>-<type> with the scheme's
  prefixes."""
  prefixes = SCHEME_PREFIXES[scheme]
  for tag in tags:
    if tag == OUTSIDE:
      continue
    prefix, dash, kind = tag.partition("-")
    if not dash or not kind or len(prefix) != 1 or prefix not in prefixes:
      allowed = ", ".join(f"{p}-<type>" for p in prefixes)
      raise ValueError(
          f"{source}:{line}: tag {tag!r} is not an {scheme} tag (O, "
          f"{allowed}); set --tagging_scheme to the file's scheme."
      )


def read_conll(
    path: str,
    *,
    tag_column: int = -1,
    flag: str = "--train_file",
    scheme: Optional[str] = None,
) -> tuple[list[list[str]], list[list[str]], list[int]]:
  r"""Reads a CoNLL file: (words per sentence, tags per sentence, first line).

  One word per line. A line ends at "\r\n", "\r" or "\n" (no word holds a
  "\r", and files from classic Mac OS end lines with it), and nowhere else:
  U+0085, U+2028 or \f inside a word stays in it, where `str.splitlines()`
  would cut the word in two. Columns are separated by spaces and tabs only,
  for the same reason; the word is the first column and the tag the
  `tag_column`-th (-1: the last). A blank line (or one of whitespace only)
  ends a sentence. With `scheme`, a tag outside it is an error naming its
  line.
  """
  lines = readers.text_lines(
      readers.read_text(path, flag), universal_newlines=True
  )
  sentences, tag_lists, starts = [], [], []
  words, tags, start = [], [], 0
  for number, line in enumerate(lines + [""], start=1):
    fields = [] if not line.strip() else line.replace("\t", " ").split(" ")
    fields = [field for field in fields if field]
    if not fields or fields[0] == DOCSTART:
      if words:
        sentences.append(words)
        tag_lists.append(tags)
        starts.append(start)
      words, tags = [], []
      continue
    if len(fields) < 2:
      raise ValueError(
          f"{path}:{number}: expected a word and its tag separated by "
          f"spaces or tabs, got {line!r}; each sentence line needs a tag."
      )
    try:
      tag = fields[tag_column]
    except IndexError:
      raise ValueError(
          f"{path}:{number}: --tag_column_index={tag_column} "
          f"but the line has {len(fields)} columns."
      ) from None
    if scheme:
      check_tags([tag], scheme, path, number)
    if not words:
      start = number
    words.append(fields[0])
    tags.append(tag)
  if not sentences:
    raise ValueError(f"{flag}={path!r} holds no sentences.")
  return sentences, tag_lists, starts


def align_labels(
    word_pieces: Sequence[Sequence[int]],
    tag_ids: Optional[Sequence[int]],
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
) -> tuple[list[int], list[int], list[int]]:
  """Packs one sentence's sub-words and puts each tag on its first sub-word.

  Args:
    word_pieces: WordPiece ids of each word.
    tag_ids: The tag id of each word, or None without labels.
    max_seq_length: Tokens including [CLS] and [SEP]; later words are cut.
    cls_id, sep_id: Special token ids.

  Returns:
    (input_ids, label_ids, word_positions): label_ids has IGNORE_LABEL on
    [CLS], [SEP] and every sub-word but a word's first; word_positions is the
    position of each word's first sub-word, or -1 for a word without
    sub-words or cut by truncation.
  """
  input_ids, label_ids, positions = [cls_id], [IGNORE_LABEL], []
  budget = max_seq_length - 1  # Room left for [SEP].
  for index, pieces in enumerate(word_pieces):
    pieces = list(pieces)[: budget - len(input_ids)]
    if not pieces:
      positions.append(-1)
      continue
    positions.append(len(input_ids))
    input_ids.extend(pieces)
    label_ids.append(IGNORE_LABEL if tag_ids is None else tag_ids[index])
    label_ids.extend([IGNORE_LABEL] * (len(pieces) - 1))
  input_ids.append(sep_id)
  label_ids.append(IGNORE_LABEL)
  return input_ids, label_ids, positions


def masked_cross_entropy(labels, logits):
  """Per-example mean cross-entropy over the tokens that carry a tag."""
  labels = tf.cast(labels, tf.int32)
  logits = tf.cast(logits, tf.float32)
  mask = tf.cast(labels != IGNORE_LABEL, tf.float32)
  losses = (
      tf.nn.sparse_softmax_cross_entropy_with_logits(
          tf.maximum(labels, 0), logits
      )
      * mask
  )
  return tf.math.divide_no_nan(
      tf.reduce_sum(losses, axis=-1), tf.reduce_sum(mask, axis=-1)
  )


class TokenAccuracy(tf_keras.metrics.Metric):
  """Accuracy over the tokens that carry a tag (first sub-words)."""

  def __init__(self, name="accuracy", **kwargs):
    super().__init__(name=name, dtype="float32", **kwargs)
    self.correct = self.add_weight("correct", initializer="zeros")
    self.total = self.add_weight("total", initializer="zeros")

  def update_state(self, y_true, y_pred, sample_weight=None):
    labels = tf.cast(y_true, tf.int32)
    mask = labels != IGNORE_LABEL
    predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
    self.correct.assign_add(
        tf.reduce_sum(tf.cast(mask & (predicted == labels), tf.float32))
    )
    self.total.assign_add(tf.reduce_sum(tf.cast(mask, tf.float32)))

  def reset_state(self):
    self.correct.assign(0.0)
    self.total.assign(0.0)

  def result(self):
    return tf.math.divide_no_nan(self.correct, self.total)


def entity_metrics(
    gold: list[list[str]], predicted: list[list[str]], scheme: str
) -> dict:
  """Entity-level micro precision/recall/F1 and per-type scores (seqeval)."""
  from seqeval import metrics, scheme as schemes

  options = {"zero_division": 0}
  if scheme == "IOBES":
    options.update(mode="strict", scheme=schemes.IOBES)
  report = metrics.classification_report(
      gold, predicted, output_dict=True, **options
  )
  per_type = {
      name: {
          "precision": float(values["precision"]),
          "recall": float(values["recall"]),
          "f1": float(values["f1-score"]),
          "support": int(values["support"]),
      }
      for name, values in report.items()
      if "avg" not in name
  }
  return {
      "precision": float(metrics.precision_score(gold, predicted, **options)),
      "recall": float(metrics.recall_score(gold, predicted, **options)),
      "f1": float(metrics.f1_score(gold, predicted, **options)),
      "per_type": per_type,
  }


class TokenClassificationServer(serving.EncoderServer):
  """Raw text in, a tag per word with character offsets out.

  serving_default: text (string [batch]) ->
    words (string [batch, max_words], "" padded), tags (string, "" padded;
    "" also for words past --max_seq_length), confidence (float32, the tag's
    probability), start and end (int32 character offsets of each word, -1
    padded), num_words (int32 [batch]).
  serve_token_ids: input_ids, attention_mask, token_type_ids ->
    probabilities (float32 [batch, seq_len, num_tags]), tag (string
    [batch, seq_len], per sub-word).
  """

  def _probabilities(self, input_ids, attention_mask, token_type_ids):
    return tf.nn.softmax(self.logits(input_ids, attention_mask, token_type_ids))

  def serve_ids(self, input_ids, attention_mask, token_type_ids):
    probabilities = self._probabilities(
        input_ids, attention_mask, token_type_ids
    )
    tag_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return {
        "probabilities": probabilities,
        "tag": tf.gather(self.label_vocab, tag_ids),
    }

  def serve(self, text, text_pair=None):
    del text_pair  # Tags are for single texts.
    # The tokenizer's own words (Unicode whitespace, punctuation, CJK), so
    # that each word's sub-words are those the tokenizer gives it in running
    # text, as in training.
    words, starts, ends = words_lib.split_words(
        text, strip_accents=self.encoder.lower_case
    )
    # Sub-words of each word: [batch, (words), (pieces)].
    pieces = tf.RaggedTensor.from_row_splits(
        self.encoder.tokenize(words.flat_values), words.row_splits
    )
    input_ids, type_ids = self.encoder.pack(pieces.merge_dims(1, 2))
    features = {
        "input_ids": input_ids.to_tensor(self.encoder.pad_id),
        "attention_mask": tf.ones_like(input_ids).to_tensor(0),
        "token_type_ids": type_ids.to_tensor(0),
    }
    probabilities = self._probabilities(**features)
    # Position of each word's first sub-word: 1 ([CLS]) + the sub-words of
    # the words before it.
    counts = tf.cast(pieces.row_lengths(axis=2), tf.int32)
    first = 1 + tf.math.cumsum(counts, axis=1, exclusive=True)
    packed_length = tf.cast(input_ids.row_lengths(), tf.int32)
    seen = first < tf.expand_dims(packed_length - 1, 1)  # Before [SEP].
    has_pieces = counts > 0
    max_position = tf.shape(probabilities)[1] - 1
    word_probabilities = tf.gather(
        probabilities,
        tf.minimum(first, max_position).to_tensor(0),
        batch_dims=1,
    )  # [batch, max_words, num_tags]
    word_tag_ids = tf.argmax(word_probabilities, axis=-1, output_type=tf.int32)
    tags = tf.gather(self.label_vocab, word_tag_ids)
    confidence = tf.reduce_max(word_probabilities, axis=-1)
    seen = seen.to_tensor(False)
    has_pieces = has_pieces.to_tensor(False)
    tags = tf.where(
        seen & has_pieces,
        tags,
        tf.where(has_pieces, tf.constant(""), tf.constant(OUTSIDE)),
    )
    in_text = tf.sequence_mask(words.row_lengths(), tf.shape(tags)[1])
    tags = tf.where(in_text, tags, "")
    confidence = tf.where(seen & has_pieces, confidence, 0.0)
    return {
        "words": words.to_tensor(""),
        "tags": tags,
        "confidence": confidence,
        "start": starts.to_tensor(-1),
        "end": ends.to_tensor(-1),
        "num_words": tf.cast(words.row_lengths(), tf.int32),
    }


class TokenClassification(encoder_lib.EncoderTask):
  """A tag per word."""

  name = "token_classification"
  per_token = True
  splits_words = True
  checked_output = "confidence"

  # Reading.
  def read(self, data, split, *, path=None, with_labels=True):
    path = path or getattr(data, f"{split}_file")
    if path:
      if path.lower().endswith((".jsonl", ".json", ".ndjson")):
        words, tags, lines = self._read_jsonl(path, f"--{split}_file")
      else:
        words, tags, lines = read_conll(
            path,
            tag_column=self.config.tag_column_index,
            flag=f"--{split}_file",
            scheme=self.config.tagging_scheme,
        )
      source = path
    else:
      tfds_split = getattr(data, f"tfds_{split}_split")
      if not (data.tfds_name and tfds_split):
        return None
      words, tags, lines = self._read_tfds(data, tfds_split)
      source = f"{data.tfds_name}[{tfds_split}]"
    for sentence_tags, line in zip(tags, lines):
      check_tags(sentence_tags, self.config.tagging_scheme, source, line)
    rows = [{TOKENS_KEY: sentence} for sentence in words]
    if with_labels:
      for row, sentence_tags in zip(rows, tags):
        row[TAGS_KEY] = sentence_tags
    return readers.Examples(
        source,
        [" ".join(sentence) for sentence in words],
        None,
        tags if with_labels else None,
        lines,
        rows,
    )

  def _read_jsonl(self, path, flag):
    tokens, tags_name = self.config.tokens_column, self.config.tags_column
    rows, lines, _ = readers.read_records(path, flag)
    words, tags = [], []
    for row, line in zip(rows, lines):
      for column, flag_name in (
          (tokens, "--tokens_column"),
          (tags_name, "--tags_column"),
      ):
        value = row.get(column)
        if not isinstance(value, list) or not all(
            isinstance(item, str) for item in value
        ):
          raise ValueError(
              f"{path}:{line}: {flag_name}={column!r} must be a "
              f"list of strings, got {value!r}."
          )
      if len(row[tokens]) != len(row[tags_name]):
        raise ValueError(
            f"{path}:{line}: {len(row[tags_name])} tags for "
            f"{len(row[tokens])} tokens; every token needs exactly one tag."
        )
      words.append(row[tokens])
      tags.append(row[tags_name])
    return words, tags, lines

  def _read_tfds(self, data, split):
    import tensorflow_datasets as tfds

    dataset, info = tfds.load(
        data.tfds_name,
        split=split,
        data_dir=data.tfds_data_dir,
        with_info=True,
        shuffle_files=False,
    )
    tokens = self.config.tokens_column
    tags_name = (
        "ner"
        if self.config.tags_column == TAGS_KEY
        else self.config.tags_column
    )
    for flag, column in (
        ("--tokens_column", tokens),
        ("--tags_column", tags_name),
    ):
      if column not in info.features:
        raise ValueError(
            f"{flag}={column!r} is not a feature of "
            f"{data.tfds_name}; features are: "
            f"{', '.join(info.features.keys())}."
        )
    names = info.features[tags_name].feature.names
    words, tags = [], []
    for number, record in enumerate(tfds.as_numpy(dataset), start=1):
      words.append([w.decode("utf-8") for w in record[tokens]])
      tags.append([names[int(i)] for i in record[tags_name]])
      if len(words[-1]) != len(tags[-1]):
        raise ValueError(
            f"{data.tfds_name}[{split}]:{number}: {len(tags[-1])} tags for "
            f"{len(words[-1])} tokens; every token needs exactly one tag."
        )
    return words, tags, list(range(1, len(words) + 1))

  # Labels.
  def label_vocab_of(self, examples):
    vocab = sorted({tag for tags in examples.labels for tag in tags})
    if len(vocab) < 2:
      raise ValueError(
          f"{examples.source}: the tags hold a single tag "
          f"({', '.join(vocab) or 'none'}); token "
          "classification needs at least two."
      )
    return vocab

  def check_labels(self, examples, flag):
    labels_lib.check_label_lists(
        examples, self.state.label_vocab, flag, noun="tag"
    )

  def encode(self, examples, encoder):
    words = [row[TOKENS_KEY] for row in examples.rows]
    flat = [word for sentence in words for word in sentence]
    pieces = (
        encoder.tokenize(tf.constant(flat, tf.string)).to_list() if flat else []
    )
    index = {tag: i for i, tag in enumerate(self.state.label_vocab)}
    all_ids, all_labels, all_positions, truncated, offset = [], [], [], 0, 0
    for row, sentence in enumerate(words):
      sentence_pieces = pieces[offset : offset + len(sentence)]
      offset += len(sentence)
      tag_ids = None
      if examples.labels is not None:
        tag_ids = [index[tag] for tag in examples.labels[row]]
      ids, labels, positions = align_labels(
          sentence_pieces,
          tag_ids,
          encoder.max_seq_length,
          encoder.cls_id,
          encoder.sep_id,
      )
      truncated += sum(len(p) for p in sentence_pieces) + 2 > len(ids)
      all_ids.append(ids)
      all_labels.append(labels)
      all_positions.append(positions)
    input_ids = (
        tf.ragged.constant(all_ids, dtype=tf.int32, ragged_rank=1)
        if all_ids
        else None
    )
    label_ids = None
    if examples.labels is not None:
      label_ids = tf.ragged.constant(all_labels, dtype=tf.int32, ragged_rank=1)
    return pipeline.EncodedExamples(
        input_ids,
        tf.zeros_like(input_ids),
        input_ids.row_lengths().numpy(),
        label_ids,
        int(truncated),
        label_padding=IGNORE_LABEL,
        word_positions=all_positions,
        pad_id=encoder.pad_id,
    )

  # The model.
  def loss_fn(self, train):
    return masked_cross_entropy

  def keras_metrics(self):
    return [TokenAccuracy()]

  # Evaluation.
  def predict(self, model, encoded, *, batch_size):
    """Word-level tags: a list of tag-id lists (-1: no position)."""
    dataset, order = pipeline.inference_dataset(
        encoded, batch_size=batch_size, with_labels=False
    )
    tag_ids = []
    for features in dataset:
      logits = model(features, training=False)
      tag_ids.extend(tf.argmax(logits, axis=-1).numpy())
    restored = [None] * len(order)
    for sorted_index, example in enumerate(order):
      restored[example] = tag_ids[sorted_index]
    return [
        [int(ids[p]) if p >= 0 else -1 for p in positions]
        for ids, positions in zip(restored, encoded.word_positions)
    ]

  def word_tags(self, outputs) -> list[list[str]]:
    label_vocab = self.state.label_vocab
    return [
        [label_vocab[i] if i >= 0 else OUTSIDE for i in ids] for ids in outputs
    ]

  def metrics(self, examples, encoded, outputs):
    gold = examples.labels
    predicted = self.word_tags(outputs)
    words = sum(len(tags) for tags in gold)
    correct = sum(
        g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps)
    )
    entities = entity_metrics(gold, predicted, self.config.tagging_scheme)
    return {
        "num_examples": len(gold),
        "num_words": words,
        "word_accuracy": correct / words if words else 0.0,
        "tagging_scheme": self.config.tagging_scheme,
        **entities,
        "num_truncated": encoded.num_truncated,
    }

  def describe(self, metrics):
    return (
        f"entity F1: {metrics['f1']:.4f}  precision: "
        f"{metrics['precision']:.4f}  recall: {metrics['recall']:.4f}  "
        f"word accuracy: {metrics['word_accuracy']:.4f}  "
        f"({metrics['num_examples']} sentences)"
    )

  def server(self, trained):
    if self.state.text_pair:
      raise ValueError(
          "--task=token_classification tags single texts; drop "
          "--text_pair_column."
      )
    return TokenClassificationServer(
        trained.model,
        trained.encoder,
        task_name=self.name,
        label_vocab=self.state.label_vocab,
    )

  def prediction_rows(self, outputs):
    rows = []
    for i, count in enumerate(outputs["num_words"]):
      count = int(count)
      rows.append(
          {
              "words": [w.decode("utf-8") for w in outputs["words"][i][:count]],
              "predicted_tags": [
                  t.decode("utf-8") for t in outputs["tags"][i][:count]
              ],
              "offsets": [
                  [int(s), int(e)]
                  for s, e in zip(
                      outputs["start"][i][:count], outputs["end"][i][:count]
                  )
              ],
          }
      )
    return rows
