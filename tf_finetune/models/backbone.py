"""Loading pretrained encoders and their tokenizers from `transformers`.

Weights load from safetensors or TF `.h5` files. Pickled PyTorch `.bin` files
can execute code when unpickled, so they are refused unless the user opts in;
remote code is never trusted.
"""

from __future__ import annotations

import os
from typing import Optional

import tensorflow as tf
import transformers
from absl import logging

from tf_finetune.text import families

SAFE_WEIGHT_FILES = (
    "model.safetensors",
    "tf_model.h5",
    "model.safetensors.index.json",
    "tf_model.h5.index.json",
)
PICKLE_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_source(model: str, allow_pickle_weights: bool) -> bool:
  """Validates --model before anything is loaded.

  Returns:
    Whether the weights must be loaded from PyTorch files.
  """
  if os.path.isdir(model):
    return _check_local_model(model, allow_pickle_weights)
  if model.startswith((".", "/", "~")) or model.count("/") > 1:
    raise ValueError(
        f"--model={model!r} does not exist; expected a local "
        "model directory or a hub name like 'bert-base-uncased'."
    )
  return allow_pickle_weights


def _check_local_model(path: str, allow_pickle_weights: bool) -> bool:
  if not os.path.isfile(os.path.join(path, "config.json")):
    raise ValueError(
        f"--model={path!r} is a directory without config.json; "
        "expected a Hugging Face model directory."
    )
  files = set(os.listdir(path))
  if files & set(SAFE_WEIGHT_FILES):
    return False
  if files & set(PICKLE_WEIGHT_FILES):
    if not allow_pickle_weights:
      raise ValueError(
          f"--model={path!r} only has pickled PyTorch weights "
          "(pytorch_model.bin), which can run arbitrary code when loaded; "
          "convert them to model.safetensors or pass --allow_pickle_weights "
          "if you trust the file."
      )
    return True
  raise ValueError(
      f"--model={path!r} has config.json but no weights; "
      f"expected one of: {', '.join(SAFE_WEIGHT_FILES)}."
  )


def pytorch_needed(model: str) -> ValueError:
  """The error for PyTorch weights when PyTorch is not installed."""
  return ValueError(
      f"--model={model!r} has PyTorch weights (pytorch_model.bin), and "
      "reading them needs PyTorch: pip install torch, or convert them to "
      "model.safetensors."
  )


def load_model_config(model: str, **overrides):
  """The checkpoint's `transformers` config (config.json), e.g. BertConfig.

  Raises:
    ValueError: when --model has no loadable config.
  """
  try:
    return transformers.AutoConfig.from_pretrained(
        model, trust_remote_code=False, **overrides
    )
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(
        f"--model={model!r} has no usable config.json: "
        f"{str(e).splitlines()[0]}"
    ) from e


def model_family(model: str) -> families.Family:
  """The encoder family of --model, refusing unsupported ones (see
  `text.families`)."""
  return families.family_of(load_model_config(model).model_type, model=model)


def load_backbone(
    model: str,
    *,
    allow_pickle_weights: bool = False,
    config_overrides: Optional[dict] = None,
):
  """Loads a pretrained TF encoder (e.g. `TFBertModel`).

  Args:
    model: A hub name or a local directory.
    allow_pickle_weights: Permit PyTorch `.bin` (pickle) weights.
    config_overrides: Values that replace the pretrained config's (dropout).

  Returns:
    A `transformers.TFPreTrainedModel` without a task head.
  """
  from_pt = check_model_source(model, allow_pickle_weights)
  config = load_model_config(model, **(config_overrides or {}))
  # Silence the "some weights were not used" report about the pretraining
  # heads: it is expected when loading an encoder for fine-tuning.
  verbosity = transformers.logging.get_verbosity()
  transformers.logging.set_verbosity_error()
  try:
    backbone = transformers.TFAutoModel.from_pretrained(
        model, config=config, from_pt=from_pt, trust_remote_code=False
    )
  except ImportError as e:
    if from_pt:
      raise pytorch_needed(model) from e
    raise
  except OSError as e:
    raise ValueError(
        f"--model={model!r} could not be loaded: " f"{str(e).splitlines()[0]}"
    ) from e
  finally:
    transformers.logging.set_verbosity(verbosity)
  logging.info(
      "Loaded %s (%s, %d layers, hidden size %d) from %s.",
      type(backbone).__name__,
      config.model_type,
      getattr(config, "num_hidden_layers", -1),
      getattr(config, "hidden_size", -1),
      model,
  )
  return backbone


def backbone_from_config(config_dir: str):
  """An encoder with the architecture saved in `config_dir`, random weights."""
  config = transformers.AutoConfig.from_pretrained(
      config_dir, trust_remote_code=False
  )
  return transformers.TFAutoModel.from_config(config)


def load_tokenizer(model: str):
  """The model's fast tokenizer, checked against the model's vocabulary."""
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        model, use_fast=True, trust_remote_code=False
    )
  except (OSError, ValueError) as e:
    raise ValueError(
        f"--model={model!r} has no usable tokenizer: "
        f"{str(e).splitlines()[0]}"
    ) from e
  return tokenizer


def check_tokenizer_fits(tokenizer, backbone_config, model: str) -> None:
  """Refuses a tokenizer that emits ids the embedding table does not have."""
  vocab_size = getattr(backbone_config, "vocab_size", None)
  if vocab_size is not None and len(tokenizer) > vocab_size:
    raise ValueError(
        f"--model={model!r}: the tokenizer has {len(tokenizer)} tokens but the "
        f"model's embedding table only {vocab_size}; they do not belong "
        "together."
    )


# Where BERT-family encoders in `transformers` keep their layer stack: the
# main layer (e.g. TFBertModel.bert) holds `encoder.layer` (BERT, RoBERTa,
# ELECTRA, XLM-R) or `transformer.layer` (DistilBERT), plus `embeddings`.
_LAYER_STACK_PATHS = (("encoder", "layer"), ("transformer", "layer"))


# Model types whose encoder applies one layer's weights at every depth.
SHARED_LAYER_MODEL_TYPES = frozenset({"albert"})


def _main_layer(backbone):
  prefix = getattr(backbone, "base_model_prefix", None)
  main = getattr(backbone, prefix, None) if prefix else None
  return main if main is not None else backbone


def encoder_layers(backbone) -> list:
  """The encoder's transformer layers, bottom (nearest the input) first.

  Raises:
    ValueError: for an encoder whose layers are not a per-layer stack (such
      as ALBERT, which shares one layer's weights across depths).
  """
  main = _main_layer(backbone)
  for first, second in _LAYER_STACK_PATHS:
    stack = getattr(getattr(main, first, None), second, None)
    if isinstance(stack, (list, tuple)) and stack:
      return list(stack)
  raise ValueError(
      f"{type(backbone).__name__} does not keep one layer per depth "
      "(encoder.layer or transformer.layer); layer-wise learning rates and "
      "layer freezing need a BERT-family encoder such as BERT, RoBERTa, "
      "ELECTRA or DistilBERT."
  )


def embedding_layer(backbone):
  embeddings = getattr(_main_layer(backbone), "embeddings", None)
  if embeddings is None:
    raise ValueError(f"{type(backbone).__name__} has no embeddings layer.")
  return embeddings


def layerwise_lr_multipliers(backbone, decay: float) -> dict[str, float]:
  """Learning-rate factors by variable name for layer-wise decay.

  With L encoder layers, layer i (0 = bottom) gets decay ** (L - 1 - i): the
  top layer learns at the base rate, the one below at `decay` times it, and
  the embeddings at decay ** L. The pooler and the task head keep the base
  rate (they are absent from the result). Example, L = 6, decay = 0.9:
  layer 5 -> 1.0, layer 4 -> 0.9, layer 0 -> 0.59, embeddings -> 0.53.
  """
  if decay == 1.0:
    return {}
  layers = encoder_layers(backbone)
  multipliers = {}
  for depth, layer in enumerate(layers):
    for variable in layer.weights:
      multipliers[variable.name] = decay ** (len(layers) - 1 - depth)
  for variable in embedding_layer(backbone).weights:
    multipliers[variable.name] = decay ** len(layers)
  return multipliers


def set_trainable_layers(
    backbone, *, frozen_layers: int, freeze_embeddings: bool
) -> None:
  """Freezes the embeddings and the bottom `frozen_layers` encoder layers.

  Everything else in the encoder is made trainable. Changing this between
  epochs needs a new train function (see `callbacks.GradualUnfreezing`).
  """
  layers = encoder_layers(backbone)
  if frozen_layers > len(layers):
    raise ValueError(
        f"--freeze_layers={frozen_layers} is more than the "
        f"encoder's {len(layers)} layers."
    )
  for depth, layer in enumerate(layers):
    layer.trainable = depth >= frozen_layers
  embedding_layer(backbone).trainable = not freeze_embeddings


def penalized_variables(backbone, *, include_embeddings: bool) -> list:
  """Encoder kernels that backbone penalties apply to.

  Matrices only: LayerNorm scales and offsets and biases are vectors and are
  left alone, as are the embedding tables unless `include_embeddings`.
  """
  embedding_names = {
      variable.name for variable in embedding_layer(backbone).weights
  }
  return [
      variable
      for variable in backbone.trainable_weights
      if len(variable.shape) >= 2
      and (include_embeddings or variable.name not in embedding_names)
  ]


def _pooler(backbone):
  return getattr(_main_layer(backbone), "pooler", None)


def _initial_value(variable, std: float, seed: tuple[int, int]) -> tf.Tensor:
  """What a new model of the family starts `variable` at (its config's
  initialization): kernels N(0, std^2), biases 0, LayerNorm scales 1 and
  offsets 0."""
  short_name = variable.name.split("/")[-1].split(":")[0]
  in_layer_norm = any(
      part in variable.name for part in ("LayerNorm", "layer_norm")
  )
  if short_name.endswith("bias") or short_name == "beta":
    return tf.zeros(variable.shape, variable.dtype)
  if short_name == "gamma" or (in_layer_norm and short_name == "weight"):
    return tf.ones(variable.shape, variable.dtype)
  if len(variable.shape) >= 2:
    return tf.random.stateless_normal(
        variable.shape, seed=seed, stddev=std, dtype=variable.dtype
    )
  raise ValueError(
      f"--reinit_layers: no known initialization for {variable.name} "
      f"(shape {variable.shape})."
  )


def reinitialize_top_layers(
    backbone, num_layers: int, *, include_pooler: bool, seed: int
) -> list[str]:
  """Re-initializes the top `num_layers` encoder layers (and the pooler).

  As Zhang et al. (2021) re-initialize BERT's top layers for few-sample
  fine-tuning: kernels from N(0, initializer_range^2) of the model's config,
  biases and LayerNorm offsets 0, LayerNorm scales 1. The embeddings and
  the lower layers keep their pretrained values. Each variable's draw is
  seeded by `seed` and its position, so a resumed run (and L2-SP's anchors)
  start from the same values.

  Args:
    backbone: The Hugging Face TF encoder, its variables built.
    num_layers: Layers to re-initialize, from the top.
    include_pooler: Also the pooler (when the head reads its output).
    seed: The run's seed.

  Returns:
    The names of the re-initialized variables.

  Raises:
    ValueError: for an encoder that shares one layer across depths
      (ALBERT), or `num_layers` beyond the encoder's layers.
  """
  model_type = getattr(backbone.config, "model_type", "")
  if model_type in SHARED_LAYER_MODEL_TYPES:
    raise ValueError(
        f"--reinit_layers={num_layers} is not possible with {model_type} "
        "models: every depth runs the same shared layer, so its top layers "
        "cannot be re-initialized alone; use --reinit_layers=0."
    )
  layers = encoder_layers(backbone)
  if num_layers > len(layers):
    raise ValueError(
        f"--reinit_layers={num_layers} is more than the encoder's "
        f"{len(layers)} layers."
    )
  std = float(backbone.config.initializer_range)
  variables = [
      v for layer in layers[len(layers) - num_layers :] for v in layer.weights
  ]
  pooler = _pooler(backbone)
  if include_pooler and pooler is not None:
    variables += pooler.weights
  for index, variable in enumerate(variables):
    variable.assign(_initial_value(variable, std, (seed, index)))
  logging.info(
      "Re-initialized the top %d of %d encoder layers%s (%d variables, "
      "kernels N(0, %g^2)).",
      num_layers,
      len(layers),
      " and the pooler" if include_pooler and pooler is not None else "",
      len(variables),
      std,
  )
  return [variable.name for variable in variables]
