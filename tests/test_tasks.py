"""tasks/: the registry, TFDS GLUE layouts, sentence pairs end to end, and
GLUE submission files."""

import json
import os
import random

import numpy as np
import pytest

from conftest import (
    NEGATIVE_WORDS,
    NEUTRAL_WORDS,
    POSITIVE_WORDS,
    run_binary,
    run_python,
    train_task,
    write_rows,
)
from tf_finetune import (
    config as config_lib,
    predict,
    prediction,
    serving,
    tasks,
)
from tf_finetune.data import readers


def _mock_tfds(name, split, task="classification", **data):
  """Resolves the columns and reads `split` of a mocked TFDS data set."""
  import tensorflow_datasets as tfds

  task = tasks.get_task(config_lib.task_config(task=task))
  config = task.resolve_data(
      config_lib.DataConfig(tfds_name=name, tfds_validation_split=split, **data)
  )
  with tfds.testing.mock_data(num_examples=5):
    return config, task.read(config, "validation")


@pytest.mark.parametrize(
    "name, text, pair",
    [
        ("glue/mrpc", "sentence1", "sentence2"),
        ("glue/rte", "sentence1", "sentence2"),
        ("glue/mnli", "premise", "hypothesis"),
        ("glue/qnli", "question", "sentence"),
    ],
)
def test_tfds_glue_pair_tasks_map_their_features(name, text, pair):
  config, examples = _mock_tfds(name, "train")
  assert (config.text_column, config.text_pair_column) == (text, pair)
  assert len(examples) == 5
  assert examples.text_pairs is not None and len(examples.text_pairs) == 5
  assert all(isinstance(t, str) for t in examples.text_pairs)
  assert set(examples.rows[0]) == {text, pair, "label"}


def test_tfds_mnli_reads_its_matched_validation_split():
  _, examples = _mock_tfds("glue/mnli", "validation_matched")
  assert examples.source == "glue/mnli[validation_matched]"
  assert set(examples.labels) <= {"entailment", "neutral", "contradiction"}


def test_tfds_stsb_scores_stay_numbers():
  _, examples = _mock_tfds("glue/stsb", "train", task="regression")
  assert examples.text_pairs is not None
  task = tasks.get_task(config_lib.task_config(task="regression"))
  scores = task.label_ids(examples)
  assert scores.dtype == np.float32 and len(scores) == 5
  # Not rounded to integers on the way.
  assert [float(label) for label in examples.labels] == pytest.approx(
      scores.tolist()
  )


def test_a_pair_task_given_one_text_column_is_refused():
  with pytest.raises(
      ValueError,
      match=r"--tfds_name=glue/mrpc is a "
      r"sentence-pair task \(sentence1, sentence2\) but only "
      r"--text_column='sentence1' was given; set "
      "--text_pair_column=sentence2",
  ):
    _mock_tfds("glue/mrpc", "train", text_column="sentence1")


def test_every_task_name_has_a_module_and_default_metric():
  for name in tasks.names():
    task = tasks.get_task(config_lib.task_config(task=name))
    assert task.name == name
    assert tasks.monitors(name)[0].startswith("val_")
  with pytest.raises(ValueError, match="--task='summarization' is not one"):
    config_lib.task_config(task="summarization")


def test_every_recipe_builds_a_valid_run_config():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  recipes = sorted(
      name
      for name in os.listdir(os.path.join(root, "flags"))
      if name.endswith(".flags")
  )
  script = f"""
import json, os
from absl import flags
from tf_finetune import flag_definitions
flag_definitions.define_train_flags()
found = {{}}
for name in {recipes!r}:
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["train", "--flagfile=" + os.path.join("flags", name)])
  config = flag_definitions.run_config_from_flags()
  found[name] = [config.task.task, config.train.early_stopping_metric]
  if config.task.task == "translation":
    found[name].append(config.task.source_prefix)
print(json.dumps(found))
"""
  result = run_python(["-c", script], cwd=root)
  assert result.returncode == 0, result.stderr[-2000:]
  found = json.loads(result.stdout.strip().splitlines()[-1])
  assert found["glue_mrpc.flags"] == ["classification", "val_accuracy"]
  assert found["glue_stsb.flags"] == ["regression", "val_pearson"]
  assert found["conll2003.flags"] == ["token_classification", "val_loss"]
  assert found["conll_files.flags"] == ["token_classification", "val_loss"]
  assert found["multi_label.flags"] == ["multi_label", "val_micro_f1"]
  assert found["sentiment_pairs_demo.flags"] == [
      "classification",
      "val_accuracy",
  ]
  assert found["sentiment_pairs_regression_demo.flags"] == [
      "regression",
      "val_pearson",
  ]
  for name in ("squad_v1.flags", "squad_v2.flags", "film_qa_demo.flags"):
    assert found[name] == ["question_answering", "val_loss"]
  assert found["bible_en_es_from_scratch.flags"] == [
      "translation",
      "val_loss",
      "",
  ]
  assert found["opus_mt_en_es.flags"] == ["translation", "val_loss", ""]
  # Flag files strip the prefix's trailing space; the task puts it back.
  assert found["wmt14_en_de_t5.flags"] == [
      "translation",
      "val_loss",
      "translate English to German:",
  ]
  assert len(found) == len(recipes) >= 12


def _pair_rows(count, seed):
  """The label is the polarity of the second text; the first text holds an
  opinion word of either polarity, so only a model reading the pair's
  second segment can be right."""
  rng = random.Random(seed)
  rows = []
  for _ in range(count):
    first = rng.sample(NEUTRAL_WORDS, 2) + [
        rng.choice(POSITIVE_WORDS + NEGATIVE_WORDS)
    ]
    positive = rng.random() < 0.5
    second = rng.sample(NEUTRAL_WORDS, 2) + [
        rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
    ]
    rng.shuffle(first)
    rng.shuffle(second)
    rows.append(
        {
            "idx": len(rows),
            "premise": " ".join(first),
            "hypothesis": " ".join(second),
            "label": "equivalent" if positive else "not_equivalent",
        }
    )
  return rows


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory, tiny_bert_dir):
  directory = tmp_path_factory.mktemp("pairs")
  files = {
      split: write_rows(
          str(directory / f"{split}.tsv"), _pair_rows(count, seed)
      )
      for split, count, seed in (
          ("train", 192, 41),
          ("validation", 48, 42),
          ("test", 48, 43),
      )
  }
  return train_task(
      directory,
      tiny_bert_dir,
      files,
      ["--text_column=premise", "--text_pair_column=hypothesis"],
  )


def test_sentence_pairs_train_export_and_serve_both_texts(pair_run):
  results = json.load(open(os.path.join(pair_run, "eval_results.json")))
  assert results["test"]["accuracy"] > 0.8, results["test"]
  export_dir = serving.latest_version_dir(os.path.join(pair_run, "export"))
  firsts = ["the good movie", "the good movie"]
  seconds = ["a dull plot", "a wonderful plot"]
  script = f"""
import json
import tensorflow as tf
import tensorflow_text
model = tf.saved_model.load({export_dir!r})
out = model.signatures["serving_default"](text=tf.constant({firsts!r}),
                                          text_pair=tf.constant({seconds!r}))
print(json.dumps([l.decode() for l in out["label"].numpy()]))
"""
  result = run_python(["-c", script])
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == [
      "not_equivalent",
      "equivalent",
  ]


def test_pair_model_given_one_text_column_names_the_fix(
    pair_run, tmp_path, capsys
):
  inputs = write_rows(str(tmp_path / "single.csv"), [{"text": "good"}])
  code = run_binary(
      predict,
      [
          f"--saved_model={pair_run}/export",
          f"--input_file={inputs}",
          f"--output_file={tmp_path / 'out.csv'}",
      ],
  )
  assert code == 2
  assert (
      "reads sentence pairs; set --text_pair_column" in capsys.readouterr().err
  )
  premises = write_rows(str(tmp_path / "premises.csv"), [{"premise": "good"}])
  code = run_binary(
      predict,
      [
          f"--model_dir={pair_run}",
          f"--input_file={premises}",
          f"--output_file={tmp_path / 'out.csv'}",
      ],
  )
  assert code == 2
  assert (
      "--text_pair_column='hypothesis' is not a column of "
      f"{premises}; columns are: premise"
  ) in capsys.readouterr().err


def test_predict_writes_a_glue_submission_file(pair_run, tmp_path):
  rows = _pair_rows(6, seed=44)
  for row in rows:
    row["idx"] += 100
    del row["label"]
  inputs = write_rows(str(tmp_path / "test.tsv"), rows)
  output = str(tmp_path / "MRPC.tsv")
  assert (
      run_binary(
          predict,
          [
              f"--model_dir={pair_run}",
              f"--input_file={inputs}",
              f"--output_file={output}",
              "--glue_tsv",
          ],
      )
      == 0
  )
  lines = open(output).read().splitlines()
  assert lines[0] == "index\tprediction"
  assert [line.split("\t")[0] for line in lines[1:]] == [
      str(100 + i) for i in range(6)
  ]
  # MRPC's leaderboard wants 1 for equivalent, 0 for not.
  predicted = prediction.Predictor.from_model_dir(pair_run).predict_rows(
      [r["premise"] for r in rows], [r["hypothesis"] for r in rows]
  )
  assert [line.split("\t")[1] for line in lines[1:]] == [
      "1" if p["predicted_label"] == "equivalent" else "0" for p in predicted
  ]


def test_glue_predictions_for_names_and_scores():
  assert (
      prediction.glue_prediction(
          {"predicted_label": "neutral"},
          ["contradiction", "entailment", "neutral"],
      )
      == "neutral"
  )
  assert (
      prediction.glue_prediction({"predicted_score": 3.14159}, ["score"])
      == "3.142"
  )
  assert (
      prediction.glue_prediction(
          {"predicted_label": "acceptable"}, ["acceptable", "unacceptable"]
      )
      == "1"
  )
  with pytest.raises(
      ValueError, match="--glue_tsv is for classification " "and regression"
  ):
    prediction.glue_prediction({"predicted_tags": ["O"]}, ["O", "B-X"])


def test_glue_wnli_predictions_are_0_and_1_rte_and_qnli_names(tmp_path):
  """TFDS glue/wnli labels are (not_entailment, entailment), RTE's and
  QNLI's the same two; WNLI.tsv holds 0/1 (1: entailment), RTE.tsv and
  QNLI.tsv the names."""
  wnli_vocab = ["not_entailment", "entailment"]
  rte_vocab = ["entailment", "not_entailment"]
  predictions = [
      {"predicted_label": "entailment"},
      {"predicted_label": "not_entailment"},
  ]
  examples = readers.Examples(
      texts=["a", "b"],
      text_pairs=["c", "d"],
      labels=None,
      rows=[{"idx": 7}, {"idx": 8}],
      line_numbers=[2, 3],
      source="test.tsv",
  )
  written = {}
  for name, vocab in (
      ("WNLI.tsv", wnli_vocab),
      ("RTE.tsv", rte_vocab),
      ("QNLI.tsv", rte_vocab),
  ):
    path = str(tmp_path / name)
    prediction.write_glue_tsv(path, examples, predictions, vocab)
    written[name] = open(path).read()
  assert written["WNLI.tsv"] == "index\tprediction\n7\t1\n8\t0\n"
  names = "index\tprediction\n7\tentailment\n8\tnot_entailment\n"
  assert written["RTE.tsv"] == written["QNLI.tsv"] == names
