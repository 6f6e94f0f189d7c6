"""Few training examples: --reinit_layers, --min_steps and --recipe."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import transformers

from conftest import make_tiny_bert, run_binary, write_rows
from tf_finetune import config as config_lib
from tf_finetune import tasks, train, training
from tf_finetune.tasks import encoder
from tf_finetune.models import backbone as backbone_lib
from tf_finetune.tasks.base import PreparedData, TaskState
from tf_finetune.training import recipes

# The re-initialization's std, in the checkpoint's config; its weights are
# moved away from anything an initializer gives (noise of std 0.1 on every
# weight: biases are not 0, LayerNorm scales not 1).
INITIALIZER_RANGE = 0.05
NOISE = 0.1


def _perturb(model, seed):
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    variable.assign_add(
        rng.normal(0.0, NOISE, variable.shape).astype(np.float32)
    )


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
  """The tiny BERT with every weight perturbed and initializer_range 0.05."""
  directory = make_tiny_bert(str(tmp_path_factory.mktemp("perturbed")))
  model = transformers.TFBertModel.from_pretrained(directory)
  _perturb(model, seed=0)
  model.config.initializer_range = INITIALIZER_RANGE
  model.save_pretrained(directory)
  return directory


def _run_config(model_dir="unused", *, model=None, data=None, **train_options):
  options = dict(
      learning_rate=1e-3,
      warmup_ratio=0.0,
      early_stopping_patience=0,
      precision="fp32",
      export=False,
  )
  options.update(train_options)
  return config_lib.RunConfig(
      model_dir=str(model_dir),
      data=config_lib.DataConfig(
          **{
              "train_file": "unused.csv",
              "max_seq_length": 32,
              "batch_size": 16,
              **(data or {}),
          }
      ),
      model=config_lib.ModelConfig(dropout=0.0, **(model or {})),
      train=config_lib.TrainConfig(**options),
  )


def _built(model_path, *, pooling, **train_options):
  """The classifier as training builds it (task.build_model)."""
  config = _run_config(
      model={"model": model_path, "pooling": pooling}, **train_options
  )
  task = tasks.get_task(config.task)
  task.bind(TaskState(label_vocab=("0", "1")))
  tokenizer = backbone_lib.load_tokenizer(model_path)
  prepared = PreparedData(config, {}, {}, tokenizer, None, task)
  with training.precision_policy("fp32"):
    return task.build_model(config, prepared, total_steps=10, steps_per_epoch=1)


def _by_name(variables, root):
  """Values by the name below the main layer ("encoder/layer_._1/...")."""
  return {v.name.split(f"/{root}/", 1)[1]: v.numpy() for v in variables}


def _check_reinitialized(name, value, before):
  """`value` is what the config's initialization gives, far from `before`."""
  short = name.split("/")[-1]
  if short.startswith("kernel"):
    assert np.std(value) == pytest.approx(INITIALIZER_RANGE, rel=0.1), name
    assert abs(np.mean(value)) < 0.1 * INITIALIZER_RANGE, name
    assert np.std(value - before) > NOISE, name  # A new draw.
  elif short.startswith(("bias", "beta")):
    np.testing.assert_array_equal(value, 0.0, err_msg=name)
  elif short.startswith("gamma"):
    np.testing.assert_array_equal(value, 1.0, err_msg=name)
  else:
    raise AssertionError(f"unexpected variable {name}")


@pytest.mark.parametrize("pooling", ["pooler", "mean"])
def test_reinit_layers_restart_the_top_layers_from_the_config(
    checkpoint_dir, pooling
):
  """--reinit_layers=1 on a 2-layer checkpoint: the top layer (and the
  pooler, when the head reads it) starts as the config initializes a new
  model; the bottom layer and the embeddings are the checkpoint's."""
  model = _built(checkpoint_dir, pooling=pooling, reinit_layers=1)
  built = _by_name(model.backbone.weights, "bert")
  pretrained = _by_name(
      transformers.TFBertModel.from_pretrained(checkpoint_dir).weights, "bert"
  )
  assert built.keys() == pretrained.keys()
  reinitialized = 0
  for name, value in built.items():
    top = name.startswith("encoder/layer_._1/") or (
        pooling == "pooler" and name.startswith("pooler/")
    )
    if top:
      _check_reinitialized(name, value, pretrained[name])
      reinitialized += 1
    else:
      np.testing.assert_array_equal(value, pretrained[name], err_msg=name)
  assert reinitialized == 16 + 2 * (pooling == "pooler")
  # The optimizer's moving averages and L2-SP start from the same values;
  # the run's seed makes them the same in a resumed run.
  again = _by_name(
      _built(checkpoint_dir, pooling=pooling, reinit_layers=1).backbone.weights,
      "bert",
  )
  for name, value in built.items():
    np.testing.assert_array_equal(again[name], value, err_msg=name)


TINY = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)

FAMILY_CONFIGS = {
    "distilbert": lambda: transformers.DistilBertConfig(
        vocab_size=50, dim=32, n_layers=2, n_heads=2, hidden_dim=64
    ),
    "roberta": lambda: transformers.RobertaConfig(
        vocab_size=50, hidden_size=32, **TINY
    ),
    # LayerNorm scales named weight (MobileBERT's NoNorm).
    "mobilebert": lambda: transformers.MobileBertConfig(
        vocab_size=50,
        embedding_size=16,
        hidden_size=32,
        intra_bottleneck_size=16,
        true_hidden_size=16,
        num_feedforward_networks=1,
        **TINY,
    ),
    # Attention biases named q_bias and v_bias.
    "deberta": lambda: transformers.DebertaConfig(
        vocab_size=50, hidden_size=32, **TINY
    ),
}


@pytest.mark.parametrize("model_type", sorted(FAMILY_CONFIGS))
def test_reinit_layers_in_other_families(model_type):
  config = FAMILY_CONFIGS[model_type]()
  config.initializer_range = INITIALIZER_RANGE
  backbone = transformers.TFAutoModel.from_config(config)
  backbone(backbone.dummy_inputs)
  _perturb(backbone, seed=1)
  before = {v.name: v.numpy() for v in backbone.weights}
  top = backbone_lib.encoder_layers(backbone)[-1]
  names = backbone_lib.reinitialize_top_layers(
      backbone, 1, include_pooler=False, seed=3
  )
  assert sorted(names) == sorted(v.name for v in top.weights)
  for variable in backbone.weights:
    value, name = variable.numpy(), variable.name
    if name not in names:
      np.testing.assert_array_equal(value, before[name], err_msg=name)
    elif len(value.shape) >= 2:
      assert np.std(value) == pytest.approx(INITIALIZER_RANGE, rel=0.15), name
    elif name.endswith(("gamma:0", "LayerNorm/weight:0")):
      np.testing.assert_array_equal(value, 1.0, err_msg=name)
    else:
      np.testing.assert_array_equal(value, 0.0, err_msg=name)


def test_reinit_layers_refuses_a_shared_layer_and_too_many_layers(
    tiny_bert_dir,
):
  albert = transformers.TFAutoModel.from_config(
      transformers.AlbertConfig(
          vocab_size=50, embedding_size=16, hidden_size=32, **TINY
      )
  )
  albert(albert.dummy_inputs)
  with pytest.raises(ValueError, match=r"^--reinit_layers=1 .*albert.*shared"):
    backbone_lib.reinitialize_top_layers(
        albert, 1, include_pooler=False, seed=0
    )
  with pytest.raises(
      ValueError, match=r"^--reinit_layers=3 is more than the encoder's 2"
  ):
    _built(tiny_bert_dir, pooling="mean", reinit_layers=3)
  with pytest.raises(ValueError, match=r"^--reinit_layers=-1 must be"):
    config_lib.TrainConfig(reinit_layers=-1)


def test_min_steps_plan():
  assert recipes.extended_epochs(3, 112, 1000) == 9
  assert recipes.extended_epochs(3, 112, 336) == 3  # Already enough.
  assert recipes.extended_epochs(3, 112, 0) == 3
  config = _run_config(model={"model": "unused"}, epochs=2, min_steps=30)
  plan = training.plan_batches(config, 192, tf.distribute.get_strategy())
  # 192 examples / 16 = 12 steps per epoch; 2 x 12 < 30 -> 3 epochs.
  assert (plan.steps_per_epoch, plan.epochs, plan.total_steps) == (12, 3, 36)
  with pytest.raises(ValueError, match=r"^--min_steps=-5 must be"):
    config_lib.TrainConfig(min_steps=-5)


def _scalars(log_dir, tag):
  """{step: value} of a scalar in the TensorBoard event files of log_dir."""
  found = {}
  for name in sorted(os.listdir(log_dir)):
    for record in tf.data.TFRecordDataset(os.path.join(log_dir, name)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag == tag:
          found[event.step] = float(tf.make_ndarray(value.tensor))
  return found


def _train_never_improving(tmp_path, model, files, **train_options):
  """Trains with early stopping at patience 1 on a validation loss that no
  epoch after the first counted improves (by 10)."""
  return training.train(
      _run_config(
          tmp_path / "run",
          model={"model": model, "pooling": "mean"},
          data={
              "train_file": files["train"],
              "validation_file": files["validation"],
          },
          early_stopping_metric="val_loss",
          early_stopping_patience=1,
          early_stopping_min_delta=10.0,
          **train_options,
      )
  )


def test_min_steps_trains_longer_under_early_stopping(
    tmp_path, tiny_bert_dir, sentiment_files
):
  """--epochs=1 --min_steps=30 with 12 steps per epoch plans 3 epochs and
  a linear decay over 36 steps; early stopping (patience 1, and no epoch
  after the first improves by 10) still ends the run after epoch 2."""
  summary = _train_never_improving(
      tmp_path,
      tiny_bert_dir,
      sentiment_files,
      epochs=1,
      min_steps=30,
      schedule="linear",
      log_every_steps=1,
  )
  assert summary.epochs_run == 2  # More than --epochs=1...
  assert summary.early_stopping_fired  # ...fewer than the 3 planned.
  assert summary.global_steps == 24
  rates = _scalars(str(tmp_path / "run" / "logs" / "train"), "learning_rate")
  # Update k used 1e-3 x (1 - (k - 1) / 36); a schedule over the 12 steps
  # of --epochs=1 would be at 0 from update 13 on.
  for step in (1, 12, 13, 24):
    assert rates[step] == pytest.approx(1e-3 * (1 - (step - 1) / 36)), step


def test_early_stopping_does_not_judge_the_warmup(
    tmp_path, tiny_bert_dir, sentiment_files
):
  """6 epochs of 12 steps, 36 of them warmup: epochs 1-3 end inside it and
  are not counted, so early stopping (patience 1, no epoch improving by
  10) keeps epoch 4 as its first value and stops after epoch 5, where it
  stops after epoch 2 when the warmup is counted."""
  summary = _train_never_improving(
      tmp_path, tiny_bert_dir, sentiment_files, epochs=6, warmup_steps=36
  )
  assert summary.early_stopping_fired
  assert (summary.epochs_run, summary.global_steps) == (5, 60)


def _recipe_config(model, **train_options):
  return _run_config(
      model={"model": model}, recipe="recommended", **train_options
  )


def test_recommended_recipe_rule(tiny_bert_dir):
  chosen = lambda config: {  # noqa: E731
      name: getattr(config.train, name) for name in config_lib.RECIPE_SETTINGS
  }
  few = recipes.resolve(_recipe_config(tiny_bert_dir), 500)
  # 2 epochs of 8,927 examples at batch 32 are 558 updates: still too few.
  larger = recipes.resolve(_recipe_config(tiny_bert_dir), 8927)
  assert chosen(few) == {"min_steps": 1000}
  assert chosen(larger) == {"min_steps": 1000}
  # A setting given is kept, also when it equals the plain default.
  given = recipes.resolve(_recipe_config(tiny_bert_dir, min_steps=0), 10)
  assert chosen(given) == {"min_steps": 0}
  # Without a recipe an unset setting is its plain default.
  assert chosen(_run_config(model={"model": tiny_bert_dir})) == {"min_steps": 0}
  # The recipe chooses nothing else: no layer re-initialized, no average.
  assert (few.train.reinit_layers, few.train.ema_decay) == (0, 0.0)


def test_recommended_recipe_pools_the_mean_of_the_tokens(tiny_bert_dir):
  """An unset --pooling is the mean under the recipe and auto without it;
  a --pooling given is kept. The model built from the recipe's config
  pools the mean: its logits do not depend on the pooler's weights, which
  the pooler head (auto, on BERT) reads."""
  recipe = recipes.resolve(_recipe_config(tiny_bert_dir), 500)
  assert recipe.model.pooling == "mean"
  given = recipes.resolve(
      _run_config(
          model={"model": tiny_bert_dir, "pooling": "cls"}, recipe="recommended"
      ),
      500,
  )
  assert given.model.pooling == "cls"
  plain = _run_config(model={"model": tiny_bert_dir})
  assert plain.model.pooling == "auto"
  inputs = {
      "input_ids": tf.constant([[2, 5, 6, 7, 3, 0]]),
      "attention_mask": tf.constant([[1, 1, 1, 1, 1, 0]]),
      "token_type_ids": tf.zeros([1, 6], tf.int32),
  }

  def logits_moved_by_the_pooler(config):
    model = encoder.build_classifier(
        backbone_lib.load_backbone(tiny_bert_dir), 2, config.model, seed=0
    )
    before = model(inputs).numpy()
    pooler = [w for w in model.trainable_weights if "pooler" in w.name]
    assert pooler
    for weight in pooler:
      weight.assign(weight + 0.5)
    return np.abs(model(inputs).numpy() - before).max()

  assert logits_moved_by_the_pooler(recipe) == 0.0
  assert logits_moved_by_the_pooler(plain) > 1e-3


def test_recipe_from_the_command_line_keeps_the_flags_given(
    tmp_path, tiny_bert_dir, sentiment_files
):
  """192 training examples: the recipe would ask for 1,000 updates; the
  --min_steps=24 given is kept, and the run trains the 24 steps (2 epochs
  of 12, not --epochs=1)."""
  model_dir = tmp_path / "run"
  code = run_binary(
      train,
      [
          f"--model={tiny_bert_dir}",
          f"--train_file={sentiment_files['train']}",
          f"--model_dir={model_dir}",
          "--recipe=recommended",
          "--min_steps=24",
          "--epochs=1",
          "--batch_size=16",
          "--max_seq_length=32",
          "--pooling=mean",
          "--noexport",
      ],
  )
  assert code == 0
  with open(model_dir / "config.json", encoding="utf-8") as f:
    saved = json.load(f)["train"]
  assert (saved["recipe"], saved["min_steps"]) == ("recommended", 24)
  with open(model_dir / "summary.json", encoding="utf-8") as f:
    summary = json.load(f)
  assert (summary["epochs_run"], summary["global_steps"]) == (2, 24)


def _length_rule_run(
    tmp_path, model, long_texts, *, pairs=False, **task_options
):
  """prepare() of a --recipe=recommended run on 10 training texts, 16
  tokens at most: `long_texts` of them 30 words long, ending in "dull"."""
  long_text = " ".join(["good"] * 29 + ["dull"])
  rows = [
      {
          "text": long_text if i < long_texts else "good film",
          "pair": "fine",
          "label": str(i % 2),
      }
      for i in range(10)
  ]
  path = write_rows(str(tmp_path / f"train{long_texts}.csv"), rows)
  config = config_lib.RunConfig(
      model_dir=str(tmp_path / "unused"),
      data=config_lib.DataConfig(
          train_file=path,
          text_column="text",
          text_pair_column="pair" if pairs else None,
          label_column="label",
          max_seq_length=16,
      ),
      model=config_lib.ModelConfig(model=model),
      train=config_lib.TrainConfig(recipe="recommended"),
      task=config_lib.task_config(task="classification", **task_options),
  )
  return training.prepare(config)


def test_recipe_keeps_both_ends_when_most_training_texts_are_long(
    tmp_path, tiny_bert_dir, monkeypatch
):
  """6 of 10 training texts longer than --max_seq_length: the recipe keeps
  the head, whose 4 tokens (a quarter of 14) are fewer than the 128 it
  asks of head+tail; asking 4, it chooses --truncation=head_tail, and the
  texts are encoded so (the last word before [SEP] is the text's last,
  "dull"); 5 of 10, a given --truncation and sentence pairs keep what
  they had."""
  vocab = backbone_lib.load_tokenizer(tiny_bert_dir).vocab
  dull, sep = vocab["dull"], vocab["[SEP]"]

  def last_words(prepared):
    return {int(ids[-2]) for ids in prepared.encoded["train"].input_ids[:5]}

  short_head = _length_rule_run(tmp_path, tiny_bert_dir, 6)
  assert short_head.config.task.truncation == "head"
  assert dull not in last_words(short_head)
  monkeypatch.setattr(recipes, "HEAD_TAIL_MIN_HEAD", 4)
  most_long = _length_rule_run(tmp_path, tiny_bert_dir, 6)
  assert most_long.config.task.truncation == "head_tail"
  assert most_long.task.config.truncation == "head_tail"
  assert last_words(most_long) == {dull}
  assert {int(ids[-1]) for ids in most_long.encoded["train"].input_ids} == {sep}
  half_long = _length_rule_run(tmp_path, tiny_bert_dir, 5)
  assert half_long.config.task.truncation == "head"
  assert dull not in last_words(half_long)
  given = _length_rule_run(tmp_path, tiny_bert_dir, 6, truncation="tail")
  assert given.config.task.truncation == "tail"
  assert last_words(given) == {dull}
  pairs = _length_rule_run(tmp_path, tiny_bert_dir, 6, pairs=True)
  assert pairs.config.task.truncation == "head"
  # Streamed texts are not measured ahead: head.
  streamed = training.prepare(
      dataclasses.replace(
          half_long.config,
          data=dataclasses.replace(half_long.config.data, streaming=True),
          task=config_lib.task_config(task="classification"),
      )
  )
  assert streamed.config.task.truncation == "head"
  # Without a recipe an unset --truncation is head.
  assert (
      config_lib.RunConfig(
          model_dir="unused",
          data=config_lib.DataConfig(train_file="unused.csv"),
          model=config_lib.ModelConfig(model="unused"),
      ).task.truncation
      == "head"
  )
