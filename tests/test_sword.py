"""The SWORD zText reader and the Bible corpus script, on modules built here.

`write_module` writes a zText module the way the format describes it (block
index, verse index, zlib blocks, a mods.d conf), independently of the
reader, so the tests check the reader against the format and not against
itself. Index positions are pinned to values read off the real Debian
modules (sword-text-web, sword-text-sparv), whose chapter-heading entries
carry their osisID: Exodus 1:1 is entry 1588 of the Old Testament index.
"""

import csv
import importlib.util
import os
import re
import struct
import subprocess
import sys
import zlib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "scripts")
SCRIPT = os.path.join(SCRIPTS, "prepare_bible_parallel.py")
# The corpus readers live next to the script that uses them, which imports
# them as `corpora` (its own directory is on sys.path when it runs).
if SCRIPTS not in sys.path:
  sys.path.insert(0, SCRIPTS)

from corpora import sword, versification  # noqa: E402


def verse_positions(books) -> tuple[dict, int]:
  """(book, chapter, verse) -> entry number, and the number of entries.

  Entry 0 heads the module, 1 the testament; each book has a heading entry,
  each chapter a heading entry (verse 0 here) followed by its verses.
  """
  positions = {}
  entry = 2
  for book in books:
    entry += 1
    for chapter, verse_count in enumerate(book.verse_counts, start=1):
      positions[(book.osis_id, chapter, 0)] = entry
      entry += 1
      for verse in range(1, verse_count + 1):
        positions[(book.osis_id, chapter, verse)] = entry
        entry += 1
  return positions, entry


def write_module(
    library: str,
    name: str,
    texts: dict,
    *,
    scheme: str = "KJV",
    source_type: str = "OSIS",
    encoding: str = "UTF-8",
    links: dict | None = None,
    conf_extra: str = "",
) -> str:
  """Writes a zText module (one block per book) and its conf.

  Args:
    library: The SWORD library directory (gets mods.d/ and modules/).
    name: Module name.
    texts: (book, chapter, verse) -> markup; verse 0 is the chapter's
      heading entry.
    scheme: Versification= of the module.
    source_type, encoding: SourceType= and Encoding=.
    links: (book, chapter, verse) -> the earlier key whose entry it shares.
    conf_extra: More conf lines.

  Returns:
    The module's data directory.
  """
  links = links or {}
  data_path = f"modules/texts/ztext/{name.lower()}/"
  directory = os.path.join(library, data_path)
  os.makedirs(directory, exist_ok=True)
  scheme_books = versification.get_versification(scheme)
  for testament in ("ot", "nt"):
    books = scheme_books.books(testament)
    positions, size = verse_positions(books)
    entries = [(0, 0, 0)] * size
    bzs, bzz = b"", b""
    for block_number, book in enumerate(books):
      block = b""
      for (osis_id, chapter, verse), text in sorted(
          texts.items(), key=lambda item: positions.get(item[0], -1)
      ):
        if osis_id != book.osis_id:
          continue
        data = text.encode(encoding)
        entries[positions[(osis_id, chapter, verse)]] = (
            block_number,
            len(block),
            len(data),
        )
        block += data
      compressed = zlib.compress(block)
      bzs += struct.pack("<III", len(bzz), len(compressed), len(block))
      bzz += compressed
    for key, target in links.items():
      if key in positions:
        entries[positions[key]] = entries[positions[target]]
    with open(os.path.join(directory, f"{testament}.bzs"), "wb") as f:
      f.write(bzs)
    with open(os.path.join(directory, f"{testament}.bzz"), "wb") as f:
      f.write(bzz)
    with open(os.path.join(directory, f"{testament}.bzv"), "wb") as f:
      f.write(b"".join(struct.pack("<IIH", *entry) for entry in entries))
  os.makedirs(os.path.join(library, "mods.d"), exist_ok=True)
  with open(
      os.path.join(library, "mods.d", f"{name.lower()}.conf"),
      "w",
      encoding="utf-8",
  ) as f:
    f.write(
        f"# A test module\n[{name}]\nDataPath=./{data_path}\n"
        f"ModDrv=zText\nSourceType={source_type}\nEncoding={encoding}\n"
        f"CompressType=ZIP\nBlockType=BOOK\nVersification={scheme}\n"
        f"Description=Test module \\\n  {name}\nVersion=1.0\n"
        f"{conf_extra}"
    )
  return directory


def test_index_positions_match_the_real_modules():
  ot, ot_size = verse_positions(versification.KJV.old_testament)
  nt, nt_size = verse_positions(versification.KJV.new_testament)
  assert ot[("Gen", 1, 1)] == 4
  assert ot[("Gen", 2, 1)] == 36  # Genesis 1 has 31 verses.
  assert ot[("Exod", 1, 1)] == 1588
  assert nt[("Rev", 22, 21)] == nt_size - 1
  # Entries in the real indexes: 10 bytes each in ot.bzv and nt.bzv.
  assert (ot_size, nt_size) == (24115, 8246)
  assert versification.KJV.index_size("ot") == ot_size
  assert versification.NRSVA.index_size("ot") == 31027
  assert versification.NRSVA.index_size("nt") == 8248
  layout = list(versification.KJV.index_layout("nt"))
  assert all(
      layout[entry] == versification.IndexPosition(*key)
      for key, entry in nt.items()
  )


def test_reads_verses_at_their_keys_as_plain_text(tmp_path):
  texts = {
      ("Gen", 1, 1): '<w lemma="strong:H7225">In the beginning</w> God '
      "created the heavens and the earth.",
      ("Gen", 1, 31): "God saw everything that he had made.",
      ("Gen", 2, 1): "The heavens and the earth were finished.",
      ("Exod", 1, 1): "Now these are the names.",
      ("Mal", 4, 6): "He will turn the hearts of the fathers.",
      ("Matt", 1, 1): "The book of the genealogy of Jesus Christ.",
      ("John", 3, 16): 'For God so <note type="x">a note</note>loved the '
      "world.",
      ("Rev", 22, 21): "The grace of the Lord Jesus Christ be with all the "
      'saints. Amen. <div sID="g1" type="glossary"/>Abba: '
      'father.<div eID="g1" type="glossary"/>',
  }
  write_module(str(tmp_path), "Test", texts)
  module = sword.SwordLibrary(str(tmp_path)).module("Test")
  verses = list(module.verses())
  assert [verse.key for verse in verses] == list(texts)
  plain = {verse.key: verse.text for verse in verses}
  assert plain[("Gen", 1, 1)] == (
      "In the beginning God created the heavens " "and the earth."
  )
  assert plain[("John", 3, 16)] == "For God so loved the world."
  assert plain[("Rev", 22, 21)] == (
      "The grace of the Lord Jesus Christ be " "with all the saints. Amen."
  )
  assert module.config.description == "Test module Test"
  assert all(verse.last_verse == verse.verse for verse in verses)


def test_osis_markup_becomes_plain_text():
  strip = sword.strip_osis
  # A note between words leaves a space; before punctuation it leaves none.
  assert (
      strip('<w>God</w><note placement="foot">Elohim</note><w>created' "</w>")
      == "God created"
  )
  assert strip('coins</q> <note>n</note> <q marker="">? Not') == "coins? Not"
  # Section headings go; canonical (psalm) titles are Scripture text.
  assert (
      strip('<title type="x-section">Creation</title>In the beginning')
      == "In the beginning"
  )
  assert (
      strip(
          '<title canonical="true" type="psalm">A Psalm by David.'
          '</title> <lg sID="a"/><l sID="b"/>Yahweh is my shepherd'
      )
      == "A Psalm by David. Yahweh is my shepherd"
  )
  # Poetry line breaks separate words but not a word from its punctuation.
  assert (
      strip(
          'my shepherd<l eID="b"/><l sID="c"/>I shall lack nothing'
          '<l eID="c"/>.'
      )
      == "my shepherd I shall lack nothing."
  )
  assert (
      strip("Salt &amp; light &#x201C;x&#8221;\n\t  end")
      == "Salt & light \u201cx\u201d end"
  )
  assert (
      strip(
          '<div sID="i" type="introduction"/>Preface text'
          '<div eID="i" type="introduction"/>Verse'
      )
      == "Verse"
  )
  assert strip("<speaker>Beloved</speaker> Let him kiss me") == (
      "Let him kiss me"
  )
  assert (
      strip(
          '<note type="crossReference"><reference>Gen 1:1'
          "</reference></note>Word"
      )
      == "Word"
  )


def test_thml_and_gbf_markup_become_plain_text():
  assert (
      sword.strip_thml(
          '<div class="sechead">Heading</div>In <sync type="Strongs" '
          'value="H7225"/>the beginning<note>n</note> God<br/>created <scripRef>'
          "Joh 1:1</scripRef>all."
      )
      == "In the beginning God created all."
  )
  assert (
      sword.strip_gbf(
          "<TS>Heading<Ts>In the <FI>beginning<Fi><WH7225> God<RF>note<Rf> "
          "created<CM>all."
      )
      == "In the beginning God created all."
  )


def test_latin1_gbf_module_and_linked_verses(tmp_path):
  texts = {
      ("Gen", 1, 1): "En el principio cri\u00f3 Dios<RF>nota<Rf>.",
      ("Gen", 1, 2): "Y la tierra estaba desordenada y vac\u00eda,",
      ("Gen", 1, 5): "Y llam\u00f3 Dios a la luz D\u00eda.",
  }
  write_module(
      str(tmp_path),
      "Latin",
      texts,
      source_type="GBF",
      encoding="Latin-1",
      links={("Gen", 1, 3): ("Gen", 1, 2), ("Gen", 1, 4): ("Gen", 1, 2)},
  )
  verses = list(sword.SwordLibrary(str(tmp_path)).module("Latin").verses())
  assert [(verse.reference, verse.text) for verse in verses] == [
      ("Gen 1:1", "En el principio cri\u00f3 Dios."),
      ("Gen 1:2-4", "Y la tierra estaba desordenada y vac\u00eda,"),
      ("Gen 1:5", "Y llam\u00f3 Dios a la luz D\u00eda."),
  ]


def read_all(library: str, name: str = "Test") -> list:
  return list(sword.SwordLibrary(library).module(name).verses())


@pytest.mark.parametrize(
    "damage, file, message",
    [
        (
            lambda data: data[:-4],
            "ot.bzv",
            "is not a whole number of 10-byte entries",
        ),
        (
            lambda data: data[:-10],
            "ot.bzv",
            "24114 entries, but the KJV " "versification",
        ),
        (
            lambda data: data[:-7],
            "ot.bzs",
            "is not a whole number of 12-byte entries",
        ),
        (lambda data: data[:-30], "ot.bzz", "spans bytes"),
        (
            lambda data: data[:2] + b"\xff" * 8 + data[10:],
            "ot.bzz",
            "does not decompress",
        ),
    ],
)
def test_corrupt_files_fail_with_one_line_naming_the_file(
    tmp_path, damage, file, message
):
  directory = write_module(
      str(tmp_path),
      "Test",
      {("Gen", 1, 1): "In the beginning.", ("Mal", 4, 6): "Lest I come."},
  )
  path = os.path.join(directory, file)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(damage(data))
  with pytest.raises(ValueError) as error:
    read_all(str(tmp_path))
  text = str(error.value)
  assert message in text
  assert "\n" not in text
  # The named file is the damaged one, or the index that points into it.
  named = {"ot.bzz": ("ot.bzz", "ot.bzs")}.get(file, (file,))
  assert any(os.path.join(directory, name) in text for name in named), text


def test_verse_entry_pointing_outside_its_block_is_an_error(tmp_path):
  directory = write_module(str(tmp_path), "Test", {("Gen", 1, 1): "Text."})
  path = os.path.join(directory, "ot.bzv")
  with open(path, "r+b") as f:
    f.seek(4 * 10)  # Genesis 1:1: block 0, offset 0, size 5 -> 500.
    f.write(struct.pack("<IIH", 0, 0, 500))
  with pytest.raises(
      ValueError,
      match=r"ot\.bzv: entry 4 \(Gen 1:1\) spans "
      r"bytes 0 to 500 of block 0, which has 5",
  ):
    read_all(str(tmp_path))
  with open(path, "r+b") as f:
    f.seek(4 * 10)
    f.write(struct.pack("<IIH", 99, 0, 5))
  with pytest.raises(
      ValueError, match=r"points to block 99, but ot\.bzs has " "39 blocks"
  ):
    read_all(str(tmp_path))


def test_conf_problems_are_named(tmp_path):
  write_module(str(tmp_path), "Test", {("Gen", 1, 1): "x"})
  conf = os.path.join(str(tmp_path), "mods.d", "test.conf")
  with open(conf, encoding="utf-8") as f:
    original = f.read()
  for old, new, expected in [
      (
          "Versification=KJV",
          "Versification=Vulg",
          "Versification='Vulg' is not supported; supported: KJV, NRSVA",
      ),
      ("ModDrv=zText", "ModDrv=RawText", "ModDrv=RawText; only zText"),
      (
          "CompressType=ZIP",
          "CompressType=LZSS",
          "CompressType=LZSS is not " "supported",
      ),
      (
          "SourceType=OSIS",
          "SourceType=TEI",
          "SourceType=TEI is not " "supported",
      ),
      ("DataPath=", "Path=", "no DataPath= setting"),
      (
          "[Test]",
          "Test",
          "test.conf:2: expected the module name in " "brackets",
      ),
  ]:
    with open(conf, "w", encoding="utf-8") as f:
      f.write(original.replace(old, new))
    with pytest.raises(ValueError) as error:
      read_all(str(tmp_path))
    assert expected in str(error.value)
    assert "\n" not in str(error.value)
  with open(conf, "w", encoding="utf-8") as f:
    f.write(original)
  with pytest.raises(
      ValueError, match="No SWORD module named 'Other'; " "modules found: Test"
  ):
    sword.SwordLibrary(str(tmp_path)).module("Other")
  with pytest.raises(ValueError, match="is not a SWORD library"):
    sword.SwordLibrary(os.path.join(str(tmp_path), "modules"))


def load_script():
  spec = importlib.util.spec_from_file_location(
      "prepare_bible_parallel", SCRIPT
  )
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up.
  spec.loader.exec_module(module)
  return module


def chapter_texts(language: str, book: str, chapters: int, verses: int):
  return {
      (book, chapter, verse): f"{language} {book} {chapter}:{verse} "
      + "word " * (3 + (chapter * 7 + verse) % 5)
      for chapter in range(1, chapters + 1)
      for verse in range(1, verses + 1)
  }


def test_corpus_script_aligns_and_splits_by_chapter(tmp_path):
  english = chapter_texts("en", "Gen", 10, 4)
  spanish = chapter_texts("es", "Gen", 10, 4)
  # A tab and a note inside a verse.
  english[("Gen", 1, 2)] = english[("Gen", 1, 2)].replace(
      "1:2 ", "1:2<note>n</note>\t"
  )
  del spanish[("Gen", 2, 3)]  # One side lacks it.
  spanish[("Gen", 3, 2)] = "<note>only a note</note>"  # Empty once stripped.
  english.update(chapter_texts("en", "Exod", 1, 4))  # Only in English.
  # Spanish moves the last verse of chapter 5 into chapter 6, which is
  # then one verse off: both chapters are dropped.
  del spanish[("Gen", 5, 4)]
  # A merged verse: far longer than its translation.
  spanish[("Gen", 7, 1)] += "merged " * 40
  english_root, spanish_root = tmp_path / "web", tmp_path / "sparv"
  write_module(
      str(english_root / "usr/share/sword"), "English", english, scheme="NRSVA"
  )
  write_module(str(spanish_root), "Spanish", spanish)
  script = load_script()
  output = str(tmp_path / "out")
  splits = script.build(
      sword_dirs=[str(english_root), str(spanish_root)],
      source_module="English",
      target_module="Spanish",
      output_dir=output,
      validation_verses=5,
      test_verses=3,
      seed=7,
      max_length_ratio=2.0,
  )
  rows = {}
  for split in ("train", "validation", "test"):
    with open(os.path.join(output, f"{split}.tsv"), encoding="utf-8") as f:
      reader = csv.reader(f, delimiter="\t")
      assert next(reader) == ["source", "target"]
      rows[split] = list(reader)
    assert [[pair.source, pair.target] for pair in splits[split]] == (
        rows[split]
    )
  pairs = [pair for split in splits.values() for pair in split]
  keys = {(pair.book, pair.chapter, pair.verse) for pair in pairs}
  expected = {key for key in spanish if key[1] not in (5, 6)} - {
      ("Gen", 3, 2),
      ("Gen", 7, 1),
  }
  assert keys == expected
  for pair in pairs:
    assert pair.source.replace("en ", "es ", 1) == pair.target
  assert not any(
      "\t" in text or "n" in text.split()
      for split_rows in rows.values()
      for row in split_rows
      for text in row
  )
  chapters = {
      split: {(pair.book, pair.chapter) for pair in split_pairs}
      for split, split_pairs in splits.items()
  }
  assert not chapters["test"] & chapters["validation"]
  assert not (chapters["test"] | chapters["validation"]) & chapters["train"]
  assert 3 <= len(splits["test"]) < 3 + 4
  assert 5 <= len(splits["validation"]) < 5 + 4
  again = script.build(
      sword_dirs=[str(english_root), str(spanish_root)],
      source_module="English",
      target_module="Spanish",
      output_dir=str(tmp_path / "again"),
      validation_verses=5,
      test_verses=3,
      seed=7,
      max_length_ratio=2.0,
  )
  assert again == splits


def test_corpus_script_command_line(tmp_path):
  write_module(
      str(tmp_path / "lib"), "English", chapter_texts("en", "Ruth", 4, 3)
  )
  write_module(
      str(tmp_path / "lib"), "Spanish", chapter_texts("es", "Ruth", 4, 3)
  )
  command = [
      sys.executable,
      SCRIPT,
      f"--sword_dir={tmp_path / 'lib'}",
      "--source_module=English",
      "--target_module=Spanish",
      f"--output_dir={tmp_path / 'out'}",
      "--validation_verses=3",
      "--test_verses=3",
  ]
  result = subprocess.run(
      command, capture_output=True, text=True, cwd=str(tmp_path), check=False
  )
  assert result.returncode == 0, result.stderr
  assert "aligned 12 verses" in result.stdout
  assert "test.tsv: 3 verses from 1 chapters" in result.stdout
  result = subprocess.run(
      command[:2] + [f"--sword_dir={tmp_path}"] + command[3:],
      capture_output=True,
      text=True,
      cwd=str(tmp_path),
      check=False,
  )
  assert result.returncode == 2
  errors = [
      line
      for line in result.stderr.splitlines()
      if line.startswith("prepare_bible_parallel: error:")
  ]
  assert errors == [
      f"prepare_bible_parallel: error: {tmp_path} is not a "
      "SWORD library: it has neither mods.d/ nor "
      "usr/share/sword/mods.d/."
  ]


def test_text_in_the_wrong_encoding_names_the_file_and_verse(tmp_path):
  directory = write_module(
      str(tmp_path), "Test", {("Gen", 1, 2): "vac\u00eda"}, encoding="Latin-1"
  )
  conf = os.path.join(str(tmp_path), "mods.d", "test.conf")
  with open(conf, encoding="utf-8") as f:
    text = f.read()
  with open(conf, "w", encoding="utf-8") as f:
    f.write(text.replace("Encoding=Latin-1", "Encoding=UTF-8"))
  with pytest.raises(
      ValueError,
      match=re.escape(
          f"{os.path.join(directory, 'ot.bzz')}: Gen 1:2 is not valid UTF-8"
      ),
  ):
    read_all(str(tmp_path))


def test_chapter_markers_are_checked_against_the_versification(tmp_path):
  texts = {
      ("Gen", 1, 0): '<chapter n="1" osisID="Gen.1" sID="Gen.1"/>',
      ("Gen", 1, 1): "In the beginning.",
      ("Gen", 2, 0): '<title>The seventh day</title><chapter n="2" '
      'osisID="Gen.2" sID="Gen.2"/>',
      ("Gen", 2, 1): "The heavens were finished.",
  }
  write_module(str(tmp_path), "Test", texts)
  module = sword.SwordLibrary(str(tmp_path)).module("Test")
  assert module.check_chapter_markers() == 2
  assert [verse.text for verse in module.verses()] == [
      "In the beginning.",
      "The heavens were finished.",
  ]
  texts[("Gen", 2, 0)] = '<chapter osisID="Gen.3" sID="Gen.3"/>'
  directory = write_module(str(tmp_path), "Test", texts)
  module = sword.SwordLibrary(str(tmp_path)).module("Test")
  with pytest.raises(
      ValueError,
      match=re.escape(
          f"{os.path.join(directory, 'ot.bzv')}: the heading entry of Gen 2 "
          "holds the marker of Gen.3; the module does not follow the KJV "
          "versification"
      ),
  ):
    module.check_chapter_markers()
