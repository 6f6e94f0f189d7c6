"""Continued masked-language-model pretraining of a pretrained encoder.

Within-task and in-domain pretraining (Sun et al., 2019, "How to Fine-Tune
BERT for Text Classification?"; Gururangan et al., 2020, "Don't Stop
Pretraining") trains the encoder further with its own masked-LM objective on
unlabelled text of the task or domain before fine-tuning. `pretrain(config)`
runs it in phases: `prepare` (read the texts, check the in-graph tokenizer,
tokenize), `plan_batches` (the training run's), `fit` (the masked-LM model
on batches masked afresh each epoch, with the training run's optimizer,
schedule, precision, strategy and callbacks), `save_models` (backbone/ for
`train --model=`, mlm/ to pretrain further) and `summarize` (summary.json).

Modules: `data` (texts, tokenization, masked batches), `phases` (fit, save,
summarize); the masking is `data.masking`, the model `models.masked_lm`.
"""

from __future__ import annotations

import tf_keras

from tf_finetune import distribution as distribution_lib
from tf_finetune import io_utils
from tf_finetune.config import PretrainConfig
from tf_finetune.pretraining.data import (
    PreparedText,
    prepare,
    read_texts,
    training_batches,
    validation_batches,
)
from tf_finetune.pretraining.phases import (
    BACKBONE_DIR,
    MASKED_LM_DIR,
    SUMMARY_FILENAME,
    PretrainRecord,
    PretrainSummary,
    fit,
    limit_steps,
    save_models,
    summarize,
)
from tf_finetune.training import get_strategy, plan_batches


def pretrain(config: PretrainConfig) -> PretrainSummary | None:
  """Continues masked-LM training of --model as `config` says.

  Rerunning a killed run with the same config resumes it from its last
  backup.

  Returns:
    The summary; None on the non-chief workers of a multi-worker run.

  Raises:
    ValueError: for bad input (files, model, tokenizer, flags), before
      anything in `model_dir` is changed.
    callbacks.NonFiniteLossError: when the loss became NaN or Inf.
  """
  io_utils.check_writable(config.model_dir, "--model_dir")
  # First: a multi-worker strategy must start before any other operation.
  strategy = get_strategy(config.train.distribution, config.train.tpu)
  tf_keras.utils.set_random_seed(config.train.seed)
  prepared = prepare(config)
  plan = limit_steps(
      plan_batches(config, len(prepared.encoded["train"]), strategy),
      config.max_steps,
  )
  model, record = fit(config, prepared, strategy, plan)
  if not distribution_lib.is_chief(strategy):
    return None
  saved = save_models(config, prepared, model)
  return summarize(config, prepared, plan, record, saved)
