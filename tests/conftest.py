"""Shared fixtures: a tiny BERT built in the test, tiny data sets.

No test downloads anything: the model is a 2-layer, 64-wide BERT with a
vocabulary made here, saved in the Hugging Face layout (config.json,
tf_model.h5, vocab.txt, tokenizer files) like a real checkpoint.
"""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices so MirroredStrategy can be tested on one CPU. This
# must happen before TensorFlow initializes its devices.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

POSITIVE_WORDS = ["good", "great", "wonderful", "fun", "moving", "superb"]
NEGATIVE_WORDS = ["bad", "dull", "boring", "awful", "tedious", "weak"]
NEUTRAL_WORDS = [
    "the",
    "movie",
    "film",
    "plot",
    "actor",
    "story",
    "was",
    "is",
    "a",
    "and",
    "this",
    "with",
    "very",
    "quite",
]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PIECES = ["##s", "##ly", "##ing", "##ed", "##er"]


def make_vocab() -> list[str]:
  letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
  punctuation = list(".,!?'-$%()")
  words = POSITIVE_WORDS + NEGATIVE_WORDS + NEUTRAL_WORDS
  tokens = (
      SPECIAL_TOKENS
      + punctuation
      + letters
      + ["##" + letter for letter in letters]
      + PIECES
      + sorted(words)
      + [str(d) for d in range(10)]
  )
  return list(dict.fromkeys(tokens))


def make_tiny_bert(directory: str, *, seed: int = 0) -> str:
  """Saves a random 2-layer BERT and its tokenizer in HF layout."""
  import transformers

  os.makedirs(directory, exist_ok=True)
  vocab = make_vocab()
  vocab_file = os.path.join(directory, "vocab.txt")
  with open(vocab_file, "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  tokenizer = transformers.BertTokenizerFast(
      vocab_file, do_lower_case=True, model_max_length=64
  )
  tokenizer.save_pretrained(directory)
  config = transformers.BertConfig(
      vocab_size=len(vocab),
      hidden_size=64,
      num_hidden_layers=2,
      num_attention_heads=2,
      intermediate_size=128,
      max_position_embeddings=64,
      hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0,
  )
  tf.random.set_seed(seed)
  model = transformers.TFBertModel(config)
  model(model.dummy_inputs)
  model.save_pretrained(directory)
  return directory


def make_sentiment_rows(count: int, *, seed: int) -> list[dict]:
  """Learnable sentiment: the label is the polarity of the opinion word."""
  rng = random.Random(seed)
  rows = []
  for _ in range(count):
    positive = rng.random() < 0.5
    opinion = rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
    words = rng.sample(NEUTRAL_WORDS, rng.randint(1, 8))
    words.insert(rng.randint(0, len(words)), opinion)
    rows.append(
        {
            "text": " ".join(words),
            "label": "positive" if positive else "negative",
        }
    )
  return rows


def write_rows(path: str, rows: list[dict]) -> str:
  if path.endswith(".jsonl"):
    with open(path, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")
    return path
  delimiter = "\t" if path.endswith(".tsv") else ","
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
    writer.writeheader()
    writer.writerows(rows)
  return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
  return make_tiny_bert(str(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory) -> dict[str, str]:
  directory = tmp_path_factory.mktemp("sentiment")
  return {
      split: write_rows(
          str(directory / f"{split}.csv"), make_sentiment_rows(count, seed=seed)
      )
      for split, count, seed in (
          ("train", 192, 1),
          ("validation", 64, 2),
          ("test", 64, 3),
      )
  }


def run_python(
    args: list[str], *, timeout: int = 300, env=None, cwd=None
) -> subprocess.CompletedProcess:
  """Runs `python args...` in a fresh process and returns the result."""
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run(
      [sys.executable, *args],
      capture_output=True,
      text=True,
      timeout=timeout,
      env=full_env,
      cwd=cwd,
  )


def run_binary(module, args: list[str]) -> int:
  """Runs a binary's `run()` in this process with patched argv.

  Flags of earlier binaries are removed first, so each run sees exactly the
  flags (and defaults) its own binary defines. Returns the exit code.
  """
  from absl import flags

  flag_values = flags.FLAGS
  ours = flag_values.flags_by_module_dict().get(
      "tf_finetune.flag_definitions", []
  )
  for flag in list(ours):
    if flag.name in flag_values:
      delattr(flag_values, flag.name)
  flag_values.unparse_flags()
  argv = [module.__name__] + list(args)
  old_argv = sys.argv
  sys.argv = argv
  try:
    module.run()
  except SystemExit as e:
    return 0 if e.code is None else int(e.code)
  finally:
    sys.argv = old_argv
  return 0


TINY_TRAIN_FLAGS = [
    "--max_seq_length=32",
    "--batch_size=16",
    "--epochs=4",
    "--learning_rate=3e-3",
    "--warmup_ratio=0.1",
    "--pooling=mean",
    "--early_stopping_patience=0",
    "--log_every_steps=5",
]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_bert_dir, sentiment_files) -> str:
  """A model_dir trained (and exported) by the train binary."""
  from tf_finetune import train

  model_dir = str(tmp_path_factory.mktemp("run") / "model")
  code = run_binary(
      train,
      [
          f"--model={tiny_bert_dir}",
          f"--train_file={sentiment_files['train']}",
          f"--validation_file={sentiment_files['validation']}",
          f"--test_file={sentiment_files['test']}",
          f"--model_dir={model_dir}",
      ]
      + TINY_TRAIN_FLAGS,
  )
  assert code == 0
  return model_dir


def make_score_rows(count: int, *, seed: int) -> list[dict]:
  """Learnable regression: the score is the number of positive words (0-3)."""
  rng = random.Random(seed)
  rows = []
  for _ in range(count):
    score = rng.randint(0, 3)
    words = rng.sample(NEUTRAL_WORDS, rng.randint(1, 5))
    words += rng.sample(POSITIVE_WORDS, score)
    rng.shuffle(words)
    rows.append({"text": " ".join(words), "label": float(score)})
  return rows


def make_multi_label_rows(count: int, *, seed: int) -> list[dict]:
  """Learnable multi-label: "praise" with a positive word, "complaint" with
  a negative word, both, or neither; labels joined by "|"."""
  rng = random.Random(seed)
  rows = []
  for _ in range(count):
    words = rng.sample(NEUTRAL_WORDS, rng.randint(1, 5))
    labels = []
    if rng.random() < 0.5:
      words.append(rng.choice(POSITIVE_WORDS))
      labels.append("praise")
    if rng.random() < 0.5:
      words.append(rng.choice(NEGATIVE_WORDS))
      labels.append("complaint")
    rng.shuffle(words)
    rows.append({"text": " ".join(words), "labels": "|".join(labels)})
  return rows


def make_tagged_sentences(count: int, *, seed: int) -> list[dict]:
  """Learnable IOB2 tags: opinion words are entities; "great film" is a
  two-word B-POS I-POS entity."""
  rng = random.Random(seed)
  sentences = []
  for _ in range(count):
    tokens = rng.sample(NEUTRAL_WORDS, rng.randint(2, 6))
    tags = ["O"] * len(tokens)
    for _ in range(rng.randint(1, 2)):
      at = rng.randint(0, len(tokens))
      if rng.random() < 0.5:
        word = rng.choice(NEGATIVE_WORDS)
        tokens[at:at] = [word]
        tags[at:at] = ["B-NEG"]
      else:
        word = rng.choice(POSITIVE_WORDS)
        tokens[at:at] = [word, "film"]
        tags[at:at] = ["B-POS", "I-POS"]
    sentences.append({"tokens": tokens, "tags": tags})
  return sentences


def write_conll(path: str, sentences: list[dict]) -> str:
  """CoNLL-2003 layout: word POS chunk tag, -DOCSTART-, blank lines."""
  with open(path, "w", encoding="utf-8") as f:
    f.write("-DOCSTART- -X- -X- O\n\n")
    for sentence in sentences:
      for token, tag in zip(sentence["tokens"], sentence["tags"]):
        f.write(f"{token} NN I-NP {tag}\n")
      f.write("\n")
  return path


def train_task(
    module_dir, tiny_bert_dir, files: dict, task_flags: list, *, epochs: int = 4
) -> str:
  """Trains and exports a task with the train binary; returns model_dir."""
  from tf_finetune import train

  model_dir = str(module_dir / "model")
  args = [
      f"--model={tiny_bert_dir}",
      f"--model_dir={model_dir}",
      f"--train_file={files['train']}",
      f"--validation_file={files['validation']}",
  ]
  if "test" in files:
    args.append(f"--test_file={files['test']}")
  flags = [
      flag for flag in TINY_TRAIN_FLAGS if not flag.startswith("--epochs")
  ] + [f"--epochs={epochs}"]
  code = run_binary(train, args + flags + list(task_flags))
  assert code == 0
  return model_dir


def make_length_server(scale: float = 1.0):
  """A real export without a model: answers each text's length x `scale`."""
  from tf_finetune import serving

  class LengthServer(serving.Server):

    def __init__(self):
      super().__init__(task_name="length")
      self.scale = tf.Variable(scale, dtype=tf.float32)

    def serve(self, text):
      length = tf.cast(tf.strings.length(text), tf.float32)
      return {"length": length * self.scale}

  return LengthServer()


def export_length_server(export_base: str, scale: float = 1.0) -> str:
  """Exports `make_length_server(scale)`; returns the version directory."""
  from tf_finetune import serving

  return serving.export_server(
      make_length_server(scale),
      export_base=export_base,
      sample_inputs={"text": ["a", "bb", "a longer text"]},
      checked_output="length",
  )


# Killed runs.
def kill_when_logged(args, marker, *, timeout=240):
  """Runs `args` until a stderr line contains `marker`, then SIGKILLs it.

  Returns the stderr read so far; fails if the marker never came.
  """
  process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + timeout
  seen = []
  try:
    for line in process.stderr:
      seen.append(line)
      if marker in line:
        process.send_signal(signal.SIGKILL)
        break
      assert time.time() < deadline, f"{marker!r} was not logged in time"
    else:
      pytest.fail(
          f"the run ended before logging {marker!r}:\n" + "".join(seen[-30:])
      )
  finally:
    process.kill()
    process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL
  return "".join(seen)


def final_weights(model_dir):
  """Variable name -> value of the run's checkpoints/final (no optimizer)."""
  reader = tf.train.load_checkpoint(
      str(model_dir / "checkpoints/final/weights")
  )
  return {
      name: reader.get_tensor(name)
      for name in reader.get_variable_to_shape_map()
      if "OPTIMIZER" not in name and name.endswith("VARIABLE_VALUE")
  }
