"""Reads Bible texts from SWORD zText modules as plain-text verses.

A SWORD library is a directory with `mods.d/<module>.conf` files; each conf
names the module's files (DataPath=, relative to the library) and how to read
them: ModDrv=zText (compressed text), CompressType= (ZIP is zlib),
SourceType= (the markup: OSIS, ThML, GBF or plain), Encoding= (UTF-8 or
Latin-1, the default) and Versification= (KJV when absent).

A zText module stores each testament in three files, all little-endian:

* `ot.bzs` / `nt.bzs`, the block index: 12 bytes per block, uint32 offset
  and uint32 size of the compressed block in the `.bzz` file, then uint32
  size of the block once decompressed.
* `ot.bzv` / `nt.bzv`, the verse index: 10 bytes per entry, uint32 block
  number, uint32 offset of the entry's text in the decompressed block, uint16
  size of the text (0: no text).
* `ot.bzz` / `nt.bzz`, the compressed blocks one after another.

The entries of the verse index follow the module's versification, headings
included (module, testament, each book, each chapter; see
`versification.Versification.index_layout`), so entry N is a verse only by
its position. Consecutive entries with the same block, offset and size are
linked verses: one text that the module gives to several verses.

    library = sword.SwordLibrary("/usr/share/sword")
    module = library.module("engWEB2015eb")
    for verse in module.verses():
      print(verse.reference, verse.text)
"""

from __future__ import annotations

import bz2
import dataclasses
import html
import lzma
import os
import re
import struct
import zlib
from typing import Callable, Iterator

from . import versification as versification_lib

_BLOCK_ENTRY = struct.Struct("<III")
_CHAPTER_MARKER = re.compile(rb'<chapter\b[^>]*\bosisID="([^"]+)"')
_VERSE_ENTRY = struct.Struct("<IIH")
TESTAMENTS = ("ot", "nt")

_DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "ZIP": zlib.decompress,
    "BZIP2": bz2.decompress,
    "XZ": lzma.decompress,
}


@dataclasses.dataclass(frozen=True)
class ModuleConfig:
  """What a module's `mods.d/*.conf` says about reading it."""

  name: str
  conf_path: str
  data_path: str
  driver: str
  source_type: str
  encoding: str
  compress_type: str
  block_type: str
  versification: str
  language: str
  version: str
  description: str
  distribution_license: str


def read_module_config(conf_path: str) -> ModuleConfig:
  """Parses one SWORD module conf file.

  The format is `[ModuleName]` followed by `Key=Value` lines; `#` starts a
  comment line and a value ending in a backslash continues on the next line.
  Keys may repeat (the first value is kept).

  Raises:
    ValueError: naming the file and line when it is not a module conf.
  """
  with open(conf_path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError:
    text = raw.decode("latin-1")
  name = None
  values: dict[str, str] = {}
  pending_key = None
  for line_number, line in enumerate(text.splitlines(), start=1):
    if pending_key is not None:
      continued = line.rstrip()
      values[pending_key] += " " + continued.rstrip("\\").strip()
      if not continued.endswith("\\"):
        pending_key = None
      continue
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
      continue
    if name is None:
      if not (stripped.startswith("[") and stripped.endswith("]")):
        raise ValueError(
            f"{conf_path}:{line_number}: expected the module name in "
            f"brackets ([ModuleName]) before any setting, got {stripped!r}."
        )
      name = stripped[1:-1].strip()
      continue
    if "=" not in stripped:
      raise ValueError(
          f"{conf_path}:{line_number}: expected Key=Value, got "
          f"{stripped!r}."
      )
    key, value = (part.strip() for part in stripped.split("=", 1))
    if key in values:
      continue
    values[key] = value.rstrip("\\").strip()
    if value.endswith("\\"):
      pending_key = key
  if name is None:
    raise ValueError(
        f"{conf_path}: no [ModuleName] line; not a SWORD module " "conf."
    )
  if "DataPath" not in values:
    raise ValueError(
        f"{conf_path}: no DataPath= setting; cannot locate the "
        f"files of module {name}."
    )
  return ModuleConfig(
      name=name,
      conf_path=conf_path,
      data_path=values["DataPath"],
      driver=values.get("ModDrv", ""),
      source_type=values.get("SourceType", "Plain"),
      encoding=values.get("Encoding", "Latin-1"),
      compress_type=values.get("CompressType", "LZSS"),
      block_type=values.get("BlockType", "CHAPTER"),
      versification=values.get("Versification", "KJV"),
      language=values.get("Lang", ""),
      version=values.get("Version", ""),
      description=values.get("Description", ""),
      distribution_license=values.get("DistributionLicense", ""),
  )


def find_library(directory: str) -> str:
  """The SWORD library in `directory`: itself, or an extracted package root.

  Accepts a directory holding `mods.d/` or one holding
  `usr/share/sword/mods.d/` (what `dpkg-deb -x` of a Debian sword-text
  package leaves).
  """
  for candidate in (
      directory,
      os.path.join(directory, "usr", "share", "sword"),
  ):
    if os.path.isdir(os.path.join(candidate, "mods.d")):
      return candidate
  raise ValueError(
      f"{directory} is not a SWORD library: it has neither "
      "mods.d/ nor usr/share/sword/mods.d/."
  )


class SwordLibrary:
  """The modules of one or more SWORD library directories."""

  def __init__(self, *directories: str):
    self.configs: dict[str, tuple[str, ModuleConfig]] = {}
    for directory in directories:
      library = find_library(directory)
      mods_d = os.path.join(library, "mods.d")
      for filename in sorted(os.listdir(mods_d)):
        if filename.endswith(".conf"):
          config = read_module_config(os.path.join(mods_d, filename))
          self.configs.setdefault(config.name, (library, config))

  def module(self, name: str) -> ZTextModule:
    if name not in self.configs:
      known = ", ".join(sorted(self.configs)) or "none"
      raise ValueError(
          f"No SWORD module named {name!r}; modules found: " f"{known}."
      )
    library, config = self.configs[name]
    return ZTextModule(config, library)


@dataclasses.dataclass(frozen=True)
class Verse:
  """One verse as plain text.

  `last_verse` is `verse` unless the module links this text to the
  following verses too (then it covers `verse` to `last_verse`).
  """

  book: str
  chapter: int
  verse: int
  text: str
  last_verse: int

  @property
  def key(self) -> tuple[str, int, int]:
    return (self.book, self.chapter, self.verse)

  @property
  def reference(self) -> str:
    span = (
        f"{self.verse}"
        if self.last_verse == self.verse
        else f"{self.verse}-{self.last_verse}"
    )
    return f"{self.book} {self.chapter}:{span}"


class ZTextModule:
  """One zText module: its index entries as raw bytes, its verses as text."""

  def __init__(self, config: ModuleConfig, library: str):
    if config.driver.lower() != "ztext":
      raise ValueError(
          f"{config.conf_path}: ModDrv={config.driver or '(missing)'}; only "
          "zText modules can be read."
      )
    if config.compress_type.upper() not in _DECOMPRESSORS:
      raise ValueError(
          f"{config.conf_path}: CompressType={config.compress_type} is not "
          f"supported; supported: {', '.join(_DECOMPRESSORS)}."
      )
    if config.encoding.upper() not in ("UTF-8", "UTF8", "LATIN-1", "LATIN1"):
      raise ValueError(
          f"{config.conf_path}: Encoding={config.encoding}; "
          "expected UTF-8 or Latin-1."
      )
    self.config = config
    self.versification = versification_lib.get_versification(
        config.versification
    )
    self.markup = _markup_stripper(config)
    self.directory = os.path.normpath(os.path.join(library, config.data_path))
    if not os.path.isdir(self.directory):
      raise ValueError(
          f"{config.conf_path}: DataPath={config.data_path} "
          f"does not exist ({self.directory})."
      )
    decompress = _DECOMPRESSORS[config.compress_type.upper()]
    self._testaments = {
        testament: _TestamentFiles(self.directory, testament, decompress)
        for testament in TESTAMENTS
        if _TestamentFiles.exists(self.directory, testament)
    }
    if not self._testaments:
      raise ValueError(
          f"{self.directory}: no ot.bzs/ot.bzv/ot.bzz or "
          "nt.bzs/nt.bzv/nt.bzz files."
      )

  @property
  def name(self) -> str:
    return self.config.name

  def raw_entries(
      self, testament: str
  ) -> Iterator[tuple[versification_lib.IndexPosition, bytes, bool]]:
    """(position, text bytes, linked to previous entry) of every entry."""
    files = self._testaments.get(testament)
    if files is None:
      return
    layout = list(self.versification.index_layout(testament))
    entries = files.verse_index()
    if len(entries) != len(layout):
      raise ValueError(
          f"{files.bzv}: {len(entries)} entries, but the "
          f"{self.versification.name} versification (Versification= in "
          f"{self.config.conf_path}) has {len(layout)} positions in this "
          "testament; the index is truncated or the versification is wrong."
      )
    previous = None
    for number, (position, entry) in enumerate(zip(layout, entries)):
      block, offset, size = entry
      linked = size > 0 and entry == previous and position.verse > 1
      previous = entry
      if size == 0:
        yield position, b"", False
        continue
      yield position, files.text(number, position, block, offset, size), linked

  def verses(self) -> Iterator[Verse]:
    """Every verse that has text, as plain text, in index order.

    Linked verses come as one `Verse` spanning them. Verses whose text is
    empty after markup is removed are left out.
    """
    pending = None
    for testament in TESTAMENTS:
      for position, raw, linked in self.raw_entries(testament):
        if not position.is_verse:
          continue
        if linked and pending is not None:
          pending = dataclasses.replace(pending, last_verse=position.verse)
          continue
        if pending is not None and pending.text:
          yield pending
        pending = None
        if raw:
          pending = Verse(
              position.book,
              position.chapter,
              position.verse,
              self.markup(self._decode(raw, position, testament)),
              position.verse,
          )
    if pending is not None and pending.text:
      yield pending

  def check_chapter_markers(self) -> int:
    """Checks the module's own chapter markers against the versification.

    OSIS modules usually keep a `<chapter osisID="Gen.2"/>` milestone in the
    heading entry of each chapter. If the versification were wrong, these
    would sit at other positions than the versification expects.

    Returns:
      How many chapter heading entries carried a marker (all of them agree).

    Raises:
      ValueError: naming the first chapter heading whose marker disagrees.
    """
    checked = 0
    for testament in TESTAMENTS:
      for position, raw, _ in self.raw_entries(testament):
        if not (position.book and position.chapter and not position.verse):
          continue
        markers = _CHAPTER_MARKER.findall(raw)
        if not markers:
          continue
        expected = f"{position.book}.{position.chapter}".encode()
        if markers[-1] != expected:
          raise ValueError(
              f"{self._testaments[testament].bzv}: the heading entry of "
              f"{position.book} {position.chapter} holds the marker of "
              f"{markers[-1].decode(errors='replace')}; the module does not "
              f"follow the {self.versification.name} versification "
              f"(Versification= in {self.config.conf_path})."
          )
        checked += 1
    return checked

  def _decode(self, raw: bytes, position, testament: str) -> str:
    encoding = (
        "utf-8" if self.config.encoding.upper().startswith("UTF") else "latin-1"
    )
    try:
      return raw.decode(encoding)
    except UnicodeDecodeError as e:
      raise ValueError(
          f"{self._testaments[testament].bzz}: {position.book} "
          f"{position.chapter}:{position.verse} is not valid "
          f"{self.config.encoding} "
          f"(Encoding= in {self.config.conf_path}): {e}."
      ) from None


class _TestamentFiles:
  """The three files of one testament, read and checked on first use."""

  def __init__(
      self, directory: str, testament: str, decompress: Callable[[bytes], bytes]
  ):
    self.bzs, self.bzv, self.bzz = (
        os.path.join(directory, f"{testament}.{extension}")
        for extension in ("bzs", "bzv", "bzz")
    )
    self.testament = testament
    missing = [
        path
        for path in (self.bzs, self.bzv, self.bzz)
        if not os.path.isfile(path)
    ]
    if missing:
      raise ValueError(
          f"{missing[0]} is missing; a zText testament needs "
          f"{testament}.bzs, {testament}.bzv and "
          f"{testament}.bzz."
      )
    self._blocks = None
    self._compressed = None
    self._cache: dict[int, bytes] = {}
    self.decompress = decompress

  @staticmethod
  def exists(directory: str, testament: str) -> bool:
    return any(
        os.path.exists(os.path.join(directory, f"{testament}.{ext}"))
        for ext in ("bzs", "bzv", "bzz")
    )

  def verse_index(self) -> list[tuple[int, int, int]]:
    return _read_records(self.bzv, _VERSE_ENTRY, "block number, offset, size")

  def block_index(self) -> list[tuple[int, int, int]]:
    if self._blocks is None:
      self._blocks = _read_records(
          self.bzs, _BLOCK_ENTRY, "offset, size, uncompressed size"
      )
      with open(self.bzz, "rb") as f:
        self._compressed = f.read()
      for number, (offset, size, _) in enumerate(self._blocks):
        if offset + size > len(self._compressed):
          raise ValueError(
              f"{self.bzs}: block {number} spans bytes {offset} to "
              f"{offset + size} but {os.path.basename(self.bzz)} has "
              f"{len(self._compressed)}; the files are truncated or "
              "corrupt."
          )
    return self._blocks

  def block(self, number: int) -> bytes:
    if number not in self._cache:
      offset, size, expected = self.block_index()[number]
      try:
        data = self.decompress(self._compressed[offset : offset + size])
      except (zlib.error, OSError, lzma.LZMAError, ValueError) as e:
        raise ValueError(
            f"{self.bzz}: block {number} (bytes {offset} to "
            f"{offset + size}) does not decompress: "
            f"{e}."
        ) from None
      if len(data) != expected:
        raise ValueError(
            f"{self.bzz}: block {number} decompresses to {len(data)} bytes, "
            f"but {os.path.basename(self.bzs)} says {expected}; the files "
            "are corrupt."
        )
      self._cache = {number: data}  # Entries come in block order.
      return data
    return self._cache[number]

  def text(
      self, number: int, position, block: int, offset: int, size: int
  ) -> bytes:
    where = (
        f"entry {number} ({position.book} {position.chapter}:"
        f"{position.verse})"
        if position.book
        else f"entry {number}"
    )
    blocks = self.block_index()
    if block >= len(blocks):
      raise ValueError(
          f"{self.bzv}: {where} points to block {block}, but "
          f"{os.path.basename(self.bzs)} has {len(blocks)} blocks; the index "
          "is corrupt."
      )
    data = self.block(block)
    if offset + size > len(data):
      raise ValueError(
          f"{self.bzv}: {where} spans bytes {offset} to {offset + size} of "
          f"block {block}, which has {len(data)}; the index is corrupt."
      )
    return data[offset : offset + size]


def _read_records(
    path: str, record: struct.Struct, fields: str
) -> list[tuple[int, ...]]:
  with open(path, "rb") as f:
    data = f.read()
  if len(data) % record.size:
    raise ValueError(
        f"{path}: {len(data)} bytes is not a whole number of "
        f"{record.size}-byte entries ({fields}); the file is truncated or "
        "corrupt."
    )
  return [
      record.unpack_from(data, start)
      for start in range(0, len(data), record.size)
  ]


# Markup. Each stripper turns one entry's markup into plain text: notes,
# headings and non-Scripture material go, the words stay.

_TAG = re.compile(
    r"<(/?)([A-Za-z][\w:.-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)" r"(/?)>"
)
_ATTRIBUTE = re.compile(r"([\w:.-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
# A removed note between two letters ("God<note>..</note>created") stood
# where a space belongs; elsewhere ("God<note>..</note>, who") it did not.
_GAP = "\x00"
# A line or paragraph break separates words, but not a word from the
# punctuation after it ("Yahweh<l eID='x'/>," is "Yahweh,").
_BREAK = "\x01"
# OSIS elements whose content is not Scripture text. Titles are dropped
# unless canonical="true" (psalm superscriptions are Scripture).
_OSIS_DROPPED = {"note", "speaker", "rdg", "catchWord", "figure"}
# Divisions (as containers or sID/eID milestones) that hold no verse text.
_OSIS_DROPPED_DIVS = {
    "front",
    "introduction",
    "glossary",
    "back",
    "preface",
    "colophon",
    "coverPage",
    "titlePage",
    "appendix",
    "index",
    "bibliography",
    "acknowledgement",
    "publicationData",
    "imprimatur",
    "map",
    "outline",
    "summary",
    "dedication",
}
_OSIS_BREAKS = {
    "l",
    "lb",
    "lg",
    "p",
    "div",
    "chapter",
    "verse",
    "item",
    "list",
    "title",
    "milestone",
    "br",
}
_THML_DROPPED = {
    "note",
    "scripRef",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "added",
}
_THML_DROPPED_DIVS = {"sechead", "title", "heading", "preface", "introduction"}
_THML_BREAKS = {"br", "p", "div", "pb", "l", "lg", "li", "ul", "ol"}


def _attributes(text: str) -> dict[str, str]:
  return {
      m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
      for m in _ATTRIBUTE.finditer(text)
  }


def _finish(text: str) -> str:
  """Decodes entities and normalizes whitespace."""
  # Neither a removed note nor a break stands before punctuation.
  text = re.sub(
      rf"\s*[{_GAP}{_BREAK}][\s{_GAP}{_BREAK}]*(?=[,.;:!?])", "", text
  )
  text = re.sub(rf"(?<=\w){_GAP}+(?=\w)", " ", text).replace(_GAP, "")
  text = text.replace(_BREAK, " ")
  return " ".join(html.unescape(text).split())


def _strip_xml(
    markup: str,
    *,
    dropped: set[str],
    dropped_divs: set[str],
    breaks: set[str],
    keeps: Callable[[str, dict], bool],
    div_kind: str,
) -> str:
  """Plain text of OSIS or ThML markup.

  Args:
    markup: One entry's text.
    dropped: Elements whose content is removed.
    dropped_divs: Values of the `div_kind` attribute of divisions whose
      content is removed (containers, or sID/eID milestone pairs).
    breaks: Elements that separate words (replaced by a space).
    keeps: Says if an element that would be dropped keeps its content
      (e.g. a canonical title), given its name and attributes.
    div_kind: The attribute that names a division's kind ("type", "class").
  """
  out = []
  open_tags: list[tuple[str, bool]] = []  # (name, drops its content)
  dropping = 0
  dropped_milestones: set[str] = set()
  position = 0
  for match in _TAG.finditer(markup):
    if not dropping and not dropped_milestones:
      out.append(markup[position : match.start()])
    position = match.end()
    closing, name, attribute_text, self_closing = match.groups()
    attributes = _attributes(attribute_text)
    if name in breaks and not dropping:
      out.append(_BREAK)
    if closing:
      for depth in range(len(open_tags) - 1, -1, -1):
        if open_tags[depth][0] == name:
          was_dropping = dropping
          dropping -= sum(drops for _, drops in open_tags[depth:])
          del open_tags[depth:]
          if was_dropping and not dropping:
            out.append(_GAP)
          break
      continue
    kind = attributes.get(div_kind, "")
    if self_closing:
      if name == "div" and kind in dropped_divs and "sID" in attributes:
        dropped_milestones.add(attributes["sID"])
      elif name == "div" and attributes.get("eID") in dropped_milestones:
        dropped_milestones.discard(attributes["eID"])
      continue
    drops = (
        name in dropped
        or name == "title"
        or (name == "div" and kind in dropped_divs)
    ) and not keeps(name, attributes)
    open_tags.append((name, drops))
    dropping += drops
  if not dropping and not dropped_milestones:
    out.append(markup[position:])
  return _finish("".join(out))


def strip_osis(markup: str) -> str:
  """Plain text of OSIS markup: words kept; notes, headings, intros gone."""
  return _strip_xml(
      markup,
      dropped=_OSIS_DROPPED,
      dropped_divs=_OSIS_DROPPED_DIVS,
      breaks=_OSIS_BREAKS,
      div_kind="type",
      keeps=lambda name, attributes: (
          name == "title" and attributes.get("canonical") == "true"
      ),
  )


def strip_thml(markup: str) -> str:
  """Plain text of ThML markup: notes, references and headings removed."""
  return _strip_xml(
      markup,
      dropped=_THML_DROPPED,
      dropped_divs=_THML_DROPPED_DIVS,
      breaks=_THML_BREAKS,
      div_kind="class",
      keeps=lambda name, attributes: False,
  )


# GBF codes are <XY...> with upper-case letters; a pair opens with upper-case
# and closes with the second letter lower-case (<RF>note<Rf>).
_GBF_DROPPED = re.compile(
    r"<RF>.*?<Rf>|<TS>.*?<Ts>|<TT>.*?<Tt>|<RX[^>]*>.*?<Rx>", re.DOTALL
)
_GBF_BREAK = re.compile(r"<C[MLG]>|<CP[^>]*>")
_GBF_TAG = re.compile(r"<[A-Z][A-Za-z][^>]*>")


def strip_gbf(markup: str) -> str:
  """Plain text of GBF markup: footnotes and titles removed, codes gone."""
  text = _GBF_DROPPED.sub(_GAP, markup)
  text = _GBF_BREAK.sub(_BREAK, text)
  return _finish(_GBF_TAG.sub("", text))


def strip_plain(markup: str) -> str:
  return " ".join(markup.split())


_STRIPPERS = {
    "OSIS": strip_osis,
    "THML": strip_thml,
    "GBF": strip_gbf,
    "PLAIN": strip_plain,
}


def _markup_stripper(config: ModuleConfig) -> Callable[[str], str]:
  try:
    return _STRIPPERS[config.source_type.upper()]
  except KeyError:
    raise ValueError(
        f"{config.conf_path}: SourceType={config.source_type} is not "
        "supported; supported: OSIS, ThML, GBF, Plain."
    ) from None
