r"""Fine-tunes a pretrained encoder for a task (see --task).

  python -m tf_finetune.train --flagfile=flags/sentiment_demo.flags
  python -m tf_finetune.train --model=bert-base-uncased \
      --train_file=train.csv --validation_file=dev.csv --test_file=test.csv \
      --text_column=text --label_column=label --model_dir=runs/mine

Writes checkpoints, TensorBoard logs, eval_results.json and a SavedModel
(<model_dir>/export/<version>/) to --model_dir. Rerunning a killed run with
the same flags resumes it.
"""

from absl import flags

from tf_finetune import flag_definitions


def main(argv) -> None:
  from tf_finetune import tasks, training

  def body():
    config = flag_definitions.run_config_from_flags()
    summary = training.train(config)
    task = tasks.get_task(config.task)
    for split, results in summary.eval_results.items():
      print(f"{split} {task.describe(results)}")
    if summary.most_frequent_label and summary.most_frequent_label["no_better"]:
      print(summary.most_frequent_label["message"])
    print(f"model_dir: {config.model_dir}")
    if summary.export_dir:
      print(f"SavedModel: {summary.export_dir}")

  flag_definitions.run_main("train", argv, body)


def run() -> None:
  flag_definitions.define_train_flags()
  flags.adopt_module_key_flags(flag_definitions)  # Listed by --help.
  flag_definitions.app_run(main)


if __name__ == "__main__":
  run()
