r"""Exports a trained run as a SavedModel for TF Serving.

  python -m tf_finetune.export --model_dir=runs/sentiment_demo \
      --export_dir=/models/sentiment
  python -m tf_finetune.export --model_dir=runs/translator \
      --export_dir=/models/translator_beam4 --num_beams=4

Writes <export_dir>/<next version>/ atomically, with a `serving_default`
signature on raw text and a `serve_token_ids` signature on token ids.
A translator searches as the run evaluated unless --num_beams,
--length_penalty or --no_repeat_ngram_size say otherwise.
"""

from absl import flags

from tf_finetune import flag_definitions
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
      "export_dir",
      None,
      "Base directory of the versions (default: the run's --export_dir, else "
      "<model_dir>/export).",
  )
  flag_definitions.define_config_flags(
      task_settings.TranslationSettings,
      task_settings.TRANSLATION_DECODING,
      for_trained_run=True,
  )


def main(argv) -> None:
  from tf_finetune import artifacts

  def body():
    if not FLAGS.model_dir:
      raise ValueError("--model_dir is required.")
    trained = artifacts.load_trained(
        FLAGS.model_dir,
        task_settings.with_decoding(
            FLAGS.model_dir,
            {
                name: FLAGS[name].value
                for name in task_settings.TRANSLATION_DECODING
                if FLAGS[name].value is not None
            },
        ),
    )
    path = trained.task.export(
        trained,
        export_base=FLAGS.export_dir or trained.config.resolved_export_dir,
    )
    print(f"SavedModel: {path}")

  flag_definitions.run_main("export", argv, body)


def run() -> None:
  define_flags()
  flags.adopt_module_key_flags(flag_definitions)  # Listed by --help.
  flag_definitions.app_run(main)


if __name__ == "__main__":
  run()
