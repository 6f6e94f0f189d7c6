"""Translation: an encoder-decoder writes the target text of a source text.

Unlike the other tasks this one does not put a head on an encoder: the model
is a whole `transformers` TF encoder-decoder (`TFAutoModelForSeq2SeqLM`: T5,
Marian, BART families), either pretrained (`--model`), warm-started from a
BERT-family encoder checkpoint (`--warm_start=bert2bert`: a
`TFEncoderDecoderModel` whose encoder and decoder both start from it), or
built from a config with random weights (`--model_config`) together with a
SentencePiece vocabulary trained on the training sources and targets. The task builds,
saves, loads and exports that model itself, while the shared training phases
keep the schedules, AdamW, mixed precision, callbacks (early stopping, best
and final checkpoints, backups, TensorBoard) and the run summary.

Data: CSV, TSV or JSONL files with `--source_column`/`--target_column`,
plain line-aligned files (`--train_file=train.en --train_target_file=
train.es`), or TFDS translation data sets (`--tfds_name=wmt14_translate/de-en
--source_language=en --target_language=de`).

Training is teacher-forced: the decoder reads the target shifted right by one
(after the decoder start token) and learns to predict each next token; padding
is masked out of the loss and of the token accuracy. Evaluation generates
translations (greedy, or beam search with `--num_beams` and
`--length_penalty`) and scores them with
sacreBLEU's corpus BLEU and chrF.

Serving: `serving_default` takes raw source strings `text` (string [batch])
and returns `translation` (string [batch]); tokenization (SentencePiece,
WordPiece or byte-level BPE), the search (greedy or beam, `generate`'s rules
re-implemented for a graph of any batch size) and decoding back to text run
in the graph (Marian's tokenizer has no in-graph twin: refused).

Modules: `reading` (parallel files and TFDS), `vocab` (SentencePiece and
pretrained tokenizers), `model` (the teacher-forced encoder-decoder),
`decoding` (generation and BLEU/chrF), `server` (the export and Python
translation) and `task` (the `Translation` task).
"""

from __future__ import annotations

from tf_finetune.tasks.translation.decoding import (
    Decoding,
    generate_ids,
    repeated_ngram_tokens,
    search_in_graph,
    translation_metrics,
)
from tf_finetune.tasks.translation.model import (
    DEFAULT_T5_CONFIG,
    LABEL_PADDING,
    Seq2SeqModel,
    build_seq2seq,
    masked_token_losses,
    model_config_from,
    seq2seq_class,
    shift_targets,
)
from tf_finetune.tasks.translation.reading import (
    TFDS_FEATURE_HINT,
    decode_utf8,
    is_plain_text,
    prefix_with_space,
    read_line_aligned,
    read_lines,
    read_parallel_records,
    read_tfds_translation,
    with_prefix,
)
from tf_finetune.tasks.translation.server import (
    PythonTranslator,
    TRANSLATION_OUTPUT,
    TranslationServer,
)
from tf_finetune.tasks.translation.task import Translation
from tf_finetune.tasks.translation.vocab import (
    HuggingFaceServing,
    HuggingFaceVocab,
    SPIECE_FILENAME,
    SentencePieceServing,
    SentencePieceVocab,
    WarmStartVocab,
    graph_vocab_of,
    load_vocab,
    strip_generated,
    strip_generated_rows,
)
