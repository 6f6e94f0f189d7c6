r"""Chooses hyperparameters by stratified k-fold cross-validation.

  python -m tf_finetune.tune --flagfile=flags/sentiment_demo.flags \
      --model_dir=runs/tune --cv_folds=5 \
      --grid=learning_rate=1e-5,3e-5,5e-5 --grid=l2=0,1e-4 --refit

Each grid point is fine-tuned once per fold from the same pretrained weights
(validated on that fold, with early stopping as the train flags say); the
score of a fold is its best --early_stopping_metric. Prints and writes
cv_results.csv (mean and standard deviation per point) and best_params.json;
with --refit, retrains the best point on all the training data in
<model_dir>/refit (with --validation_file and --test_file, and the export).
Rerunning the same command resumes an interrupted sweep.
"""

from absl import flags

from tf_finetune import flag_definitions

FLAGS = flags.FLAGS


def main(argv) -> None:
  from tf_finetune import tuning

  def body():
    config = flag_definitions.run_config_from_flags()
    grid = tuning.parse_grid(FLAGS.grid or [])
    results = tuning.cross_validate(
        config, grid, num_folds=FLAGS.cv_folds, refit=FLAGS.refit
    )
    print(tuning.format_table(results))
    best = tuning.point_name(results["best"]["params"])
    print(
        f"Best: {best} ({results['metric']} "
        f"{results['best']['mean']:.4f} ± {results['best']['std']:.4f})"
    )
    if "refit_dir" in results:
      print(f"Refit on all training data: {results['refit_dir']}")

  flag_definitions.run_main("tune", argv, body)


def run() -> None:
  flag_definitions.define_train_flags()
  flag_definitions.define_flag(
      flags.DEFINE_integer, "cv_folds", 5, "Folds of the cross-validation."
  )
  flag_definitions.define_flag(
      flags.DEFINE_multi_string,
      "grid",
      None,
      "A flag and its values, e.g. --grid=learning_rate=1e-5,3e-5; repeat "
      "for more flags (all combinations are tried).",
  )
  flag_definitions.define_flag(
      flags.DEFINE_bool,
      "refit",
      False,
      "Retrain the best point on all training data.",
  )
  flags.adopt_module_key_flags(flag_definitions)  # Listed by --help.
  flag_definitions.app_run(main)


if __name__ == "__main__":
  run()
