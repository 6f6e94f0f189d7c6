r"""Finds a learning rate with the range test before fine-tuning.

  python -m tf_finetune.lr_find --flagfile=flags/sentiment_demo.flags \
      --model_dir=runs/lr_find

Trains for --lr_find_steps batches while the learning rate rises
geometrically from --lr_find_min to --lr_find_max, with every other setting
of the train flags, then writes lr_find.png (smoothed loss against rate) and
lr_find.json to --model_dir and prints the suggested --learning_rate. No
model is kept.
"""

from absl import flags

from tf_finetune import flag_definitions

FLAGS = flags.FLAGS


def main(argv) -> None:
  from tf_finetune import lr_range_test

  def body():
    config = flag_definitions.run_config_from_flags()
    results = lr_range_test.find_learning_rate(
        config,
        num_steps=FLAGS.lr_find_steps,
        min_learning_rate=FLAGS.lr_find_min,
        max_learning_rate=FLAGS.lr_find_max,
    )
    print(
        f"Loss lowest at learning rate {results['lowest_loss']:.3g}; "
        f"steepest descent at {results['steepest']:.3g}."
    )
    print(f"Suggested --learning_rate={results['suggested']:.2g}")
    print(f"Plot: {results['plot']}")

  flag_definitions.run_main("lr_find", argv, body)


def run() -> None:
  flag_definitions.define_train_flags()
  flag_definitions.define_flag(
      flags.DEFINE_integer, "lr_find_steps", 200, "Steps of the range test."
  )
  flag_definitions.define_flag(
      flags.DEFINE_float,
      "lr_find_min",
      1e-7,
      "Learning rate of the first step.",
  )
  flag_definitions.define_flag(
      flags.DEFINE_float, "lr_find_max", 1.0, "Learning rate of the last step."
  )
  flags.adopt_module_key_flags(flag_definitions)  # Listed by --help.
  flag_definitions.app_run(main)


if __name__ == "__main__":
  run()
