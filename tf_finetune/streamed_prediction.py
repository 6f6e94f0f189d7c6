"""Prediction for inputs of any size (`predict --streaming`).

The input's shards (a file, glob or comma-separated list, as the training
flags take them) are read a record at a time by `data.shards`; each batch of
`batch_size` rows is predicted and written at once, in input order, by
`writers.PredictionFileWriter`, so memory holds one batch whatever the
input's size.
"""

from __future__ import annotations

from typing import Optional

from tf_finetune.data import shards, writers


def predict_file(
    predictor,
    input_spec: str,
    output_file: str,
    *,
    text_column: str,
    text_pair_column: Optional[str],
    batch_size: int,
) -> int:
  """Writes each input row with its predictions; returns the rows written.

  Args:
    predictor: A `prediction.Predictor` of a classification model.
    input_spec: --input_file: a file, glob or comma-separated list.
    output_file: A .csv, .tsv or .jsonl file, replaced when all is written.
    text_column: The column of the text.
    text_pair_column: The column of the second text, or None.
    batch_size: Rows per prediction call (and per write).

  Raises:
    ValueError: for a task other than classification, or for the first bad
      record, naming the shard and line (the output file is untouched).
  """
  if not getattr(predictor.task, "supports_streaming", False):
    raise ValueError(
        f"--streaming predicts with classification models only; the model "
        f"at {predictor.source} is a {predictor.task_name} model (drop "
        "--streaming)."
    )
  columns = shards.Columns(text_column, text_pair_column, None)
  with writers.PredictionFileWriter(output_file) as out:
    batch = []

    def flush():
      texts = [example[0] for example, _ in batch]
      pairs = [example[1] for example, _ in batch] if text_pair_column else None
      predictions = predictor.predict_rows(texts, pairs, batch_size=len(batch))
      out.write([record for _, record in batch], predictions)
      batch.clear()

    for path in shards.expand(input_spec, "--input_file"):
      for _, example, record in shards.iter_examples(
          path, "--input_file", columns, with_record=True
      ):
        if isinstance(example, shards.BadRecord):
          raise ValueError(f"--input_file: {example}")
        batch.append((example, record))
        if len(batch) == batch_size:
          flush()
    if batch:
      flush()
  return out.count
