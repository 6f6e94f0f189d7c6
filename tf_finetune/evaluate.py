r"""Evaluates a trained run on a labelled file.

  python -m tf_finetune.evaluate --model_dir=runs/sentiment_demo \
      --test_file=test.csv

Prints the task's headline metrics (classification: accuracy and macro-F1)
and records all metrics (for classification per-class precision, recall,
F1 and the confusion matrix; translation: BLEU and chrF of generated
translations) under --split_name in eval_results.json. A classifier no
better on the file than always answering its most frequent label gets one
more line that says so.

  python -m tf_finetune.evaluate --model_dir=runs/translator \
      --compare_num_beams=1,4,8

also scores a translator's test translations searched with each of those
beam widths (and the run's, or the flags', length penalty and n-gram ban),
with the time each took, under "comparisons".
"""

from absl import flags

from tf_finetune import config as config_lib, flag_definitions
from tf_finetune.tasks import settings as task_settings

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
      "test_file",
      None,
      "Labelled examples (default: the run's test file).",
  )
  d(
      flags.DEFINE_string,
      "split_name",
      "test",
      "Name of these results in eval_results.json.",
  )
  flag_definitions.define_config_flags(
      task_settings.TranslationSettings, ["test_target_file"]
  )
  flag_definitions.define_config_flags(
      config_lib.DataConfig, ["batch_size"], for_trained_run=True
  )
  d(
      flags.DEFINE_list,
      "compare_num_beams",
      [],
      "--task=translation: also score the translations of each of these "
      "beam widths (e.g. 1,4: greedy and beam 4), with their time.",
  )
  flag_definitions.define_config_flags(
      task_settings.TranslationSettings,
      task_settings.TRANSLATION_DECODING,
      for_trained_run=True,
  )


def main(argv) -> None:
  from tf_finetune import evaluation, reporting

  def body():
    if not FLAGS.model_dir:
      raise ValueError("--model_dir is required.")
    compare = [{"num_beams": beams} for beams in _beam_widths()]
    if compare:
      task_settings.with_decoding(FLAGS.model_dir, compare[0])
    metrics = evaluation.evaluate_model_dir(
        FLAGS.model_dir,
        eval_file=FLAGS.test_file,
        split_name=FLAGS.split_name,
        batch_size=FLAGS.batch_size,
        eval_target_file=FLAGS.test_target_file,
        task_overrides={
            name: FLAGS[name].value
            for name in task_settings.TRANSLATION_DECODING
            if FLAGS[name].value is not None
        },
        compare=compare,
    )
    print(f"{FLAGS.split_name} {metrics['description']}")
    baseline = reporting.compare_with_most_frequent_label(
        {FLAGS.split_name: metrics}, splits=[FLAGS.split_name]
    )
    if baseline and baseline["no_better"]:
      print(baseline["message"])
    for row in metrics.get("comparisons", []):
      print(
          f"{FLAGS.split_name} with --num_beams={row['num_beams']}: "
          f"{row['description']}  {row['predict_seconds']} s, "
          f"{row['examples_per_second']} examples/s"
      )

  flag_definitions.run_main("evaluate", argv, body)


def _beam_widths() -> list[int]:
  """--compare_num_beams as integers, checked."""
  widths = []
  for value in FLAGS.compare_num_beams:
    try:
      widths.append(int(value))
    except ValueError:
      widths.append(0)
    if widths[-1] < 1:
      raise ValueError(
          f"--compare_num_beams={','.join(FLAGS.compare_num_beams)!r}: "
          f"{value!r} is not a beam width; expected integers of at least 1 "
          "separated by commas, e.g. 1,4."
      )
  return widths


def run() -> None:
  define_flags()
  flags.adopt_module_key_flags(flag_definitions)  # Listed by --help.
  flag_definitions.app_run(main)


if __name__ == "__main__":
  run()
