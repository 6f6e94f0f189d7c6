"""tasks/token_classification.py: CoNLL and JSONL reading, label alignment,
entity metrics, a fit, and the raw-text export with character offsets."""

import json
import os

import pytest
import tensorflow as tf

from conftest import (
    make_tagged_sentences,
    run_binary,
    run_python,
    train_task,
    write_conll,
    write_rows,
)
from tf_finetune import (
    artifacts,
    config as config_lib,
    evaluate,
    predict,
    serving,
    tasks,
)
from tf_finetune.tasks import token_classification as tc
from tf_finetune.tasks.base import TaskState

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "conll2003.txt")
IGNORE = tc.IGNORE_LABEL


def _task(**options):
  return tasks.get_task(
      config_lib.task_config(task="token_classification", **options)
  )


def test_reads_the_real_conll_2003_fixture():
  words, tags, lines = tc.read_conll(FIXTURE)
  assert words == [
      ["U.N.", "official", "Ekeus", "heads", "for", "Baghdad", "."],
      ["AI2", "engineer", "Joel", "lives", "in", "Seattle", "."],
  ]
  assert tags[0] == ["I-ORG", "O", "I-PER", "O", "O", "I-LOC", "O"]
  assert lines == [3, 13]
  examples = _task(tagging_scheme="IOB1").read(
      config_lib.DataConfig(train_file=FIXTURE), "train"
  )
  assert examples.texts[1] == "AI2 engineer Joel lives in Seattle ."
  assert examples.line_numbers == [3, 13]


def test_alignment_puts_each_tag_on_the_first_sub_word():
  cls, sep = 2, 3
  # Word pieces: a one-piece word, a three-piece word, a word with no
  # pieces, a one-piece word.
  ids, labels, positions = tc.align_labels(
      [[5], [6, 7, 8], [], [9]], [1, 2, 3, 0], 16, cls, sep
  )
  assert ids == [cls, 5, 6, 7, 8, 9, sep]
  assert labels == [IGNORE, 1, 2, IGNORE, IGNORE, 0, IGNORE]
  assert positions == [1, 2, -1, 5]
  # max_seq_length 5 leaves 3 sub-words: the second word is cut after two
  # pieces (its tag stays on the first), the last word falls off.
  ids, labels, positions = tc.align_labels(
      [[5], [6, 7, 8], [], [9]], [1, 2, 3, 0], 5, cls, sep
  )
  assert ids == [cls, 5, 6, 7, sep]
  assert labels == [IGNORE, 1, 2, IGNORE, IGNORE]
  assert positions == [1, 2, -1, -1]


def test_alignment_with_the_model_tokenizer(tiny_bert_dir):
  from tf_finetune.models import backbone
  from tf_finetune.text.tokenization import TextEncoder

  tokenizer = backbone.load_tokenizer(tiny_bert_dir)
  encoder = TextEncoder.from_hf_tokenizer(tokenizer, 32)
  task = _task()
  rows = [
      {
          "tokens": ["Greatly", "boring", "films"],
          "tags": ["B-POS", "O", "B-NEG"],
      }
  ]
  from tf_finetune.data import readers

  examples = readers.Examples(
      "mem", ["Greatly boring films"], None, [rows[0]["tags"]], [1], rows
  )
  task.bind(TaskState(label_vocab=("B-NEG", "B-POS", "O")))
  encoded = task.encode(examples, encoder)
  pieces = tokenizer.convert_ids_to_tokens(encoded.input_ids[0].numpy())
  assert pieces == ["[CLS]", "great", "##ly", "boring", "film", "##s", "[SEP]"]
  assert encoded.label_ids[0].numpy().tolist() == [
      IGNORE,
      1,
      IGNORE,
      2,
      0,
      IGNORE,
      IGNORE,
  ]
  assert encoded.word_positions == [[1, 3, 4]]
  # The same alignment as Hugging Face's word_ids(): first sub-word of each
  # word.
  hf = tokenizer(rows[0]["tokens"], is_split_into_words=True)
  word_ids = hf.word_ids()
  firsts = [
      i
      for i, w in enumerate(word_ids)
      if w is not None and (i == 0 or word_ids[i - 1] != w)
  ]
  assert firsts == [1, 3, 4]


def test_entity_metrics_match_hand_computed_values():
  # IOB2: gold PER(0-1), LOC(3); predicted PER(0-1) only.
  scores = tc.entity_metrics(
      [["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O"]], "IOB2"
  )
  assert (scores["precision"], scores["recall"]) == (1.0, 0.5)
  assert scores["f1"] == pytest.approx(2 / 3)
  assert scores["per_type"]["LOC"]["recall"] == 0.0
  # IOB1: "I-PER B-PER" is two PER entities; gold has one PER and one LOC,
  # the prediction three entities of which LOC is right: P 1/3, R 1/2.
  scores = tc.entity_metrics(
      [["I-PER", "I-PER", "O", "I-LOC"]],
      [["I-PER", "B-PER", "O", "I-LOC"]],
      "IOB1",
  )
  assert scores["precision"] == pytest.approx(1 / 3)
  assert scores["recall"] == pytest.approx(1 / 2)
  assert scores["f1"] == pytest.approx(0.4)
  # IOBES: an entity must end with E-; "B-LOC I-LOC" never closes.
  scores = tc.entity_metrics(
      [["S-PER", "O", "B-LOC", "E-LOC"]],
      [["S-PER", "O", "B-LOC", "I-LOC"]],
      "IOBES",
  )
  assert (scores["precision"], scores["recall"]) == (1.0, 0.5)


def test_bad_token_input_names_file_and_line(tmp_path):
  jsonl = tmp_path / "tags.jsonl"
  jsonl.write_text(
      '{"tokens": ["a", "b"], "tags": ["O", "O"]}\n'
      '{"tokens": ["a", "b", "c"], "tags": ["O", "O"]}\n'
  )
  task = _task()
  with pytest.raises(ValueError, match=r"tags.jsonl:2: 2 tags for 3 tokens"):
    task.read(config_lib.DataConfig(train_file=str(jsonl)), "train")
  conll = tmp_path / "bad.conll"
  conll.write_text("EU B-ORG\nrejects O\n\nGerman\n")
  with pytest.raises(
      ValueError, match=r"bad.conll:4: expected a word and " "its tag"
  ):
    tc.read_conll(str(conll))
  scheme = tmp_path / "scheme.conll"
  scheme.write_text("EU B-ORG\nrejects O\n\nPeter S-PER\n")
  with pytest.raises(
      ValueError, match=r"scheme.conll:4: tag 'S-PER' is not " "an IOB2 tag"
  ):
    task.read(config_lib.DataConfig(train_file=str(scheme)), "train")
  # The line of the tag itself, not of its sentence.
  scheme.write_text("EU B-ORG\nrejects X-VERB\n")
  with pytest.raises(
      ValueError, match=r"scheme.conll:2: tag 'X-VERB' is " "not an IOB2 tag"
  ):
    task.read(config_lib.DataConfig(train_file=str(scheme)), "train")
  jsonl_scheme = tmp_path / "scheme.jsonl"
  jsonl_scheme.write_text(
      '{"tokens": ["a"], "tags": ["O"]}\n'
      '{"tokens": ["Peter"], "tags": ["PER"]}\n'
  )
  with pytest.raises(
      ValueError, match=r"scheme.jsonl:2: tag 'PER' is not " "an IOB2 tag"
  ):
    task.read(config_lib.DataConfig(train_file=str(jsonl_scheme)), "train")
  scheme.write_text("EU B-ORG\nrejects O\n\nPeter S-PER\n")
  with pytest.raises(
      ValueError, match=r"scheme.conll:4: tag 'S-PER' is not " "an IOB2 tag"
  ):
    task.read(config_lib.DataConfig(train_file=str(scheme)), "train")
  assert _task(tagging_scheme="IOBES").read(
      config_lib.DataConfig(train_file=str(scheme)), "train"
  ).labels == [["B-ORG", "O"], ["S-PER"]]
  with pytest.raises(
      ValueError,
      match=r"--tagging_scheme='BILOU' is not a "
      "tagging scheme this toolkit knows; use one of IOB1, "
      "IOB2, IOBES",
  ):
    config_lib.task_config(task="token_classification", tagging_scheme="BILOU")


def test_tfds_conll2003_maps_its_features():
  import tensorflow_datasets as tfds

  sentences = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
  ner_ids = [[3, 0, 7, 0], [1, 2]]  # B-ORG O B-MISC O / B-PER I-PER

  def as_dataset(self, *args, **kwargs):
    return tf.data.Dataset.from_generator(
        lambda: (
            {
                "tokens": words,
                "pos": [0] * len(words),
                "chunks": [0] * len(words),
                "ner": ner_ids[i],
            }
            for i, words in enumerate(sentences)
        ),
        output_signature=self.info.features.get_tensor_spec(),
    )

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    examples = _task().read(
        config_lib.DataConfig(tfds_name="conll2003"), "train"
    )
  assert [row["tokens"] for row in examples.rows] == sentences
  assert examples.labels == [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"]]
  assert examples.source == "conll2003[train]"


@pytest.fixture(scope="module")
def token_run(tmp_path_factory, tiny_bert_dir):
  directory = tmp_path_factory.mktemp("token")
  files = {
      "train": write_conll(
          str(directory / "train.conll"), make_tagged_sentences(192, seed=31)
      ),
      "validation": write_rows(
          str(directory / "validation.jsonl"),
          make_tagged_sentences(48, seed=32),
      ),
      "test": write_conll(
          str(directory / "test.conll"), make_tagged_sentences(48, seed=33)
      ),
  }
  return train_task(
      directory, tiny_bert_dir, files, ["--task=token_classification"], epochs=5
  )


def test_fit_reports_entity_scores(token_run):
  results = json.load(open(os.path.join(token_run, "eval_results.json")))
  test = results["test"]
  assert set(test["per_type"]) == {"NEG", "POS"}
  assert test["f1"] > 0.8, test
  assert test["word_accuracy"] > 0.9
  assert open(os.path.join(token_run, "label_vocab.txt")).read() == (
      "B-NEG\nB-POS\nI-POS\nO\n"
  )


def test_evaluate_binary_on_a_conll_file(token_run, tmp_path, capsys):
  path = write_conll(
      str(tmp_path / "more.conll"), make_tagged_sentences(16, seed=34)
  )
  assert (
      run_binary(
          evaluate,
          [
              f"--model_dir={token_run}",
              f"--test_file={path}",
              "--split_name=more",
          ],
      )
      == 0
  )
  assert "more entity F1:" in capsys.readouterr().out


def test_export_tags_raw_text_with_character_offsets(token_run, tmp_path):
  texts = ["The great film was boring!", "café: awful", ""]
  export_dir = serving.latest_version_dir(os.path.join(token_run, "export"))
  script = f"""
import json
import tensorflow as tf
import tensorflow_text
model = tf.saved_model.load({export_dir!r})
out = model.signatures["serving_default"](text=tf.constant({texts!r}))
print(json.dumps({{name: value.numpy().tolist() if value.dtype != tf.string
                   else [[w.decode() for w in row] for row in
                         value.numpy()]
                   for name, value in out.items()}}))
"""
  result = run_python(["-c", script])
  assert result.returncode == 0, result.stderr[-2000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  assert served["num_words"] == [6, 3, 0]
  assert served["words"][0] == ["The", "great", "film", "was", "boring", "!"]
  assert served["start"][0] == [0, 4, 10, 15, 19, 25]
  assert served["end"][0] == [3, 9, 14, 18, 25, 26]
  # Character (not byte) offsets: "é" is two bytes in UTF-8.
  assert served["words"][1][:3] == ["café", ":", "awful"]
  assert served["start"][1][:3] == [0, 4, 6]
  assert served["end"][1][:3] == [4, 5, 11]
  for text, words, starts, ends in zip(
      texts, served["words"], served["start"], served["end"]
  ):
    for word, start, end in zip(words, starts, ends):
      if word:
        assert text[start:end] == word
  assert served["tags"][0][1:3] == ["B-POS", "I-POS"]
  assert served["tags"][0][4] == "B-NEG"
  assert served["tags"][1][2] == "B-NEG"

  inputs = write_rows(str(tmp_path / "in.jsonl"), [{"text": texts[0]}])
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
  assert row["predicted_tags"] == served["tags"][0]
  assert row["offsets"][4] == [19, 25]


def test_export_marks_words_past_the_sequence_limit(token_run):
  trained = artifacts.load_trained(token_run)
  server = trained.task.server(trained)
  long_text = " ".join(["film"] * 40)  # 40 sub-words > 32 - 2.
  out = server.serve(tf.constant([long_text, "good"]))
  tags = out["tags"].numpy()
  assert int(out["num_words"][0]) == 40
  assert all(tag != b"" for tag in tags[0][:30])
  assert all(tag == b"" for tag in tags[0][30:])
  assert tags[1][0] != b"" and all(tag == b"" for tag in tags[1][1:])
