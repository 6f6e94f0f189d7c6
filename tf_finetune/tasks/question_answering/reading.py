"""Reading SQuAD JSON and SQuAD-style JSONL/CSV/TSV questions."""

from __future__ import annotations

import json
import os
from typing import Any

from tf_finetune.data import readers

ANSWERS_KEY = "answers"


ID_KEY = "id"


# Reading.
def _question_error(source: str, qid: Any, message: str) -> ValueError:
  return ValueError(f"{source}: question {qid!r}: {message}")


def check_answers(
    source: str, qid: Any, context: str, answers: Any, is_impossible: bool
) -> list[dict]:
  """Checked answers: strings that sit at their answer_start."""
  if not isinstance(answers, list):
    raise _question_error(
        source,
        qid,
        f"'answers' must be a list of "
        f"{{'text', 'answer_start'}} objects, got "
        f"{answers!r}.",
    )
  checked = []
  for answer in answers:
    if (
        not isinstance(answer, dict)
        or not isinstance(answer.get("text"), str)
        or not isinstance(answer.get("answer_start"), int)
        or isinstance(answer.get("answer_start"), bool)
    ):
      raise _question_error(
          source,
          qid,
          f"each answer needs a string 'text' "
          f"and an integer 'answer_start', got {answer!r}.",
      )
    text, start = answer["text"], answer["answer_start"]
    found = context[start : start + len(text)] if start >= 0 else ""
    if found != text:
      raise _question_error(
          source,
          qid,
          f"answer {text!r} is not at answer_start={start} of "
          f"its context (the context has {found!r} there).",
      )
    checked.append({"text": text, "answer_start": start})
  if not checked and not is_impossible:
    raise _question_error(
        source,
        qid,
        "has no answers; an unanswerable "
        'question needs "is_impossible": true (SQuAD '
        "v2.0).",
    )
  return [] if is_impossible else checked


def _string_field(
    source: str, qid: Any, record: dict, name: str, where: str
) -> str:
  value = record.get(name)
  if not isinstance(value, str):
    raise _question_error(
        source, qid, f"{where} {name!r} must be a string, " f"got {value!r}."
    )
  return value


def read_squad_json(
    path: str, flag: str, *, with_labels: bool = True
) -> list[dict]:
  """Questions of a SQuAD JSON file, as rows (id, question, context,
  answers, is_impossible).

  Raises:
    ValueError: naming the file and the question id (or where in the file)
      for malformed JSON, missing fields, or an answer not at its start.
  """
  content = readers.read_text(path, flag)
  try:
    document = json.loads(content)
  except json.JSONDecodeError as e:
    # Lines as editors count them ("\r" too), not json's "\n"-only lineno.
    line, column = readers.position(content, e.pos)
    raise ValueError(
        f"{path}:{line}: not valid JSON ({e.msg}, column "
        f"{column}); expected a SQuAD file "
        '{"data": [...]}.'
    ) from None
  data = document.get("data") if isinstance(document, dict) else None
  if not isinstance(data, list):
    raise ValueError(
        f"{path}: expected a SQuAD file, an object whose "
        '"data" is a list of articles with "paragraphs".'
    )
  rows = []
  for i, article in enumerate(data):
    paragraphs = (
        article.get("paragraphs") if isinstance(article, dict) else None
    )
    if not isinstance(paragraphs, list):
      raise ValueError(f'{path}: data[{i}] has no "paragraphs" list.')
    for j, paragraph in enumerate(paragraphs):
      where = f"data[{i}].paragraphs[{j}]"
      if (
          not isinstance(paragraph, dict)
          or not isinstance(paragraph.get("context"), str)
          or not isinstance(paragraph.get("qas"), list)
      ):
        raise ValueError(
            f'{path}: {where} needs a string "context" and a ' '"qas" list.'
        )
      context = paragraph["context"]
      for k, qa in enumerate(paragraph["qas"]):
        qid = qa.get("id") if isinstance(qa, dict) else None
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
          raise ValueError(f'{path}: {where}.qas[{k}] has no "id".')
        row = {
            ID_KEY: str(qid),
            "question": _string_field(path, qid, qa, "question", "field"),
            "context": context,
        }
        is_impossible = bool(qa.get("is_impossible", False))
        if with_labels or "answers" in qa:
          row[ANSWERS_KEY] = check_answers(
              path, qid, context, qa.get("answers", []), is_impossible
          )
          row["is_impossible"] = is_impossible
        rows.append(row)
  if not rows:
    raise ValueError(f"{flag}={path!r} holds no questions.")
  return rows


def is_squad_json(path: str) -> bool:
  """Whether a .json file is one SQuAD document rather than JSON lines.

  A file that is not valid JSON is SQuAD unless its first line is a JSON
  value (JSON lines), so a broken SQuAD file gets the SQuAD reader's error.
  """
  if not path.lower().endswith(".json") or not os.path.isfile(path):
    return False
  try:
    content = readers.read_text(path, "file")
  except ValueError:
    return False  # Not UTF-8: the JSONL reader names the line.
  try:
    document = json.loads(content)
  except json.JSONDecodeError:
    try:
      json.loads(content.split("\n", 1)[0])
    except json.JSONDecodeError:
      return True
    return False
  return isinstance(document, dict) and "data" in document


def record_answers(value: Any) -> Any:
  """SQuAD answers from a record: a list, or HF's {"text", "answer_start"}."""
  if isinstance(value, dict) and isinstance(value.get("text"), list):
    starts = value.get("answer_start", [])
    if not isinstance(starts, list) or len(starts) != len(value["text"]):
      return value
    return [
        {"text": text, "answer_start": start}
        for text, start in zip(value["text"], starts)
    ]
  return value


def examples_from_rows(
    source: str, rows: list[dict], lines: list[int], *, with_labels: bool
) -> readers.Examples:
  labels = [row[ANSWERS_KEY] for row in rows] if with_labels else None
  return readers.Examples(
      source,
      [row["question"] for row in rows],
      [row["context"] for row in rows],
      labels,
      lines,
      rows,
  )
