r"""Classifies raw sentences with an exported SavedModel, as a client would.

  python scripts/classify_with_saved_model.py \
      --saved_model=runs/sentiment_demo/export --input_file=sentences.csv

Imports only TensorFlow and tensorflow-text (for the in-graph tokenizer ops),
not tf_finetune or transformers: what this script needs is what TF Serving
needs.
"""

import argparse
import csv
import os

import tensorflow as tf
import tensorflow_text  # noqa: F401  Registers the tokenizer ops.


def latest_version(path: str) -> str:
  if os.path.isfile(os.path.join(path, "saved_model.pb")):
    return path
  versions = [int(name) for name in os.listdir(path) if name.isdigit()]
  if not versions:
    raise SystemExit(f"{path} holds no numbered SavedModel versions.")
  return os.path.join(path, str(max(versions)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--saved_model", required=True)
  parser.add_argument(
      "--input_file", required=True, help="CSV with a 'text' column."
  )
  args = parser.parse_args()
  path = latest_version(args.saved_model)
  with open(args.input_file, encoding="utf-8", newline="") as f:
    texts = [row["text"] for row in csv.DictReader(f)]
  serve = tf.saved_model.load(path).signatures["serving_default"]
  outputs = serve(text=tf.constant(texts))
  labels = [label.decode("utf-8") for label in outputs["label"].numpy()]
  confidences = outputs["probabilities"].numpy().max(axis=-1)
  print(f"Predictions of {path} (loaded with tensorflow + tensorflow_text):")
  for text, label, confidence in zip(texts, labels, confidences):
    print(f"  {label:>10s} {confidence:6.1%}  {text}")


if __name__ == "__main__":
  main()
