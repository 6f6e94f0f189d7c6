"""setup.cfg against the code: requirements, console scripts, --help.

`pip install .` reads setup.cfg, so install_requires must name every
third-party distribution that tf_finetune/ imports (at module level or in a
function) and nothing else, and every console script must point to a
function that exists.
"""

import ast
import configparser
import importlib
import importlib.metadata
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "tf_finetune"

# A flag each binary's --help must list; every console script needs a row.
HELP_FLAGS = {
    "tf_finetune.train": ["model_dir", "train_file", "learning_rate"],
    "tf_finetune.evaluate": ["model_dir", "test_file", "split_name"],
    "tf_finetune.predict": ["saved_model", "input_file", "glue_tsv"],
    "tf_finetune.export": ["model_dir", "export_dir"],
    "tf_finetune.lr_find": ["model_dir", "lr_find_steps"],
    "tf_finetune.tune": ["model_dir", "cv_folds", "grid", "refit"],
    "tf_finetune.pretrain": ["model_dir", "text_files", "mask_probability"],
}


def normalize(name: str) -> str:
  """A distribution name as pip compares them: "Tf_Keras" -> "tf-keras"."""
  return re.sub(r"[-_.]+", "-", name).lower()


def setup_cfg() -> configparser.ConfigParser:
  parser = configparser.ConfigParser()
  with open(os.path.join(REPO, "setup.cfg"), encoding="utf-8") as f:
    parser.read_file(f)
  return parser


def declared_requirements() -> set[str]:
  """The normalized names in install_requires, without versions."""
  lines = setup_cfg()["options"]["install_requires"].splitlines()
  return {
      normalize(re.match(r"[A-Za-z0-9._-]+", line.strip()).group())
      for line in lines
      if line.strip()
  }


def console_scripts() -> dict[str, str]:
  """Console script name -> "module:function"."""
  lines = setup_cfg()["options.entry_points"]["console_scripts"].splitlines()
  pairs = [line.split("=", 1) for line in lines if line.strip()]
  return {name.strip(): target.strip() for name, target in pairs}


def imported_modules() -> dict[str, list[str]]:
  """Top-level names of the third-party modules the package imports.

  Counts `import x`, `from x import y` and `importlib.import_module("x")`
  anywhere in a file; standard-library modules and the package itself are
  left out. Returns name -> the files importing it.
  """
  found = {}
  for directory, _, names in os.walk(os.path.join(REPO, PACKAGE)):
    for name in sorted(names):
      if not name.endswith(".py"):
        continue
      path = os.path.join(directory, name)
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
          modules = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
          modules = [node.args[0].value]
        else:
          continue
        for module in modules:
          top = module.split(".")[0]
          if top not in sys.stdlib_module_names and top != PACKAGE:
            found.setdefault(top, []).append(os.path.relpath(path, REPO))
  return found


def test_the_import_walk_sees_lazy_and_top_level_imports():
  modules = imported_modules()
  assert "tensorflow" in modules
  # Imported inside a function only.
  assert "tensorflow_serving" in modules
  assert not {"os", "__future__", PACKAGE} & set(modules)


def test_install_requires_declares_every_imported_distribution():
  declared = declared_requirements()
  distributions = importlib.metadata.packages_distributions()
  problems = []
  for module, files in sorted(imported_modules().items()):
    names = {normalize(name) for name in distributions.get(module, [])}
    if not names:
      problems.append(
          f"{module} (imported by {files[0]}) belongs to no "
          "installed distribution"
      )
    elif not names & declared:
      problems.append(
          f"{' or '.join(sorted(names))} (imported as {module} "
          f"by {files[0]}) is not in install_requires"
      )
  assert not problems, "setup.cfg: " + "; ".join(problems)


def test_install_requires_declares_nothing_the_package_does_not_import():
  distributions = importlib.metadata.packages_distributions()
  imported = {
      normalize(name)
      for module in imported_modules()
      for name in distributions.get(module, [])
  }
  unused = declared_requirements() - imported
  assert not unused, (
      f"setup.cfg install_requires {sorted(unused)}: "
      f"{PACKAGE}/ does not import them"
  )


def test_console_scripts_point_to_functions():
  scripts = console_scripts()
  assert scripts
  for name, target in scripts.items():
    module_name, function = target.split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function, None)), (name, target)
  assert {target.split(":")[0] for target in scripts.values()} == set(
      HELP_FLAGS
  )


def test_each_binary_lists_its_flags_on_help():
  processes = {
      module: subprocess.Popen(
          [sys.executable, "-m", module, "--help"],
          cwd=REPO,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for module in HELP_FLAGS
  }
  for module, process in processes.items():
    stdout, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr, (module, stderr)
    # absl ends --help with exit status 1, before main() runs.
    assert process.returncode == 1, (module, process.returncode, stderr)
    assert "Try --helpfull" in stdout, module
    for flag in HELP_FLAGS[module]:
      assert re.search(rf"^  --(\[no\])?{flag}:", stdout, re.M), (
          module,
          flag,
          stdout,
      )
