"""Translation from pretrained checkpoints: encoder-decoders warm-started
from a BERT encoder (BERT2BERT and BERT2BERT-share), and pretrained T5,
BART and Marian checkpoints, each fine-tuned and exported with its own
tokenizer in the graph.

Every checkpoint is a tiny model built here from its config and saved as a
user's --model directory would be, with a real tokenizer of its type
trained here on the test's sentences (WordPiece, byte-level BPE,
SentencePiece).
"""

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_binary, run_python, write_rows
from tf_finetune import artifacts, config as config_lib, serving, tasks
from tf_finetune.tasks import translation
from tf_finetune.text import detokenization
from test_translation import _RELOAD, make_parallel_rows

# Texts for the tokenizers beyond the parallel sentences: capitals,
# punctuation and contractions that decoding must put back together.
EXTRA_TEXTS = [
    "Hello, world! It's a test: 1, 2 and 3?",
    "I don't know if they're John's (or ours).",
    "naïve café, 50% off!",
]


def _sentences(count: int = 200) -> list[str]:
  rows = make_parallel_rows(count, seed=1)
  return [r["source"] for r in rows] + [r["target"] for r in rows] + EXTRA_TEXTS


def make_tiny_bert_checkpoint(directory: str) -> str:
  """A 2-layer BERT with a WordPiece vocabulary trained on both languages."""
  import tokenizers
  import transformers

  os.makedirs(directory, exist_ok=True)
  wordpiece = tokenizers.BertWordPieceTokenizer(lowercase=True)
  wordpiece.train_from_iterator(_sentences(), vocab_size=200, min_frequency=1)
  wordpiece.save_model(directory)
  tokenizer = transformers.BertTokenizerFast(
      os.path.join(directory, "vocab.txt"),
      do_lower_case=True,
      model_max_length=64,
  )
  tokenizer.save_pretrained(directory)
  config = transformers.BertConfig(
      vocab_size=len(tokenizer),
      hidden_size=32,
      num_hidden_layers=2,
      num_attention_heads=2,
      intermediate_size=64,
      max_position_embeddings=64,
      hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0,
  )
  tf.random.set_seed(0)
  bert = transformers.TFBertModel(config)
  bert(bert.dummy_inputs)
  bert.save_pretrained(directory)
  return directory


def make_tiny_bart_checkpoint(directory: str) -> str:
  """A 1+1-layer BART with a byte-level BPE vocabulary."""
  import tokenizers
  import transformers

  os.makedirs(directory, exist_ok=True)
  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator(
      _sentences(),
      vocab_size=400,
      min_frequency=1,
      special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
  )
  bpe.save_model(directory)
  tokenizer = transformers.BartTokenizerFast(
      vocab_file=os.path.join(directory, "vocab.json"),
      merges_file=os.path.join(directory, "merges.txt"),
      model_max_length=64,
  )
  tokenizer.save_pretrained(directory)
  config = transformers.BartConfig(
      vocab_size=len(tokenizer),
      d_model=16,
      encoder_layers=1,
      decoder_layers=1,
      encoder_attention_heads=2,
      decoder_attention_heads=2,
      encoder_ffn_dim=32,
      decoder_ffn_dim=32,
      max_position_embeddings=64,
      dropout=0.0,
      pad_token_id=tokenizer.pad_token_id,
      bos_token_id=tokenizer.bos_token_id,
      eos_token_id=tokenizer.eos_token_id,
      decoder_start_token_id=tokenizer.eos_token_id,
      forced_eos_token_id=None,
  )
  tf.random.set_seed(0)
  bart = transformers.TFBartForConditionalGeneration(config)
  bart(bart.dummy_inputs)
  bart.save_pretrained(directory)
  return directory


def make_tiny_t5_checkpoint(directory: str) -> str:
  """A 1+1-layer T5 with a unigram SentencePiece vocabulary.

  Its tokenizer.json pre-tokenizes with a lone Metaspace that always puts
  "▁" before the text, which the in-graph SentencePiece reproduces. (What
  T5TokenizerFast converts from this small model by default, Metaspace
  with prepend_scheme "never", is refused at export with that reason.)
  """
  import transformers
  from tokenizers import decoders, pre_tokenizers

  os.makedirs(directory, exist_ok=True)
  translation.SentencePieceVocab.train(_sentences(), 120).save(directory)
  tokenizer = transformers.T5TokenizerFast(
      vocab_file=os.path.join(directory, translation.SPIECE_FILENAME),
      extra_ids=0,
      model_max_length=64,
      legacy=True,
  )
  backend = tokenizer.backend_tokenizer
  backend.pre_tokenizer = pre_tokenizers.Metaspace(
      replacement="\u2581", prepend_scheme="always"
  )
  backend.decoder = decoders.Metaspace(
      replacement="\u2581", prepend_scheme="always"
  )
  tokenizer.save_pretrained(directory)
  config = transformers.T5Config(
      vocab_size=len(tokenizer),
      d_model=16,
      d_kv=8,
      d_ff=32,
      num_layers=1,
      num_heads=2,
      dropout_rate=0.0,
      pad_token_id=tokenizer.pad_token_id,
      eos_token_id=tokenizer.eos_token_id,
      decoder_start_token_id=tokenizer.pad_token_id,
  )
  tf.random.set_seed(0)
  t5 = transformers.TFT5ForConditionalGeneration(config)
  t5(t5.dummy_inputs)
  t5.save_pretrained(directory)
  return directory


def make_tiny_marian_checkpoint(directory: str) -> str:
  """A 1+1-layer Marian with its two SentencePiece models and vocab.json."""
  import sentencepiece
  import transformers

  os.makedirs(directory, exist_ok=True)
  rows = make_parallel_rows(200, seed=1)
  for name, texts in (
      ("source.spm", [r["source"] for r in rows]),
      ("target.spm", [r["target"] for r in rows]),
  ):
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=os.path.join(directory, name[:-4]),
        vocab_size=60,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    os.rename(
        os.path.join(directory, name[:-4] + ".model"),
        os.path.join(directory, name),
    )
  pieces = ["</s>", "<unk>", "<pad>"]
  for name in ("source.spm", "target.spm"):
    processor = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(directory, name)
    )
    pieces += [
        processor.id_to_piece(i) for i in range(processor.get_piece_size())
    ]
  vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
  with open(os.path.join(directory, "vocab.json"), "w") as f:
    json.dump(vocab, f)
  tokenizer = transformers.MarianTokenizer(
      os.path.join(directory, "source.spm"),
      os.path.join(directory, "target.spm"),
      os.path.join(directory, "vocab.json"),
      model_max_length=64,
  )
  tokenizer.save_pretrained(directory)
  config = transformers.MarianConfig(
      vocab_size=len(tokenizer),
      d_model=16,
      encoder_layers=1,
      decoder_layers=1,
      encoder_attention_heads=2,
      decoder_attention_heads=2,
      encoder_ffn_dim=32,
      decoder_ffn_dim=32,
      max_position_embeddings=64,
      pad_token_id=tokenizer.pad_token_id,
      eos_token_id=tokenizer.eos_token_id,
      decoder_start_token_id=tokenizer.pad_token_id,
  )
  tf.random.set_seed(0)
  marian = transformers.TFMarianMTModel(config)
  marian(marian.dummy_inputs)
  marian.save_pretrained(directory)
  return directory


@pytest.fixture(scope="module")
def bert_checkpoint(tmp_path_factory) -> str:
  return make_tiny_bert_checkpoint(str(tmp_path_factory.mktemp("bert")))


@pytest.fixture(scope="module")
def parallel_tsv(tmp_path_factory) -> dict:
  directory = tmp_path_factory.mktemp("parallel")
  return {
      split: write_rows(
          str(directory / f"{split}.tsv"), make_parallel_rows(count, seed=seed)
      )
      for split, count, seed in (("train", 160, 1), ("validation", 16, 2))
  }


def run_config(model_dir, train_file, model, **task) -> config_lib.RunConfig:
  train = task.pop("train", {})
  return config_lib.RunConfig(
      model_dir=str(model_dir),
      data=config_lib.DataConfig(train_file=train_file),
      model=config_lib.ModelConfig(model=model),
      task=config_lib.task_config(
          task="translation",
          max_source_length=16,
          max_target_length=16,
          **task,
      ),
      train=config_lib.TrainConfig(
          precision="fp32", warmup_ratio=0.0, learning_rate=1e-3, **train
      ),
  )


def build(config):
  """(task, prepared data, compiled model) as the train binary builds them."""
  task = tasks.get_task(config.task)
  prepared = task.prepare(config)
  model = task.build_model(config, prepared, total_steps=10, steps_per_epoch=10)
  return task, prepared, model


def one_batch(prepared, model) -> tuple:
  """The first 8 training examples as a (features, labels) batch."""
  encoded = prepared.encoded["train"]
  ids = encoded.input_ids[:8]
  labels = encoded.label_ids[:8].to_tensor(translation.LABEL_PADDING)
  features = {
      "input_ids": ids.to_tensor(model.pad_id),
      "attention_mask": tf.ones_like(ids).to_tensor(0),
  }
  return features, labels


# Settings.
def test_warm_start_settings_refuse_what_cannot_work(
    tmp_path, parallel_tsv, bert_checkpoint, tiny_bert_dir
):
  with pytest.raises(
      ValueError, match="--share_encoder_decoder needs --warm_start=bert2bert"
  ):
    config_lib.task_config(task="translation", share_encoder_decoder=True)
  with pytest.raises(ValueError, match="--warm_start=bert2bert starts from"):
    config_lib.task_config(
        task="translation", warm_start="bert2bert", model_config="default"
    )
  with pytest.raises(
      ValueError,
      match="--jit_generate with --no_repeat_ngram_size=3: .* runs only "
      "eagerly",
  ):
    config_lib.task_config(
        task="translation", jit_generate=True, no_repeat_ngram_size=3
    )
  with pytest.raises(ValueError, match="--warm_start='t5' is not one of"):
    config_lib.task_config(task="translation", warm_start="t5")
  with pytest.raises(
      ValueError,
      match=r"--freeze_layers=1 needs an encoder's layer stack: it applies "
      "with --task=translation only to --warm_start=bert2bert",
  ):
    run_config(
        tmp_path, parallel_tsv["train"], "t5-small", train={"freeze_layers": 1}
    )
  # An encoder family without a TF causal decoder (DistilBERT) is refused
  # with the families that have one.
  import transformers

  distil_dir = str(tmp_path / "distilbert")
  distil = transformers.TFDistilBertModel(
      transformers.DistilBertConfig(
          vocab_size=300, dim=32, n_layers=1, n_heads=2, hidden_dim=64
      )
  )
  distil(distil.dummy_inputs)
  distil.save_pretrained(distil_dir)
  transformers.AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(
      distil_dir
  )
  with pytest.raises(
      ValueError,
      match=r"--warm_start=bert2bert: --model='.*distilbert' \(distilbert\) "
      r"cannot start a decoder: .* \(BERT, RoBERTa, ELECTRA, XLM-RoBERTa\)",
  ):
    build(
        run_config(
            tmp_path / "m",
            parallel_tsv["train"],
            distil_dir,
            warm_start="bert2bert",
        )
    )


# The warm-started model.
def test_bert2bert_starts_both_stacks_from_the_checkpoint(
    tmp_path, parallel_tsv, bert_checkpoint
):
  import transformers

  config = run_config(
      tmp_path, parallel_tsv["train"], bert_checkpoint, warm_start="bert2bert"
  )
  _, prepared, model = build(config)
  seq2seq = model.seq2seq
  bert = transformers.TFBertModel.from_pretrained(bert_checkpoint)
  tokenizer = prepared.encoder.tokenizer
  checkpoint_query = bert.bert.encoder.layer[1].attention.self_attention.query
  for stack in (seq2seq.encoder, seq2seq.decoder):
    query = stack.bert.encoder.layer[1].attention.self_attention.query
    np.testing.assert_array_equal(
        query.kernel.numpy(), checkpoint_query.kernel.numpy()
    )
  np.testing.assert_array_equal(
      seq2seq.decoder.bert.embeddings.weight.numpy(),
      bert.bert.embeddings.weight.numpy(),
  )
  assert seq2seq.decoder.config.is_decoder
  assert seq2seq.decoder.bert.encoder.layer[0].crossattention is not None
  # [CLS] starts the decoder, [SEP] ends a translation, [PAD] pads: the
  # targets are "text [SEP]" and the decoder reads "[CLS] text".
  assert (
      seq2seq.config.decoder_start_token_id,
      seq2seq.config.eos_token_id,
      seq2seq.config.pad_token_id,
  ) == (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
  target = prepared.encoded["train"].label_ids[0].numpy().tolist()
  source = prepared.encoded["train"].input_ids[0].numpy().tolist()
  assert target[-1] == tokenizer.sep_token_id
  assert tokenizer.cls_token_id not in target
  assert source[0] == tokenizer.cls_token_id
  assert tokenizer.decode(target, skip_special_tokens=True) == (
      make_parallel_rows(160, seed=1)[0]["target"]
  )
  # A training step moves the new cross-attention and the pretrained parts.
  cross = seq2seq.decoder.bert.encoder.layer[0].crossattention
  before = [v.numpy() for v in cross.weights + [checkpoint_query.kernel]]
  encoder_query = seq2seq.encoder.bert.encoder.layer[1].attention
  before_encoder = encoder_query.self_attention.query.kernel.numpy()
  model.train_on_batch(*one_batch(prepared, model))
  assert not np.allclose(cross.weights[0].numpy(), before[0])
  assert not np.allclose(
      encoder_query.self_attention.query.kernel.numpy(), before_encoder
  )
  # The encoder's pooler is loaded but nothing reads it: out of training.
  trained = {id(v) for v in model.trainable_weights}
  poolers = [v for v in seq2seq.encoder.weights if "pooler" in v.name]
  assert poolers and not any(id(v) in trained for v in poolers)


def test_shared_encoder_decoder_trains_one_set_of_weights(
    tmp_path, parallel_tsv, bert_checkpoint
):
  def built(share):
    return build(
        run_config(
            tmp_path / str(share),
            parallel_tsv["train"],
            bert_checkpoint,
            warm_start="bert2bert",
            share_encoder_decoder=share,
        )
    )

  _, _, separate = built(False)
  _, prepared, shared = built(True)
  # Sharing removes the encoder's own copy of the checkpoint: every
  # encoder weight but the pooler is the decoder's.
  encoder = shared.seq2seq.encoder
  decoder_ids = {id(v) for v in shared.seq2seq.decoder.weights}
  own = [v.name for v in encoder.weights if id(v) not in decoder_ids]
  assert own and all("pooler" in name for name in own)
  pooler = sum(
      int(np.prod(v.shape)) for v in encoder.weights if "pooler" in v.name
  )
  assert shared.seq2seq.count_params() == (
      separate.seq2seq.count_params()
      - separate.seq2seq.encoder.count_params()
      + pooler
  )
  # One update moves the encoder's and the decoder's self-attention alike.
  model = shared
  model.train_on_batch(*one_batch(prepared, model))
  for depth in range(2):
    np.testing.assert_array_equal(
        encoder.bert.encoder.layer[depth].attention.self_attention.query.kernel,
        model.seq2seq.decoder.bert.encoder.layer[
            depth
        ].attention.self_attention.query.kernel,
    )


def test_layerwise_decay_freezing_and_weight_decay_on_both_stacks(
    tmp_path, parallel_tsv, bert_checkpoint
):
  config = run_config(
      tmp_path,
      parallel_tsv["train"],
      bert_checkpoint,
      warm_start="bert2bert",
      train={
          "layerwise_lr_decay": 0.5,
          "freeze_layers": 1,
          "freeze_embeddings": True,
          "weight_decay": 0.1,
      },
  )
  _, prepared, model = build(config)
  seq2seq = model.seq2seq
  multipliers = model.optimizer.lr_multipliers
  for stack in (seq2seq.encoder, seq2seq.decoder):
    top, bottom = [
        layer.attention.self_attention.query.kernel
        for layer in stack.bert.encoder.layer[::-1]
    ]
    assert multipliers[top.name] == 1.0
    assert multipliers[bottom.name] == 0.5
    assert multipliers[stack.bert.embeddings.weight.name] == 0.25
  cross = seq2seq.decoder.bert.encoder.layer[0].crossattention
  assert all(v.name not in multipliers for v in cross.weights)
  # Weight decay skips the norms and biases of the new parts too.
  decayed = {
      v.name: model.optimizer._use_weight_decay(v) for v in cross.weights
  }
  assert any(decayed.values())
  assert all(
      not decays
      for name, decays in decayed.items()
      if "LayerNorm" in name or "bias" in name
  )
  # The encoder's bottom layer and both sides' embeddings stay put; the
  # layer above and the cross-attention learn.
  watched = {
      "frozen layer": seq2seq.encoder.bert.encoder.layer[0].weights[0],
      "encoder embeddings": seq2seq.encoder.bert.embeddings.weight,
      "decoder embeddings": seq2seq.decoder.bert.embeddings.weight,
      "layer above": seq2seq.encoder.bert.encoder.layer[1].weights[0],
      "cross-attention": cross.weights[0],
  }
  before = {name: v.numpy() for name, v in watched.items()}
  model.train_on_batch(*one_batch(prepared, model))
  moved = {
      name: not np.array_equal(v.numpy(), before[name])
      for name, v in watched.items()
  }
  assert moved == {
      "frozen layer": False,
      "encoder embeddings": False,
      "decoder embeddings": False,
      "layer above": True,
      "cross-attention": True,
  }


# In-graph decoding.
def test_in_graph_decoding_matches_the_tokenizers_decode(
    tmp_path, bert_checkpoint
):
  """WordPiece (with and without cleaning up spaces) and byte-level BPE,
  on real tokenizations and on random ids: joined sub-words, dropped
  special tokens, punctuation and bytes that are not UTF-8 alone."""
  import transformers

  rng = random.Random(0)
  bert = transformers.AutoTokenizer.from_pretrained(bert_checkpoint)
  bart = transformers.AutoTokenizer.from_pretrained(
      make_tiny_bart_checkpoint(str(tmp_path / "bart"))
  )
  for tokenizer, clean_up in ((bert, False), (bert, True), (bart, True)):
    tokenizer.clean_up_tokenization_spaces = clean_up
    rows = [tokenizer(text)["input_ids"] for text in _sentences(20)]
    rows += [
        [rng.randrange(len(tokenizer)) for _ in range(rng.randint(0, 12))]
        for _ in range(300)
    ]
    detokenizer = detokenization.Detokenizer.from_hf_tokenizer(tokenizer)
    detokenization.check_matches_decode(detokenizer, tokenizer, rows)


# Training and export through the binaries.
def _train(model_dir, files, extra) -> None:
  from tf_finetune import train

  code = run_binary(
      train,
      [
          "--task=translation",
          f"--train_file={files['train']}",
          f"--validation_file={files['validation']}",
          f"--model_dir={model_dir}",
          "--max_source_length=16",
          "--max_target_length=16",
          "--batch_size=16",
          "--learning_rate=1e-2",
          "--warmup_ratio=0.1",
          "--early_stopping_patience=0",
          "--precision=fp32",
          "--log_every_steps=5",
      ]
      + extra,
  )
  assert code == 0


def _served_and_python(model_dir, texts) -> tuple[list, list]:
  """The SavedModel's translations in a fresh process, and Python's."""
  export_dir = serving.latest_version_dir(os.path.join(model_dir, "export"))
  assert export_dir is not None
  result = run_python(["-c", _RELOAD, export_dir, json.dumps(texts)])
  assert result.returncode == 0, result.stderr[-2000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  trained = artifacts.load_trained(model_dir)
  expected = translation.PythonTranslator(
      trained.model, trained.config.task
  ).translate(texts)
  return served, expected


def test_bert2bert_share_learns_and_exports_raw_string_translation(
    tmp_path, parallel_tsv, bert_checkpoint
):
  model_dir = str(tmp_path / "run")
  _train(
      model_dir,
      parallel_tsv,
      [
          f"--model={bert_checkpoint}",
          "--warm_start=bert2bert",
          "--share_encoder_decoder",
          "--epochs=3",
      ],
  )
  with open(os.path.join(model_dir, "history.json")) as f:
    history = json.load(f)
  assert history["loss"][-1] < 0.6 * history["loss"][0]
  texts = ["the big cat sees the dog", "The old man HAS the book!", ""]
  served, expected = _served_and_python(model_dir, texts)
  assert served == expected
  # Learned: Spanish words, no WordPiece marks or special tokens left.
  assert served[0].startswith("el ")
  assert not any("##" in text or "[" in text for text in served)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_pretrained_checkpoints_fine_tune_and_export(
    tmp_path, parallel_tsv, kind
):
  """A saved pretrained T5 (SentencePiece) or BART (byte-level BPE) as
  --model: fine-tuned, then served from raw strings in a fresh process
  with its own tokenizer in the graph."""
  make = {"t5": make_tiny_t5_checkpoint, "bart": make_tiny_bart_checkpoint}
  checkpoint = make[kind](str(tmp_path / kind))
  model_dir = str(tmp_path / "run")
  _train(model_dir, parallel_tsv, [f"--model={checkpoint}", "--epochs=2"])
  with open(os.path.join(model_dir, "history.json")) as f:
    history = json.load(f)
  assert history["loss"][-1] < history["loss"][0]
  texts = ["the big cat sees the dog", "Hello, world! It's 3.", ""]
  served, expected = _served_and_python(model_dir, texts)
  assert served == expected


def test_pretrained_marian_fine_tunes_and_export_is_refused_clearly(
    tmp_path, parallel_tsv
):
  checkpoint = make_tiny_marian_checkpoint(str(tmp_path / "marian"))
  config = run_config(tmp_path / "m", parallel_tsv["train"], checkpoint)
  task, prepared, model = build(config)
  before = [v.numpy() for v in model.seq2seq.trainable_weights]
  model.train_on_batch(*one_batch(prepared, model))
  assert not np.allclose(model.seq2seq.trainable_weights[0].numpy(), before[0])
  trained = tasks.base.TrainedModel(
      config, task, prepared.encoder, prepared.encoder, model
  )
  with pytest.raises(
      ValueError,
      match=r"Export of --model='.*marian' \(MarianTokenizer\) is not "
      r"supported: MarianTokenizer is not a fast tokenizer.*predict "
      "--model_dir",
  ):
    task.server(trained)
  # Python translation works for it.
  assert len(translation.PythonTranslator(model, config.task).translate(["a"]))
