"""Words of raw text in the graph, with character offsets.

One word splitter for every task that works on words (token
classification's serving, question answering's answer spans): whitespace
separates words, and each punctuation mark or CJK character is a word of
its own, as BERT's basic tokenizer splits text before WordPiece.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_text as tf_text

# BERT's basic tokenizer: ASCII symbols count as punctuation too.
_PUNCTUATION = r"\p{P}!-/:-@\[-`{-~"
_CJK = (
    r"\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}"
    r"\x{2A700}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}"
    r"\x{2F800}-\x{2FA1F}"
)
# What separates words, and which separators are words themselves.
WORD_DELIMITER = rf"\s|[{_PUNCTUATION}{_CJK}]"
KEPT_DELIMITER = rf"[{_PUNCTUATION}{_CJK}]"


def split_words(
    texts: tf.Tensor,
) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
  """Splits UTF-8 texts [batch] into words.

  Returns:
    (words, starts, ends): string and int32 RaggedTensors [batch, (words)];
    each word is `text[start:end]` in characters (not bytes).
  """
  words, starts, ends = tf_text.regex_split_with_offsets(
      texts, WORD_DELIMITER, KEPT_DELIMITER
  )
  return (
      words,
      character_offsets(texts, starts),
      character_offsets(texts, ends),
  )


def character_offsets(
    texts: tf.Tensor, byte_offsets: tf.RaggedTensor
) -> tf.RaggedTensor:
  """Byte offsets into UTF-8 texts [batch] as character offsets."""
  per_word_text = tf.gather(texts, byte_offsets.value_rowids())
  prefixes = tf.strings.substr(
      per_word_text,
      tf.zeros_like(byte_offsets.flat_values),
      byte_offsets.flat_values,
  )
  return byte_offsets.with_flat_values(
      tf.cast(tf.strings.length(prefixes, unit="UTF8_CHAR"), tf.int32)
  )
