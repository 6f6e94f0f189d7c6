"""Extractive question answering: windows, offsets, post-processing, SQuAD
metrics, readers, a real fit, and the export on raw strings."""

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from conftest import (
    NEGATIVE_WORDS,
    NEUTRAL_WORDS,
    POSITIVE_WORDS,
    make_vocab,
    run_binary,
    run_python,
    train_task,
)
from tf_finetune import (
    config as config_lib,
    evaluate,
    lr_find,
    predict,
    serving,
)
from tf_finetune.tasks import question_answering as qa
from tf_finetune.tasks.base import TaskState
from tf_finetune.text.tokenization import TextEncoder

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "squad.json")


def _task(**options):
  return qa.QuestionAnswering(
      config_lib.task_config(task="question_answering", **options)
  )


def _encoder(max_seq_length=16):
  return TextEncoder.wordpiece(
      vocab=make_vocab(), lower_case=True, max_seq_length=max_seq_length
  )


def test_windows_follow_the_doc_stride():
  # 2 question tokens, 12 - 2 - 3 = 7 context tokens per window, stride 3:
  # 20 tokens give windows at 0, 3, 6, 9, 12 and 15 (the last reaches 20).
  windows = qa.make_windows(
      tf.ragged.constant([[40, 41]]),
      tf.ragged.constant([list(range(100, 120))]),
      max_seq_length=12,
      doc_stride=3,
      max_question_length=64,
      cls_id=2,
      sep_id=3,
  )
  assert windows["start"].numpy().tolist() == [0, 3, 6, 9, 12, 15]
  assert windows["length"].numpy().tolist() == [7, 7, 7, 7, 7, 5]
  assert windows["offset"].numpy().tolist() == [4] * 6
  ids = windows["input_ids"].to_list()
  assert ids[0] == [2, 40, 41, 3, 100, 101, 102, 103, 104, 105, 106, 3]
  assert ids[-1] == [2, 40, 41, 3, 115, 116, 117, 118, 119, 3]
  assert windows["token_type_ids"].to_list()[-1] == [0] * 4 + [1] * 6
  # A stride longer than the window never skips tokens; a short context
  # (and an empty one) is one window; a long question keeps half.
  windows = qa.make_windows(
      tf.ragged.constant([[40], [40], list(range(50, 70))]),
      tf.ragged.constant([list(range(100, 115)), [], [100]]),
      max_seq_length=12,
      doc_stride=100,
      max_question_length=64,
      cls_id=2,
      sep_id=3,
  )
  assert windows["example"].numpy().tolist() == [0, 0, 1, 2]
  assert windows["start"].numpy().tolist() == [0, 8, 0, 0]
  assert windows["length"].numpy().tolist() == [8, 7, 0, 1]
  assert windows["input_ids"].to_list()[3] == [2, 50, 51, 52, 53, 3, 100, 3]


def test_context_tokens_carry_character_offsets_of_their_words():
  encoder = _encoder()
  context = "The café was good, fun."
  tokens, starts, ends = qa.tokenize_context(encoder, tf.constant([context]))
  vocab = make_vocab()
  pieces = [vocab[i] for i in tokens.to_list()[0]]
  assert pieces == [
      "the",
      "c",
      "##a",
      "##f",
      "##e",
      "was",
      "good",
      ",",
      "fun",
      ".",
  ]
  assert starts.to_list()[0] == [0, 4, 4, 4, 4, 9, 13, 17, 19, 22]
  assert ends.to_list()[0] == [3, 8, 8, 8, 8, 12, 17, 18, 22, 23]
  # The answer "was good" is tokens 5-6; of the windows of 5 context
  # tokens at stride 2 ([0, 5), [2, 7), [4, 9), [6, 10)) the second and
  # third hold it.
  windows = qa.make_windows(
      encoder.tokenize(tf.constant(["good"])),
      tokens,
      max_seq_length=9,
      doc_stride=2,
      max_question_length=64,
      cls_id=encoder.cls_id,
      sep_id=encoder.sep_id,
  )
  targets = qa.window_targets(
      [[{"text": "was good", "answer_start": 9}]],
      [np.array(starts.to_list()[0])],
      [np.array(ends.to_list()[0])],
      windows["example"].numpy(),
      windows["start"].numpy(),
      windows["length"].numpy(),
      windows["offset"].numpy(),
  )
  assert windows["start"].numpy().tolist() == [0, 2, 4, 6]
  # Offset 3 ([CLS] good [SEP]): token t of a window starting at s is at
  # position 3 + t - s.
  assert targets.tolist() == [[0, 0], [6, 7], [4, 5], [0, 0]]
  # An answer that ends inside a word takes the whole word.
  targets = qa.window_targets(
      [[{"text": "caf", "answer_start": 4}], []],
      [np.array(starts.to_list()[0])] * 2,
      [np.array(ends.to_list()[0])] * 2,
      np.array([0, 1]),
      np.array([0, 0]),
      np.array([10, 10]),
      np.array([3, 3]),
  )
  assert targets.tolist() == [[4, 7], [0, 0]]


def test_best_span_obeys_order_length_and_context_over_windows():
  seq_len = 8
  # Example 0 has windows 0 and 1 (context at positions 3-6: tokens 0-3
  # and 2-5); example 1 has window 2 (context at positions 2-4).
  start = np.full((3, seq_len), -50.0, np.float32)
  end = np.full((3, seq_len), -50.0, np.float32)
  start[:, 0] = end[:, 0] = 1.0  # [CLS]
  start[1, 0] = end[1, 0] = 0.5
  start[0, 1] = end[0, 1] = 50.0  # A question token: never an answer.
  start[0, 6], end[0, 3] = 9.0, 9.0  # End before start: invalid.
  start[0, 4], end[0, 5] = 2.0, 2.0  # Tokens 1-2: 4.0.
  start[1, 3], end[1, 6] = 4.0, 4.0  # Tokens 2-5: 8.0, but 4 tokens long.
  start[2, 2], end[2, 4] = 0.5, 0.5  # Example 1, tokens 0-2: 1.0.
  end[2, 7] = 30.0  # Padding past the context.
  args = dict(
      window_example=np.array([0, 0, 1], np.int32),
      window_start=np.array([0, 2, 0], np.int32),
      window_length=np.array([4, 4, 3], np.int32),
      window_offset=np.array([3, 3, 2], np.int32),
      num_examples=2,
      n_best_size=20,
  )
  spans = qa.best_spans(start, end, max_answer_length=3, **args)
  assert spans["start_token"].numpy().tolist() == [1, 0]
  assert spans["end_token"].numpy().tolist() == [2, 2]
  np.testing.assert_allclose(spans["score"].numpy(), [4.0, 1.0])
  # The lowest [CLS] score over the example's windows.
  np.testing.assert_allclose(spans["null_score"].numpy(), [1.0, 2.0])
  # Four tokens allowed: window 1's span wins across windows.
  spans = qa.best_spans(start, end, max_answer_length=4, **args)
  assert spans["start_token"].numpy().tolist() == [2, 0]
  assert spans["end_token"].numpy().tolist() == [5, 2]
  np.testing.assert_allclose(spans["score"].numpy(), [8.0, 1.0])
  # One candidate per side: example 0's top start and end never pair up.
  spans = qa.best_spans(
      start, end, max_answer_length=3, **dict(args, n_best_size=1)
  )
  assert spans["has_span"].numpy().tolist() == [False, True]
  assert spans["start_token"].numpy().tolist() == [-1, 0]

  contexts = tf.constant(["aa bb cc dd ee ff", "x y z"])
  token_starts = tf.ragged.constant([[0, 3, 6, 9, 12, 15], [0, 2, 4]])
  token_ends = tf.ragged.constant([[2, 5, 8, 11, 14, 17], [1, 3, 5]])
  spans = qa.best_spans(start, end, max_answer_length=3, **args)
  answers = qa.answers_from_spans(
      spans,
      contexts,
      token_starts,
      token_ends,
      allow_no_answer=True,
      null_score_threshold=0.5,
  )
  # Example 1: null 2.0 - span 1.0 = 1.0 > 0.5: no answer.
  assert [a.decode() for a in answers["answer"].numpy()] == ["bb cc", ""]
  assert answers["start"].numpy().tolist() == [3, -1]
  assert answers["end"].numpy().tolist() == [8, -1]
  answers = qa.answers_from_spans(
      spans,
      contexts,
      token_starts,
      token_ends,
      allow_no_answer=False,
      null_score_threshold=0.0,
  )
  assert [a.decode() for a in answers["answer"].numpy()] == ["bb cc", "x y z"]


def test_squad_metrics_match_hand_computed_values():
  assert qa.normalize_answer("The  Cat, sat! an apple") == "cat sat apple"
  assert qa.normalize_answer("theater") == "theater"
  # "cat sat on mat" vs "cat on mat": 3 common, P 3/4, R 1, F1 6/7.
  assert qa.f1_score("the cat sat on the mat", "cat on mat") == pytest.approx(
      6 / 7
  )
  assert qa.f1_score("", "") == 1.0
  assert qa.f1_score("a", "") == 1.0  # "a" normalizes to "".
  assert qa.f1_score("dog", "") == 0.0
  scores = qa.squad_scores(
      ["Denver Broncos", "the dog barked", "", "cat"],
      [
          [{"text": "Broncos"}, {"text": "Denver Broncos"}],
          [{"text": "dog"}],
          [],
          [],
      ],
  )
  # EM: 1, 0, 1, 0. F1: 1, 2*(1/2*1)/(3/2) = 2/3, 1, 0.
  assert scores["exact_match"] == pytest.approx(50.0)
  assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
  assert scores["HasAns_exact_match"] == pytest.approx(50.0)
  assert scores["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
  assert scores["NoAns_f1"] == pytest.approx(50.0)
  assert scores["HasAns_total"] == scores["NoAns_total"] == 2


def test_null_threshold_maximizes_f1():
  # null - span per example; answering helps examples 0 and 2 only.
  diffs = np.array([-2.0, 1.0, 0.0, 3.0])
  answered = np.array([1.0, 0.0, 1.0, 0.0])
  empty = np.array([0.0, 1.0, 0.0, 1.0])
  threshold, f1 = qa.best_null_threshold(diffs, answered, empty)
  assert threshold == pytest.approx(0.5)  # Between 0.0 and 1.0.
  assert f1 == pytest.approx(1.0)


def test_best_threshold_scores_as_the_v2_script_names_them():
  # Best spans and no-answer score - span score of four questions (the last
  # two unanswerable). Answered: F1 1, 2/3, 0, 0; EM 1, 0, 0, 0; unanswered:
  # 0, 0, 1, 1. Answering the lowest two (threshold between 0.2 and 0.5)
  # gives F1 (1 + 2/3 + 1 + 1) / 4; EM is best answering only the first
  # (between -1 and 0.2): (1 + 0 + 1 + 1) / 4.
  scores = qa.best_threshold_scores(
      ["Denver Broncos", "the dog barked", "cat", "dog"],
      [[{"text": "Broncos"}, {"text": "Denver Broncos"}], [{"text": "dog"}]]
      + [[], []],
      np.array([-1.0, 0.2, 0.5, 3.0]),
  )
  assert scores == pytest.approx(
      {
          "best_f1": 100 * (1 + 2 / 3 + 1 + 1) / 4,
          "best_f1_thresh": 0.35,
          "best_exact": 75.0,
          "best_exact_thresh": -0.4,
      }
  )
  v2 = qa.squad_scores(
      ["Broncos", ""], [[{"text": "Broncos"}], []], exact_key="exact"
  )
  assert v2.keys() == {
      "exact",
      "f1",
      "total",
      "HasAns_exact",
      "HasAns_f1",
      "HasAns_total",
      "NoAns_exact",
      "NoAns_f1",
      "NoAns_total",
  }


def test_reads_the_real_squad_fixture():
  examples = _task().read_file(FIXTURE, "--train_file", with_labels=True)
  assert len(examples) == 5
  assert examples.rows[0]["id"] == "5733be284776f41900661182"
  assert examples.labels[0] == [
      {"text": "Saint Bernadette Soubirous", "answer_start": 515}
  ]
  assert examples.texts[0].startswith("To whom did the Virgin Mary")
  encoder = _encoder(64)
  task = _task(doc_stride=8)
  task.bind(TaskState(label_vocab=tuple(task.label_vocab_of(examples))))
  features = task.encode(examples, encoder)
  assert len(features) > 5 * 3  # Long contexts: several windows each.
  assert features.num_examples == 5
  # Where a window holds the answer, its targets give back the answer's
  # words: "Father Julius Nieuwl" ends inside "Nieuwland".
  expected = {0: "Saint Bernadette Soubirous", 3: "Father Julius Nieuwland"}
  for example, text in expected.items():
    windows = np.nonzero(
        (features.window_example == example) & (features.label_ids[:, 0] > 0)
    )[0]
    assert len(windows) >= 1
    for w in windows:
      first, last = (
          features.label_ids[w]
          - features.window_offset[w]
          + features.window_start[w]
      )
      begin = features.token_starts[example][first]
      finish = features.token_ends[example][last]
      assert features.contexts[example][begin:finish] == text


@pytest.mark.parametrize("name", ["squad/v1.1", "squad/v2.0"])
def test_tfds_squad_maps_its_features(name):
  import tensorflow_datasets as tfds

  records = [
      ("q1", "Who won?", "Denver won the game.", ["Denver"], [0], False),
      ("q2", "Who lost?", "Nobody said.", [], [], True),
  ]
  v2 = name.endswith("2.0")

  def as_dataset(self, *args, **kwargs):
    def generate():
      for qid, question, context, texts, starts, impossible in records:
        if not v2 and impossible:
          continue
        record = {
            "id": qid,
            "title": "t",
            "question": question,
            "context": context,
            "answers": {"text": texts, "answer_start": starts},
        }
        if v2:
          record.update(
              is_impossible=impossible,
              plausible_answers={"text": texts, "answer_start": starts},
          )
        yield record

    return tf.data.Dataset.from_generator(
        generate, output_signature=self.info.features.get_tensor_spec()
    )

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    examples = _task(allow_no_answer=v2).read(
        config_lib.DataConfig(tfds_name=name), "validation"
    )
  assert examples.source == f"{name}[validation]"
  assert examples.texts[0] == "Who won?"
  assert examples.text_pairs[0] == "Denver won the game."
  assert examples.labels[0] == [{"text": "Denver", "answer_start": 0}]
  if v2:
    assert [row["id"] for row in examples.rows] == ["q1", "q2"]
    assert examples.labels[1] == []
    with pytest.raises(
        ValueError,
        match=r"1 of 2 questions are " r"unanswerable.*--allow_no_answer",
    ):
      _task().label_vocab_of(examples)
  else:
    assert len(examples) == 1


def test_reads_jsonl_answers_and_csv_questions(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text(
      json.dumps(
          {
              "id": "a",
              "q": "Who won?",
              "passage": "Denver won.",
              "answers": {"text": ["Denver"], "answer_start": [0]},
          }
      )
      + "\n"
      + json.dumps(
          {
              "id": "b",
              "q": "Who lost?",
              "passage": "No one.",
              "answers": [],
              "is_impossible": True,
          }
      )
      + "\n"
  )
  task = _task(
      question_column="q", context_column="passage", allow_no_answer=True
  )
  examples = task.read_file(str(path), "--train_file", with_labels=True)
  assert examples.texts == ["Who won?", "Who lost?"]
  assert examples.text_pairs == ["Denver won.", "No one."]
  assert examples.labels == [[{"text": "Denver", "answer_start": 0}], []]
  questions = tmp_path / "questions.csv"
  questions.write_text("id,q,passage\nx,Who?,Denver won.\n")
  examples = task.read_prediction_input(
      str(questions), text_column="text", text_pair_column=None
  )
  assert examples.rows[0]["id"] == "x" and examples.labels is None
  with pytest.raises(
      ValueError, match=r"CSV/TSV files cannot hold SQuAD " "answers"
  ):
    task.read_file(str(questions), "--train_file", with_labels=True)
  with pytest.raises(
      ValueError,
      match=r"questions.csv:2: --question_column="
      r"'question' must be a string field, got None; fields "
      r"are: id, q, passage",
  ):
    _task().read_prediction_input(
        str(questions), text_column="text", text_pair_column=None
    )


def _squad(path, qas, context="Denver won the game."):
  with open(path, "w", encoding="utf-8") as f:
    json.dump(
        {
            "version": "v2.0",
            "data": [
                {"title": "t", "paragraphs": [{"context": context, "qas": qas}]}
            ],
        },
        f,
    )
  return str(path)


def test_bad_squad_input_names_file_and_question(tmp_path):
  broken = tmp_path / "broken.json"
  broken.write_text('{"data": [\n  {"paragraphs": [}\n]}')
  with pytest.raises(ValueError, match=r"broken.json:2: not valid JSON"):
    _task().read_file(str(broken), "--train_file", with_labels=True)
  path = _squad(
      tmp_path / "moved.json",
      [
          {
              "id": "q7",
              "question": "Who?",
              "answers": [{"text": "Denver", "answer_start": 3}],
          }
      ],
  )
  with pytest.raises(
      ValueError,
      match=r"moved.json: question 'q7': answer "
      r"'Denver' is not at answer_start=3 of its context "
      r"\(the context has 'ver wo' there\)",
  ):
    _task().read_file(path, "--train_file", with_labels=True)
  path = _squad(
      tmp_path / "missing.json",
      [{"id": "q8", "answers": [{"text": "Denver", "answer_start": 0}]}],
  )
  with pytest.raises(
      ValueError,
      match=r"missing.json: question 'q8': field "
      r"'question' must be a string, got None",
  ):
    _task().read_file(path, "--train_file", with_labels=True)
  path = _squad(
      tmp_path / "noanswer.json", [{"id": "q9", "question": "?", "answers": []}]
  )
  with pytest.raises(ValueError, match=r"question 'q9': has no answers"):
    _task().read_file(path, "--train_file", with_labels=True)
  with pytest.raises(
      ValueError,
      match=r"--null_score_threshold is for models" r" that may answer nothing",
  ):
    config_lib.task_config(task="question_answering", null_score_threshold=1.0)
  with pytest.raises(ValueError, match=r"--doc_stride=0 must be at least 1"):
    config_lib.task_config(task="question_answering", doc_stride=0)


def make_qa_articles(count: int, *, seed: int) -> list[dict]:
  """Learnable SQuAD v2.0-style questions: "what was good?" is answered by
  the context's positive word alone; a context without one is
  unanswerable. Contexts of 12-30 words span several windows at
  --max_seq_length=32."""
  rng = random.Random(seed)
  paragraphs = []
  for i in range(count):
    words = [rng.choice(NEUTRAL_WORDS) for _ in range(rng.randint(12, 30))]
    words[rng.randrange(len(words))] = rng.choice(NEGATIVE_WORDS)
    answerable = rng.random() < 0.75
    qa_entry = {"id": f"q{seed}-{i}", "question": "what was good?"}
    if answerable:
      at = rng.randrange(len(words))
      words[at] = rng.choice(POSITIVE_WORDS)
      context = " ".join(words)
      start = len(" ".join(words[:at])) + (1 if at else 0)
      qa_entry["answers"] = [{"text": words[at], "answer_start": start}]
    else:
      context = " ".join(words)
      qa_entry.update(answers=[], is_impossible=True)
    paragraphs.append({"context": context, "qas": [qa_entry]})
  return [{"title": "synthetic", "paragraphs": paragraphs}]


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, tiny_bert_dir):
  directory = tmp_path_factory.mktemp("qa")
  files = {}
  for split, count, seed in (
      ("train", 160, 41),
      ("validation", 48, 42),
      ("test", 48, 43),
  ):
    files[split] = str(directory / f"{split}.json")
    with open(files[split], "w", encoding="utf-8") as f:
      json.dump(
          {"version": "v2.0", "data": make_qa_articles(count, seed=seed)}, f
      )
  model_dir = train_task(
      directory,
      tiny_bert_dir,
      files,
      [
          "--task=question_answering",
          "--allow_no_answer",
          "--doc_stride=8",
          "--max_answer_length=4",
          "--learning_rate=2e-3",
      ],
      epochs=6,
  )
  return model_dir, files


def test_fit_lowers_the_loss_and_answers(qa_run):
  model_dir, _ = qa_run
  summary = json.load(open(os.path.join(model_dir, "summary.json")))
  loss = summary["history"]["loss"]
  assert loss[-1] < 0.5 * loss[0], loss
  results = json.load(open(os.path.join(model_dir, "eval_results.json")))
  test = results["test"]
  assert test["num_windows"] > test["num_examples"]
  assert test["f1"] > 90.0, test
  assert test["HasAns_total"] + test["NoAns_total"] == 48
  state = json.load(open(os.path.join(model_dir, "task_state.json")))
  assert test["null_score_threshold"] == state["null_score_threshold"]


def test_results_say_the_validation_split_chose_the_threshold(qa_run):
  """Named as the SQuAD v2.0 script: exact and f1 at the threshold used, and
  best_* at the threshold best for the split itself. Validation chose the
  threshold (its best_f1_thresh) and the kept epoch: its metrics are
  labelled selection metrics, the test split's held out."""
  model_dir, _ = qa_run
  results = json.load(open(os.path.join(model_dir, "eval_results.json")))
  state = json.load(open(os.path.join(model_dir, "task_state.json")))
  selection = {
      "kept_epoch": "validation",
      "no_answer_threshold": "validation",
      "validation_metrics": "selection",
      "test_metrics": "held out",
  }
  assert results["selection"] == selection
  summary = json.load(open(os.path.join(model_dir, "summary.json")))
  assert summary["selection"] == selection
  names = {"exact", "f1", "best_exact", "best_exact_thresh", "best_f1"}
  for split in ("validation", "test"):
    assert names | {"best_f1_thresh", "HasAns_exact"} <= results[split].keys()
    assert "exact_match" not in results[split]
    assert results[split]["null_score_threshold"] == pytest.approx(
        state["null_score_threshold"]
    )
  validation = results["validation"]
  assert validation["best_f1_thresh"] == pytest.approx(
      state["null_score_threshold"]
  )
  assert validation["f1"] == pytest.approx(validation["best_f1"])


def test_evaluate_and_predict_binaries_on_squad_files(qa_run, tmp_path, capsys):
  model_dir, files = qa_run
  assert (
      run_binary(
          evaluate,
          [
              f"--model_dir={model_dir}",
              f"--test_file={files['test']}",
              "--split_name=again",
          ],
      )
      == 0
  )
  assert "again exact match:" in capsys.readouterr().out
  output = str(tmp_path / "predictions.json")
  assert (
      run_binary(
          predict,
          [
              f"--model_dir={model_dir}",
              f"--input_file={files['test']}",
              f"--output_file={output}",
          ],
      )
      == 0
  )
  answers = json.load(open(output))
  rows = json.load(open(files["test"]))["data"][0]["paragraphs"]
  assert set(answers) == {p["qas"][0]["id"] for p in rows}
  predicted = [answers[p["qas"][0]["id"]] for p in rows]
  gold = [p["qas"][0]["answers"] for p in rows]
  results = json.load(open(os.path.join(model_dir, "eval_results.json")))
  # The served graph's answers score what evaluation reported.
  assert qa.squad_scores(predicted, gold)["f1"] == pytest.approx(
      results["test"]["f1"], abs=1e-6
  )


def test_export_answers_raw_strings_in_a_fresh_process(qa_run, tmp_path):
  model_dir, files = qa_run
  export_dir = serving.latest_version_dir(os.path.join(model_dir, "export"))
  # A long context of the training data's words: the answer sits in a later
  # window. (A word the training contexts never hold, such as ".", leaves the
  # end of the span to chance.)
  long_context = " ".join(["the movie"] * 12 + ["superb", "plot", "story"])
  questions = ["what was good?", "what was good?", "what was good?"]
  contexts = [long_context, "the café was dull", ""]
  script = f"""
import json
import tensorflow as tf
import tensorflow_text
model = tf.saved_model.load({export_dir!r})
out = model.signatures["serving_default"](
    question=tf.constant({questions!r}), context=tf.constant({contexts!r}))
print(json.dumps({{name: [v.decode() if isinstance(v, bytes) else float(v)
                          for v in value.numpy().tolist()]
                   for name, value in out.items()}}))
print(float(model.get_null_score_threshold().numpy()))
"""
  result = run_python(["-c", script])
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  served = json.loads(lines[-2])
  state = json.load(open(os.path.join(model_dir, "task_state.json")))
  assert float(lines[-1]) == pytest.approx(state["null_score_threshold"])
  assert served["answer"][0] == "superb"
  assert (
      long_context[int(served["start"][0]) : int(served["end"][0])] == "superb"
  )
  assert served["answer"][2] == "" and served["start"][2] == -1
  for answer, context, start, end in zip(
      served["answer"], contexts, served["start"], served["end"]
  ):
    if answer:
      assert context[int(start) : int(end)] == answer
  # The predict binary on the SavedModel writes rows with offsets.
  inputs = str(tmp_path / "in.jsonl")
  with open(inputs, "w", encoding="utf-8") as f:
    f.write(
        json.dumps({"question": questions[0], "context": long_context}) + "\n"
    )
  output = str(tmp_path / "out.jsonl")
  assert (
      run_binary(
          predict,
          [
              f"--saved_model={export_dir}",
              f"--input_file={inputs}",
              f"--output_file={output}",
          ],
      )
      == 0
  )
  row = json.loads(open(output).read())
  assert row["answer"] == "superb"
  assert [row["start"], row["end"]] == [served["start"][0], served["end"][0]]


def test_lr_find_runs_on_question_answering(tmp_path, tiny_bert_dir):
  path = str(tmp_path / "train.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"data": make_qa_articles(32, seed=44)}, f)
  model_dir = tmp_path / "lr"
  assert (
      run_binary(
          lr_find,
          [
              f"--model={tiny_bert_dir}",
              f"--train_file={path}",
              f"--model_dir={model_dir}",
              "--task=question_answering",
              "--allow_no_answer",
              "--doc_stride=8",
              "--max_seq_length=32",
              "--batch_size=16",
              "--lr_find_steps=8",
              "--lr_find_max=1",
          ],
      )
      == 0
  )
  results = json.load(open(model_dir / "lr_find.json"))
  assert len(results["learning_rates"]) >= 4
