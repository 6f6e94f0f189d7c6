r"""Evaluates a trained run on a labelled file.

  python -m tf_finetune.evaluate --model_dir=runs/sentiment_demo \
      --test_file=test.csv

Prints the task's headline metrics (classification: accuracy and macro-F1)
and records all metrics (for classification per-class precision, recall,
F1 and the confusion matrix; translation: BLEU and chrF of generated
translations) under --split_name in eval_results.json.
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
  flag_definitions.define_config_flags(
      task_settings.TranslationSettings,
      ["num_beams", "no_repeat_ngram_size"],
      for_trained_run=True,
  )


def main(argv) -> None:
  from tf_finetune import evaluation

  def body():
    if not FLAGS.model_dir:
      raise ValueError("--model_dir is required.")
    metrics = evaluation.evaluate_model_dir(
        FLAGS.model_dir,
        eval_file=FLAGS.test_file,
        split_name=FLAGS.split_name,
        batch_size=FLAGS.batch_size,
        eval_target_file=FLAGS.test_target_file,
        task_overrides={
            name: FLAGS[name].value
            for name in ("num_beams", "no_repeat_ngram_size")
            if FLAGS[name].value is not None
        },
    )
    print(f"{FLAGS.split_name} {metrics['description']}")

  flag_definitions.run_main("evaluate", argv, body)


def run() -> None:
  define_flags()
  flags.adopt_module_key_flags(flag_definitions)  # Listed by --help.
  flag_definitions.app_run(main)


if __name__ == "__main__":
  run()
