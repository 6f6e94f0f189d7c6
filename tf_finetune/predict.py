r"""Predicts for every row of a file with a trained run or a SavedModel.

  python -m tf_finetune.predict --model_dir=runs/sentiment_demo \
      --input_file=reviews.csv --output_file=predictions.csv
  python -m tf_finetune.predict --saved_model=runs/sentiment_demo/export \
      --input_file=reviews.jsonl --output_file=predictions.jsonl

The output repeats each input row and adds the task's predictions:
classification `predicted_label` and the probability of every label (CSV/TSV
columns or a JSONL object); regression `predicted_score`; multi-label
`predicted_labels` and probabilities; token classification `words`,
`predicted_tags` and character `offsets` (lists; JSON text in CSV/TSV);
question answering `answer`, `score`, `null_score` and character `start` and
`end` (its input is a SQuAD JSON file, or JSONL/CSV/TSV with the run's
question and context columns; a .json output is the official predictions
file {id: answer}); translation a `translation` column, or, for a plain text
file (one source per line), a plain text file with one translation per line:

  python -m tf_finetune.predict --model_dir=runs/bible_en_es \
      --input_file=verses.en --output_file=verses.es

With --streaming (classification) --input_file may be a glob or list of
shards of any size (.gz, TFRecord): rows are read a record at a time and
each batch's predictions written as they come, in input order.
With --glue_tsv it writes the GLUE leaderboard's submission format instead:

  python -m tf_finetune.predict --model_dir=runs/glue_mrpc \
      --input_file=glue/MRPC/test.tsv --text_column="#1 String" \
      --text_pair_column="#2 String" --output_file=MRPC.tsv --glue_tsv
"""

from absl import flags

from tf_finetune import flag_definitions

FLAGS = flags.FLAGS


def define_flags() -> None:
  d = flag_definitions.define_flag
  d(
      flags.DEFINE_string,
      "model_dir",
      None,
      "Directory of a finished training run.",
  )
  d(
      flags.DEFINE_string,
      "saved_model",
      None,
      "An exported SavedModel version directory, or an export directory (the "
      "latest version is used). Alternative to --model_dir.",
  )
  d(
      flags.DEFINE_string,
      "input_file",
      None,
      "Texts to classify: .csv, .tsv " "or .jsonl.",
  )
  d(
      flags.DEFINE_string,
      "output_file",
      None,
      "Where predictions go: .csv, .tsv or .jsonl.",
  )
  d(
      flags.DEFINE_string,
      "text_column",
      None,
      "Column holding the text (default: the run's, else 'text'; translation: "
      "the run's --source_column, else 'source').",
  )
  d(
      flags.DEFINE_string,
      "text_pair_column",
      None,
      "Column holding the second text for sentence-pair models.",
  )
  d(flags.DEFINE_integer, "batch_size", 64, "Texts per batch.")
  d(
      flags.DEFINE_bool,
      "streaming",
      False,
      "Classification: read --input_file (a file, glob or comma-separated "
      "list of shards) a record at a time and write each batch's "
      "predictions as they come, in input order.",
  )
  d(
      flags.DEFINE_bool,
      "glue_tsv",
      False,
      "Write the GLUE leaderboard's format (index<TAB>prediction; 0/1 for "
      "CoLA, SST-2, MRPC, QQP, label names for MNLI, QNLI, RTE, scores for "
      "STS-B) instead of the input rows with predictions.",
  )


def main(argv) -> None:
  from tf_finetune import prediction

  def body():
    if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
      raise ValueError("Give exactly one of --model_dir and --saved_model.")
    for name in ("input_file", "output_file"):
      if not FLAGS[name].value:
        raise ValueError(f"--{name} is required.")
    text_column, pair_column = FLAGS.text_column, FLAGS.text_pair_column
    from tf_finetune import config as config_lib

    if FLAGS.model_dir:
      run_config = config_lib.read_config(FLAGS.model_dir)
      text_column = text_column or (
          run_config.task.source_column
          if run_config.task.task == "translation"
          else run_config.data.text_column
      )
      pair_column = pair_column or run_config.data.text_pair_column
      predictor = prediction.Predictor.from_model_dir(FLAGS.model_dir)
    else:
      predictor = prediction.Predictor.from_saved_model(FLAGS.saved_model)
    task = predictor.task
    if FLAGS.streaming:
      from tf_finetune import streamed_prediction

      if FLAGS.glue_tsv:
        raise ValueError("--glue_tsv reads its input in memory; drop one.")
      count = streamed_prediction.predict_file(
          predictor,
          FLAGS.input_file,
          FLAGS.output_file,
          text_column=text_column or "text",
          text_pair_column=pair_column,
          batch_size=FLAGS.batch_size,
      )
      print(f"Wrote {count} predictions to {FLAGS.output_file}")
      return
    examples = task.read_prediction_input(
        FLAGS.input_file, text_column=text_column, text_pair_column=pair_column
    )
    rows = predictor.predict_rows(
        examples.texts, examples.text_pairs, batch_size=FLAGS.batch_size
    )
    if FLAGS.glue_tsv:
      prediction.write_glue_tsv(
          FLAGS.output_file, examples, rows, predictor.label_vocab
      )
    else:
      task.write_prediction_file(FLAGS.output_file, examples, rows)
    print(f"Wrote {len(examples)} predictions to {FLAGS.output_file}")

  flag_definitions.run_main("predict", argv, body)


def run() -> None:
  define_flags()
  flags.adopt_module_key_flags(flag_definitions)  # Listed by --help.
  flag_definitions.app_run(main)


if __name__ == "__main__":
  run()
