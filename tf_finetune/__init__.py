"""Fine-tune pretrained transformer encoders with TensorFlow/Keras.

The `transformers` TF models are Keras 2 models: TensorFlow must be told to
use `tf_keras` before it is first imported, so the package sets
TF_USE_LEGACY_KERAS here (it is an environment default, not a side effect a
user can observe beyond that), and TensorFlow's C++ log level to warnings
unless the user chose one.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# The user's own TensorFlow C++ log level, if any: then the binaries leave
# TensorFlow's console output unfiltered (see `console`).
USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"
