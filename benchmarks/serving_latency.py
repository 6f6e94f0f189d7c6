r"""Serving latency and throughput: our raw-text SavedModel vs. the
deployments a Hugging Face TF user would build.

  python benchmarks/serving_latency.py --model_dir=runs/sentiment_demo

All sides serve the same trained classifier on the same texts (the test
split), one after the other in this process:

* ours: the exported SavedModel (latest version under <model_dir>/export),
  loaded with `tf.saved_model.load` and called through `serving_default` on
  raw strings; tokenization runs inside the graph.
* hf_tokenizer_tf_function: the strongest setup a `transformers` TF user
  would deploy: the model's own fast (Rust) tokenizer on the batch in Python,
  padded to the batch's longest text, then a `TFBertForSequenceClassification`
  holding the very same weights called inside one `tf.function` (traced with
  a [None, None] signature, so no retracing per length).
* hf_pipeline: the `transformers` text-classification pipeline over that
  same model, the convenience path (nobody puts it behind TF Serving; kept
  for comparison with earlier figures).
The probabilities of both HF setups are checked against ours first.

Reported for each: load time, first-call latency after load, batch-1 latency
p50/p99 over --requests single texts, and batch-64 throughput over
--batches batches. One JSON line at the end.
"""

import argparse
import csv
import json
import os
import platform
import resource
import time

import tf_finetune  # noqa: F401  Sets TF_USE_LEGACY_KERAS before TensorFlow.

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  Registers the tokenizer ops.


def _percentiles(seconds):
  values = np.array(seconds) * 1000.0
  return {
      "p50_ms": round(float(np.percentile(values, 50)), 2),
      "p99_ms": round(float(np.percentile(values, 99)), 2),
  }


def _measure(
    classify, texts, *, requests: int, batches: int, batch_size: int = 64
) -> dict:
  """Times `classify(list_of_texts)` at batch 1 and at `batch_size`."""
  start = time.perf_counter()
  classify(texts[:1])
  first_call = time.perf_counter() - start
  single = []
  for i in range(requests):
    start = time.perf_counter()
    classify([texts[i % len(texts)]])
    single.append(time.perf_counter() - start)
  classify(texts[:batch_size])  # A first call at this batch size.
  start = time.perf_counter()
  for i in range(batches):
    offset = (i * batch_size) % max(len(texts) - batch_size, 1)
    classify(texts[offset : offset + batch_size])
  elapsed = time.perf_counter() - start
  return {
      "first_call_ms": round(first_call * 1000.0, 1),
      "batch1": _percentiles(single),
      "batch64_texts_per_s": round(batches * batch_size / elapsed, 1),
  }


def _hf_pipeline(model_dir: str):
  """A transformers text-classification pipeline with the run's weights."""
  import transformers
  from tf_finetune import artifacts

  trained = artifacts.load_trained(model_dir)
  if trained.model.pooling != "pooler":
    raise SystemExit(
        "The HF classifier pools with the pooler; this run used "
        f"--pooling={trained.config.model.pooling}."
    )
  config = trained.model.backbone.config
  config.num_labels = len(trained.label_vocab)
  config.id2label = dict(enumerate(trained.label_vocab))
  config.label2id = {label: i for i, label in enumerate(trained.label_vocab)}
  hf_model = transformers.TFBertForSequenceClassification(config)
  hf_model(hf_model.dummy_inputs)
  hf_model.bert.set_weights(trained.model.backbone.bert.get_weights())
  hf_model.classifier.set_weights(trained.model.head.get_weights())
  # What pipeline("text-classification") builds; constructed directly
  # because transformers 4.54's pipeline() factory touches torch even for
  # framework="tf" and torch is not installed here.
  return (
      transformers.TextClassificationPipeline(
          model=hf_model,
          tokenizer=trained.tokenizer,
          framework="tf",
          top_k=None,
      ),
      trained,
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model_dir", default="runs/sentiment_demo")
  parser.add_argument("--texts", default="assets/rotten_tomatoes/test.csv")
  parser.add_argument("--requests", type=int, default=200)
  parser.add_argument("--batches", type=int, default=20)
  args = parser.parse_args()
  from tf_finetune import serving

  with open(args.texts, encoding="utf-8", newline="") as f:
    texts = [row["text"] for row in csv.DictReader(f)]
  export_dir = serving.latest_version_dir(
      os.path.join(args.model_dir, "export")
  )
  if export_dir is None:
    raise SystemExit(
        f"No export under {args.model_dir}/export; run " "`make demo` first."
    )

  start = time.perf_counter()
  signature = tf.saved_model.load(export_dir).signatures["serving_default"]
  ours_load = time.perf_counter() - start

  def ours(batch):
    return signature(text=tf.constant(batch))["probabilities"].numpy()

  ours_result = dict(
      load_s=round(ours_load, 2),
      **_measure(ours, texts, requests=args.requests, batches=args.batches),
  )

  start = time.perf_counter()
  pipe, trained = _hf_pipeline(args.model_dir)
  theirs_load = time.perf_counter() - start

  def theirs(batch):
    return pipe(
        batch,
        batch_size=len(batch),
        truncation=True,
        max_length=trained.config.data.max_seq_length,
    )

  # Same model, same answers: compare probabilities on a few texts.
  sample = texts[:16]
  label_index = {label: i for i, label in enumerate(trained.label_vocab)}
  hf_probabilities = np.zeros((len(sample), len(label_index)))
  for row, scores in enumerate(theirs(sample)):
    for score in scores:
      hf_probabilities[row, label_index[score["label"]]] = score["score"]
  max_difference = float(np.abs(hf_probabilities - ours(sample)).max())

  theirs_result = dict(
      load_s=round(theirs_load, 2),
      **_measure(theirs, texts, requests=args.requests, batches=args.batches),
  )

  hf_model = pipe.model
  tokenizer = trained.tokenizer
  max_length = trained.config.data.max_seq_length

  @tf.function(
      input_signature=[
          tf.TensorSpec([None, None], tf.int32, name=name)
          for name in ("input_ids", "attention_mask", "token_type_ids")
      ]
  )
  def hf_probabilities_of(input_ids, attention_mask, token_type_ids):
    logits = hf_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        training=False,
    ).logits
    return tf.nn.softmax(logits)

  def tokenizer_tf_function(batch):
    features = tokenizer(
        batch,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="np",
    )
    return hf_probabilities_of(
        **{
            name: tf.constant(value, tf.int32)
            for name, value in features.items()
        }
    ).numpy()

  # Label order of the HF model is the run's: compare with ours directly.
  max_difference_tf_function = float(
      np.abs(tokenizer_tf_function(sample) - ours(sample)).max()
  )
  tf_function_result = dict(
      load_s=round(theirs_load, 2),  # The pipeline's model.
      **_measure(
          tokenizer_tf_function,
          texts,
          requests=args.requests,
          batches=args.batches,
      ),
  )
  report = {
      "benchmark": "serving_latency",
      "date": time.strftime("%Y-%m-%d"),
      "machine": {
          "cpus": os.cpu_count(),
          "platform": platform.platform(),
          "tensorflow": tf.__version__,
      },
      "saved_model": export_dir,
      "max_probability_difference": max_difference,
      "max_probability_difference_tf_function": max_difference_tf_function,
      "ours": ours_result,
      "hf_tokenizer_tf_function": tf_function_result,
      "hf_pipeline": theirs_result,
      "ratio_ours_over_hf_tf_function": {
          "batch1_p50_speedup": round(
              tf_function_result["batch1"]["p50_ms"]
              / ours_result["batch1"]["p50_ms"],
              2,
          ),
          "batch64_throughput": round(
              ours_result["batch64_texts_per_s"]
              / tf_function_result["batch64_texts_per_s"],
              2,
          ),
      },
      "ratio_ours_over_hf_pipeline": {
          "batch1_p50_speedup": round(
              theirs_result["batch1"]["p50_ms"]
              / ours_result["batch1"]["p50_ms"],
              2,
          ),
          "batch64_throughput": round(
              ours_result["batch64_texts_per_s"]
              / theirs_result["batch64_texts_per_s"],
              2,
          ),
      },
      "peak_rss_mb": round(
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
      ),
  }
  print(
      f"{'':12s}{'load s':>8s}{'first ms':>10s}{'b1 p50 ms':>11s}"
      f"{'b1 p99 ms':>11s}{'b64 texts/s':>13s}"
  )
  for name, result in (
      ("ours", ours_result),
      ("hf_tf_fn", tf_function_result),
      ("hf_pipeline", theirs_result),
  ):
    print(
        f"{name:12s}{result['load_s']:8.2f}{result['first_call_ms']:10.1f}"
        f"{result['batch1']['p50_ms']:11.2f}{result['batch1']['p99_ms']:11.2f}"
        f"{result['batch64_texts_per_s']:13.1f}"
    )
  print(json.dumps(report))


if __name__ == "__main__":
  main()
