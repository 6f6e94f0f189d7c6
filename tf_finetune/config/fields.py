"""Settings: config fields that are also command-line flags, and their
checks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

# Keys of a setting's field metadata.
HELP = "help"


CHOICES = "choices"


# Whether a different value trains different weights (see `setting`).
CHANGES_WEIGHTS = "changes_weights"


Choices = Sequence[str] | Callable[[], Sequence[str]]


def setting(
    default: Any,
    help: str,
    *,
    choices: Choices | None = None,
    changes_weights: bool = True,
) -> Any:
  """A config field that is also a command-line flag of the same name.

  The flag's type follows the field's annotation (str, int, float, bool, or
  Optional of one of them); a field without a default gets a flag that
  defaults to None.

  Args:
    default: The field's (and the flag's) default; `dataclasses.MISSING` for
      a field that must be given.
    help: The flag's help text, addressed to the user of the binaries.
    choices: The only values allowed (or a function returning them when
      asked); the flag becomes an enum and `__post_init__` checks the field
      against them.
    changes_weights: Whether a different value trains different weights.
      False for where outputs go and for what only evaluation, prediction
      or export use: a run resumed or reused with another value is the
      same run (see `training.fingerprint`).

  Returns:
    A `dataclasses.field` carrying `help`, `choices` and `changes_weights`
    in its metadata.
  """
  metadata = {HELP: help, CHANGES_WEIGHTS: changes_weights}
  if choices is not None:
    metadata[CHOICES] = choices if callable(choices) else tuple(choices)
  return dataclasses.field(default=default, metadata=metadata)


def choices_of(field: dataclasses.Field) -> Optional[tuple[str, ...]]:
  """The values a field allows, or None; choices given as a function (the
  registered tasks) are asked now."""
  choices = field.metadata.get(CHOICES)
  return tuple(choices()) if callable(choices) else choices


def require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def check_choices(config: Any) -> None:
  """Checks every field of `config` that has choices against them (a
  field whose default is None may also be None: unset)."""
  for field in dataclasses.fields(config):
    choices = choices_of(field)
    if choices is not None:
      value = getattr(config, field.name)
      require(
          value in choices or (value is None and field.default is None),
          f"--{field.name}={value!r} is not one of " f"{', '.join(choices)}.",
      )
