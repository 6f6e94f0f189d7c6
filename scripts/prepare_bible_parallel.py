r"""Builds an English-Spanish parallel corpus from two SWORD Bible modules.

  make bible

or by hand, from Debian's public-domain Bible packages:

  apt-get download sword-text-web sword-text-sparv
  dpkg-deb -x sword-text-web_*.deb assets/sword
  dpkg-deb -x sword-text-sparv_*.deb assets/sword
  python scripts/prepare_bible_parallel.py --sword_dir=assets/sword

The source side is the World English Bible (module engWEB2015eb, NRSVA
versification), the target side the Reina-Valera 1909 (spaRV1909eb, KJV
versification). Verses are aligned by (book, chapter, verse); a verse is
kept when both modules have text for it, neither side links it to other
verses, and both are non-empty once markup is removed. The two
versifications number the shared books the same way except 3 John 1:15 and
Revelation 12:18 (only in NRSVA), so these and the deuterocanonical books
(only in the World English Bible) drop out.

The two translations do not always divide the text the same way, and the
module builder fits each text into its versification by reference: where
the Spanish source starts a chapter one verse earlier or later (Numbers 13,
Jonah 2, Job 39 follow the Hebrew chapter breaks), every verse of the chapter
pairs with its neighbour's translation, and a verse the versification has no
room for is appended to the chapter's last verse. Two checks drop such
regions:

* a chapter whose last verse differs between the modules (one side has
  verses the other lacks at the end: a moved chapter boundary) is dropped
  with the chapter after it;
* a pair whose length ratio (target characters over source characters) is
  more than --max_length_ratio times off the median ratio of all pairs
  is a misalignment (a merged verse, an added subscription or a text the
  other translation omits); a chapter with two or more such pairs is
  dropped whole, a single one alone.

The split is by whole chapters: the chapters are shuffled with --seed and
taken in that order for the test split until it holds at least
--test_verses verses, then for validation until --validation_verses; the
rest is training data. Neighbouring verses of one chapter often repeat each
other nearly word for word (parallel lists, refrains, the repeated offerings
of Numbers 7), so a split by random verses would test on near-copies of
training rows.

Written to <output_dir>/{train,validation,test}.tsv with the header
`source<TAB>target`, one verse per row, in Bible order. Reads only local
files; running it again rewrites the same files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import random
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from corpora import sword  # noqa: E402
from tf_finetune import flag_definitions, io_utils  # noqa: E402

FLAGS = flags.FLAGS
SPLITS = ("train", "validation", "test")


def define_flags() -> None:
  define = flag_definitions.define_flag
  define(
      flags.DEFINE_multi_string,
      "sword_dir",
      ["assets/sword"],
      "SWORD library directories (holding mods.d/) or roots of extracted "
      "sword-text Debian packages (holding usr/share/sword/mods.d/); "
      "repeat the flag for several.",
  )
  define(
      flags.DEFINE_string,
      "source_module",
      "engWEB2015eb",
      "Module of the source side (English).",
  )
  define(
      flags.DEFINE_string,
      "target_module",
      "spaRV1909eb",
      "Module of the target side (Spanish).",
  )
  define(
      flags.DEFINE_string,
      "output_dir",
      "assets/bible/en-es",
      "Where train.tsv, validation.tsv and test.tsv are written.",
  )
  define(
      flags.DEFINE_integer,
      "validation_verses",
      1000,
      "Whole chapters go to validation until it has at least this many "
      "verses.",
  )
  define(
      flags.DEFINE_integer,
      "test_verses",
      1000,
      "Whole chapters go to test until it has at least this many verses.",
  )
  define(
      flags.DEFINE_integer,
      "seed",
      1909,
      "Seed of the shuffle of chapters that chooses the splits.",
  )
  define(
      flags.DEFINE_float,
      "max_length_ratio",
      2.0,
      "A pair whose length ratio is this many times above or below the "
      "median ratio counts as misaligned.",
  )


@dataclasses.dataclass(frozen=True)
class Pair:
  book: str
  chapter: int
  verse: int
  source: str
  target: str


@dataclasses.dataclass
class Alignment:
  pairs: list[Pair]
  only_source: int = 0
  only_target: int = 0
  linked: int = 0


def align(source: list[sword.Verse], target: list[sword.Verse]) -> Alignment:
  """Pairs the verses of two modules by (book, chapter, verse).

  Source order is kept. A verse linked to its neighbours (one text for
  several verses) pairs only with the same span on the other side.
  """
  target_by_key = {verse.key: verse for verse in target}
  source_keys = {verse.key for verse in source}
  alignment = Alignment(pairs=[])
  for verse in source:
    other = target_by_key.get(verse.key)
    if other is None:
      alignment.only_source += 1
    elif other.last_verse != verse.last_verse:
      alignment.linked += 1
    elif verse.last_verse == verse.verse:
      alignment.pairs.append(
          Pair(verse.book, verse.chapter, verse.verse, verse.text, other.text)
      )
    else:
      alignment.linked += 1
  alignment.only_target = sum(key not in source_keys for key in target_by_key)
  return alignment


@dataclasses.dataclass
class Dropped:
  renumbered_chapters: int = 0
  misaligned_chapters: int = 0
  misaligned_verses: int = 0
  verses: int = 0


def last_verses(verses: list[sword.Verse]) -> dict[tuple[str, int], int]:
  """The last verse number with text of every (book, chapter)."""
  last = {}
  for verse in verses:
    chapter = (verse.book, verse.chapter)
    last[chapter] = max(last.get(chapter, 0), verse.last_verse)
  return last


def drop_misaligned(
    pairs: list[Pair],
    source: list[sword.Verse],
    target: list[sword.Verse],
    *,
    max_length_ratio: float,
) -> tuple[list[Pair], Dropped]:
  """Drops chapters and verses where the two texts are divided differently.

  See the module docstring for the two checks.
  """
  if max_length_ratio <= 1:
    raise ValueError(
        f"--max_length_ratio={max_length_ratio}; it must be "
        "above 1 (2 flags pairs at half or twice the usual "
        "ratio)."
    )
  dropped = Dropped()
  source_last, target_last = last_verses(source), last_verses(target)
  chapters = list(dict.fromkeys((pair.book, pair.chapter) for pair in pairs))
  bad_chapters = set()
  for book, chapter in chapters:
    if source_last[(book, chapter)] != target_last[(book, chapter)]:
      bad_chapters.update({(book, chapter), (book, chapter + 1)})
  dropped.renumbered_chapters = sum(
      chapter in bad_chapters for chapter in chapters
  )
  ratios = sorted(len(pair.target) / len(pair.source) for pair in pairs)
  median = ratios[len(ratios) // 2]
  suspects = {}
  for pair in pairs:
    ratio = len(pair.target) / len(pair.source) / median
    if not 1 / max_length_ratio <= ratio <= max_length_ratio:
      suspects.setdefault((pair.book, pair.chapter), set()).add(pair.verse)
  for chapter, verses in suspects.items():
    if len(verses) >= 2 and chapter not in bad_chapters:
      bad_chapters.add(chapter)
      dropped.misaligned_chapters += 1
  kept = []
  for pair in pairs:
    chapter = (pair.book, pair.chapter)
    if chapter in bad_chapters:
      continue
    if pair.verse in suspects.get(chapter, ()):
      dropped.misaligned_verses += 1
      continue
    kept.append(pair)
  dropped.verses = len(pairs) - len(kept)
  return kept, dropped


def split_by_chapter(
    pairs: list[Pair], *, validation_verses: int, test_verses: int, seed: int
) -> dict[str, list[Pair]]:
  """Assigns whole chapters to test, then validation, the rest to train.

  Each split keeps the pairs in their original (Bible) order.
  """
  chapters = list(dict.fromkeys((pair.book, pair.chapter) for pair in pairs))
  sizes = {chapter: 0 for chapter in chapters}
  for pair in pairs:
    sizes[(pair.book, pair.chapter)] += 1
  random.Random(seed).shuffle(chapters)
  assignment = {}
  wanted = [("test", test_verses), ("validation", validation_verses)]
  counts = {"test": 0, "validation": 0}
  for chapter in chapters:
    split = "train"
    for name, target in wanted:
      if counts[name] < target:
        split = name
        counts[name] += sizes[chapter]
        break
    assignment[chapter] = split
  splits = {split: [] for split in SPLITS}
  for pair in pairs:
    splits[assignment[(pair.book, pair.chapter)]].append(pair)
  return splits


def one_line(text: str) -> str:
  return " ".join(text.replace("\t", " ").split())


def write_tsv(path: str, pairs: list[Pair]) -> None:
  """Writes `source<TAB>target` rows (csv quoting for fields with quotes)."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
  writer.writerow(["source", "target"])
  writer.writerows(
      (one_line(pair.source), one_line(pair.target)) for pair in pairs
  )
  io_utils.write_text_atomically(path, buffer.getvalue())
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)  # Readable like any file, not 0600.


def build(
    *,
    sword_dirs: list[str],
    source_module: str,
    target_module: str,
    output_dir: str,
    validation_verses: int,
    test_verses: int,
    seed: int,
    max_length_ratio: float,
) -> dict[str, list[Pair]]:
  """Reads both modules, aligns, splits and writes the three TSV files."""
  if validation_verses < 0 or test_verses < 0:
    raise ValueError(
        "--validation_verses and --test_verses must be >= 0, "
        f"got {validation_verses} and {test_verses}."
    )
  library = sword.SwordLibrary(*sword_dirs)
  modules = [library.module(name) for name in (source_module, target_module)]
  source, target = (list(module.verses()) for module in modules)
  alignment = align(source, target)
  pairs = [
      pair
      for pair in alignment.pairs
      if one_line(pair.source) and one_line(pair.target)
  ]
  if not pairs:
    raise ValueError(
        f"Modules {source_module} and {target_module} share no "
        "verse with text on both sides."
    )
  for module, verses in zip(modules, (source, target)):
    config = module.config
    markers = module.check_chapter_markers()
    print(
        f"{config.name} ({config.description}, version {config.version}, "
        f"{config.versification} versification): {len(verses)} verses "
        f"with text; {markers} chapter markers where the versification "
        "puts them"
    )
  print(
      f"aligned {len(pairs)} verses; {alignment.only_source} only in "
      f"{source_module}, {alignment.only_target} only in {target_module}, "
      f"{alignment.linked} linked to neighbouring verses on one side"
  )
  pairs, dropped = drop_misaligned(
      pairs, source, target, max_length_ratio=max_length_ratio
  )
  print(
      f"dropped {dropped.verses} verses divided differently by the two "
      f"translations: {dropped.renumbered_chapters} chapters at moved "
      f"chapter boundaries, {dropped.misaligned_chapters} chapters and "
      f"{dropped.misaligned_verses} single verses with length ratios off "
      f"by more than {max_length_ratio}x; {len(pairs)} verses kept"
  )
  splits = split_by_chapter(
      pairs,
      validation_verses=validation_verses,
      test_verses=test_verses,
      seed=seed,
  )
  for split, rows in splits.items():
    path = os.path.join(output_dir, f"{split}.tsv")
    write_tsv(path, rows)
    chapters = len({(pair.book, pair.chapter) for pair in rows})
    print(f"{path}: {len(rows)} verses from {chapters} chapters")
  return splits


def main(argv) -> None:
  flag_definitions.run_main(
      "prepare_bible_parallel",
      argv,
      lambda: build(
          sword_dirs=FLAGS.sword_dir,
          source_module=FLAGS.source_module,
          target_module=FLAGS.target_module,
          output_dir=FLAGS.output_dir,
          validation_verses=FLAGS.validation_verses,
          test_verses=FLAGS.test_verses,
          seed=FLAGS.seed,
          max_length_ratio=FLAGS.max_length_ratio,
      ),
  )


if __name__ == "__main__":
  define_flags()
  app.run(main)
