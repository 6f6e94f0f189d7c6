"""Loading pretrained encoders and their tokenizers from `transformers`.

Weights load from safetensors or TF `.h5` files. Pickled PyTorch `.bin` files
can execute code when unpickled, so they are refused unless the user opts in;
remote code is never trusted.
"""

from __future__ import annotations

import os
from typing import Optional

import transformers
from absl import logging

SAFE_WEIGHT_FILES = ("model.safetensors", "tf_model.h5",
                     "model.safetensors.index.json", "tf_model.h5.index.json")
PICKLE_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_source(model: str, allow_pickle_weights: bool) -> bool:
  """Validates --model before anything is loaded.

  Returns:
    Whether the weights must be loaded from PyTorch files.
  """
  if os.path.isdir(model):
    return _check_local_model(model, allow_pickle_weights)
  if model.startswith((".", "/", "~")) or model.count("/") > 1:
    raise ValueError(f"--model={model!r} does not exist; expected a local "
                     "model directory or a hub name like 'bert-base-uncased'.")
  return allow_pickle_weights


def _check_local_model(path: str, allow_pickle_weights: bool) -> bool:
  if not os.path.isfile(os.path.join(path, "config.json")):
    raise ValueError(f"--model={path!r} is a directory without config.json; "
                     "expected a Hugging Face model directory.")
  files = set(os.listdir(path))
  if files & set(SAFE_WEIGHT_FILES):
    return False
  if files & set(PICKLE_WEIGHT_FILES):
    if not allow_pickle_weights:
      raise ValueError(
          f"--model={path!r} only has pickled PyTorch weights "
          "(pytorch_model.bin), which can run arbitrary code when loaded; "
          "convert them to model.safetensors or pass --allow_pickle_weights "
          "if you trust the file.")
    return True
  raise ValueError(f"--model={path!r} has config.json but no weights; "
                   f"expected one of: {', '.join(SAFE_WEIGHT_FILES)}.")


def load_backbone(model: str, *, allow_pickle_weights: bool = False,
                  config_overrides: Optional[dict] = None):
  """Loads a pretrained TF encoder (e.g. `TFBertModel`).

  Args:
    model: A hub name or a local directory.
    allow_pickle_weights: Permit PyTorch `.bin` (pickle) weights.
    config_overrides: Values that replace the pretrained config's (dropout).

  Returns:
    A `transformers.TFPreTrainedModel` without a task head.
  """
  from_pt = check_model_source(model, allow_pickle_weights)
  config = transformers.AutoConfig.from_pretrained(
      model, trust_remote_code=False, **(config_overrides or {}))
  # Silence the "some weights were not used" report about the pretraining
  # heads: it is expected when loading an encoder for fine-tuning.
  verbosity = transformers.logging.get_verbosity()
  transformers.logging.set_verbosity_error()
  try:
    backbone = transformers.TFAutoModel.from_pretrained(
        model, config=config, from_pt=from_pt, trust_remote_code=False)
  except OSError as e:
    raise ValueError(f"--model={model!r} could not be loaded: "
                     f"{str(e).splitlines()[0]}") from e
  finally:
    transformers.logging.set_verbosity(verbosity)
  logging.info("Loaded %s (%s, %d layers, hidden size %d) from %s.",
               type(backbone).__name__, config.model_type,
               getattr(config, "num_hidden_layers", -1),
               getattr(config, "hidden_size", -1), model)
  return backbone


def backbone_from_config(config_dir: str):
  """An encoder with the architecture saved in `config_dir`, random weights."""
  config = transformers.AutoConfig.from_pretrained(config_dir,
                                                   trust_remote_code=False)
  return transformers.TFAutoModel.from_config(config)


def load_tokenizer(model: str):
  """The model's fast tokenizer, checked against the model's vocabulary."""
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        model, use_fast=True, trust_remote_code=False)
  except (OSError, ValueError) as e:
    raise ValueError(f"--model={model!r} has no usable tokenizer: "
                     f"{str(e).splitlines()[0]}") from e
  return tokenizer


def check_tokenizer_fits(tokenizer, backbone_config, model: str) -> None:
  """Refuses a tokenizer that emits ids the embedding table does not have."""
  vocab_size = getattr(backbone_config, "vocab_size", None)
  if vocab_size is not None and len(tokenizer) > vocab_size:
    raise ValueError(
        f"--model={model!r}: the tokenizer has {len(tokenizer)} tokens but the "
        f"model's embedding table only {vocab_size}; they do not belong "
        "together.")
