r"""Continues masked-language-model pretraining of an encoder on unlabelled
text, for `train --model=<model_dir>/backbone`.

  python -m tf_finetune.pretrain --model=assets/minilm \
      --text_files='corpus/*.txt' --validation_fraction=0.05 \
      --epochs=3 --model_dir=runs/pretrained
  python -m tf_finetune.train --model=runs/pretrained/backbone ...

Reads --text_files (one text per line) and/or the --text_column of
--train_file, masks 15% of the tokens afresh every epoch and trains the
model's masked-LM head and encoder. Writes <model_dir>/backbone/ (the encoder
and tokenizer, for train), <model_dir>/mlm/ (with the head, to pretrain
further), summary.json, TensorBoard logs and backups: rerunning a killed run
with the same flags resumes it.
"""

from absl import app, flags

from tf_finetune import flag_definitions


def main(argv) -> None:
  from tf_finetune import pretraining

  def body():
    config = flag_definitions.pretrain_config_from_flags()
    summary = pretraining.pretrain(config)
    if summary is None:
      return
    print(
        f"masked-LM loss {summary.train_loss} (accuracy "
        f"{summary.train_masked_accuracy}); validation "
        f"{summary.validation_loss} ({summary.validation_masked_accuracy})"
    )
    print(f"backbone: {summary.backbone_dir}")

  flag_definitions.run_main("pretrain", argv, body)


def run() -> None:
  flag_definitions.define_pretrain_flags()
  flags.adopt_module_key_flags(flag_definitions)  # Listed by --help.
  app.run(main)


if __name__ == "__main__":
  run()
