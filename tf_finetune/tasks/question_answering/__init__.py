"""Extractive question answering: the span of a context that answers a question.

Reads SQuAD JSON files (v1.1, and v2.0 with `is_impossible` questions),
JSONL files with a question, a context and SQuAD-style answers per line
(`{"text": [...], "answer_start": [...]}` or a list of `{"text",
"answer_start"}` objects), and the TFDS `squad/v1.1` and `squad/v2.0` data
sets. CSV/TSV files (a question and a context column) are read for
prediction only: they cannot hold answers.

Windows. The model reads `[CLS] question [SEP] context window [SEP]`. The
question keeps at most `--max_question_length` tokens (and at most half the
sequence); a context longer than the rest is read in windows of B =
max_seq_length - question - 3 tokens, window j starting at token
j x min(doc_stride, B), until one window reaches the context's end (the BERT
SQuAD recipe: with B = 100 and a stride of 64, a 230-token context gives
windows [0, 100), [64, 164), [128, 228), [192, 230)).

Offsets. Contexts are split into words the way BERT's basic tokenizer does
(whitespace; every punctuation mark and CJK character a word), each with its
character offsets into the original string, and each word into WordPiece
tokens; a token's character span is its word's. An answer's character span
becomes the first token of the first word it touches and the last token of
the last word it touches. A window that does not hold the whole answer, and
an unanswerable question, point both targets at [CLS] (position 0).

Post-processing, the same TensorFlow code for evaluation and serving: per
window the `--n_best_size` best starts and ends inside the context are
paired (end >= start, at most `--max_answer_length` tokens); the pair with
the highest start + end logit over all windows of an example wins, and is
mapped back to character offsets of the original context. With
`--allow_no_answer` (SQuAD v2.0) the no-answer score is the lowest
start[CLS] + end[CLS] over the windows, and the answer is empty when it
beats the best span's score by more than `--null_score_threshold` (chosen
on validation data for the best F1 unless given, saved in task_state.json
and in the export).

Metrics are those of the official SQuAD evaluation scripts: exact match and
F1 in percent, answers normalized (lowercase, punctuation and the articles
a/an/the removed, whitespace collapsed), the best over the gold answers; an
unanswerable question's gold answer is the empty string. With
`--allow_no_answer` they are named as the v2.0 script names them: `exact`
and `f1` at the threshold used, the HasAns/NoAns breakdown, and `best_exact`,
`best_f1` with their thresholds (`best_*_thresh`), the scores at the
threshold best for the scored questions themselves.

The export takes raw `question` and `context` strings and returns the
`answer` text, its `score`, its character offsets `start` and `end` (-1 and
an empty answer when the model answers nothing) and the `null_score`.

Modules: `reading` (files and TFDS), `windows` (inputs and targets),
`postprocess` (logits to answers), `metrics` (SQuAD scores, loss), `server`
(the export) and `task` (the `QuestionAnswering` task).
"""

from __future__ import annotations

from tf_finetune.tasks.question_answering.metrics import (
    PositionAccuracy,
    best_null_threshold,
    best_threshold_scores,
    exact_match_score,
    f1_score,
    gold_texts,
    normalize_answer,
    span_loss,
    squad_scores,
)
from tf_finetune.tasks.question_answering.postprocess import (
    IMPOSSIBLE_SCORE,
    answers_from_spans,
    best_spans,
)
from tf_finetune.tasks.question_answering.reading import (
    ANSWERS_KEY,
    ID_KEY,
    check_answers,
    examples_from_rows,
    is_squad_json,
    read_squad_json,
    record_answers,
)
from tf_finetune.tasks.question_answering.server import QuestionAnsweringServer
from tf_finetune.tasks.question_answering.task import (
    LABEL_VOCAB,
    QuestionAnswering,
)
from tf_finetune.tasks.question_answering.windows import (
    QuestionAnsweringFeatures,
    make_windows,
    question_budget,
    tokenize_context,
    window_targets,
)
