r"""Exports a trained run as a SavedModel for TF Serving.

  python -m tf_finetune.export --model_dir=runs/sentiment_demo \
      --export_dir=/models/sentiment

Writes <export_dir>/<next version>/ atomically, with a `serving_default`
signature on raw text and a `serve_token_ids` signature on token ids.
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
      "export_dir",
      None,
      "Base directory of the versions (default: the run's --export_dir, else "
      "<model_dir>/export).",
  )


def main(argv) -> None:
  from tf_finetune import artifacts

  def body():
    if not FLAGS.model_dir:
      raise ValueError("--model_dir is required.")
    trained = artifacts.load_trained(FLAGS.model_dir)
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
