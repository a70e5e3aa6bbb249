"""The package's layers, read from the code: no module imports from a layer above its own.

The table below is the one the README's layout section draws. Every import is checked, the
ones inside functions too (a lazy import is still a dependency). Modules of one layer may
import each other, except that training and the applications (both layer 5) stay apart:
an application never runs the training loop, and training never needs an application.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "bert_jax"

# Top-level package or module of bert_jax -> (layer, group). Higher layers may import lower ones.
LAYERS = {
    "assets": (0, "runtime"), "runtime": (0, "runtime"),
    "models": (1, "models"), "evaluation": (1, "evaluation"),
    "data": (2, "data"), "convert": (2, "convert"),
    "config_lib": (3, "core"), "sharding": (3, "core"), "optim": (3, "core"), "checkpointing": (3, "core"),
    "metrics": (3, "core"),
    "tasks": (4, "tasks"),
    "steps": (5, "training"), "loop": (5, "training"), "train": (5, "training"), "finetune": (5, "training"),
    "embed": (5, "applications"), "search": (5, "applications"), "report": (5, "applications"),
    "rerank": (5, "applications"), "export": (5, "applications"),
    "main": (6, "entry"),
}
APART = {frozenset({"training", "applications"})}
MAX_LINES = 400
# A module may run longer when its docstring says why, in these words.
LONG_REASON = "longer than 400 lines because"


def modules():
  return sorted(p for p in PACKAGE.rglob("*.py"))


def top_name(path: pathlib.Path) -> str:
  return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, dotted module) of every bert_jax import in the file, wherever it sits."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.append((node.lineno, node.module))
      # `from bert_jax import train` imports the module bert_jax.train.
      if node.module == "bert_jax":
        out += [(node.lineno, f"bert_jax.{alias.name}") for alias in node.names]
  return [(line, name) for line, name in out if name.startswith("bert_jax.")]


def test_every_module_has_a_layer():
  missing = sorted({top_name(p) for p in modules()} - set(LAYERS) - {"__init__"})
  assert not missing, f"add these to LAYERS (and the README's layout section): {missing}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_higher_layer(path):
  if path == PACKAGE / "__init__.py":
    return  # the package face re-exports the Python API; it sits below everything that imports bert_jax
  layer, group = LAYERS[top_name(path)]
  problems = []
  for line, name in imported_modules(path):
    target = name.split(".")[1]
    if target not in LAYERS:
      continue  # e.g. `import bert_jax.__init__` never happens; unknown names fail the test above
    other_layer, other_group = LAYERS[target]
    if other_layer > layer:
      problems.append(f"line {line}: {name} (layer {other_layer}) from layer {layer}")
    elif frozenset({group, other_group}) in APART:
      problems.append(f"line {line}: {name} ({other_group}) from {group}, which stay apart")
  assert not problems, f"{path.relative_to(PACKAGE.parent)}:\n  " + "\n  ".join(problems)


def test_the_package_face_imports_only_low_layers():
  for line, name in imported_modules(PACKAGE / "__init__.py"):
    assert LAYERS[name.split(".")[1]][0] <= 2, f"bert_jax/__init__.py:{line} imports {name}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_short_or_say_why(path):
  text = path.read_text(encoding="utf-8")
  lines = text.count("\n")
  if lines > MAX_LINES:
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert LONG_REASON in docstring.lower(), f"{path.relative_to(PACKAGE.parent)} has {lines} lines"


def test_the_checker_sees_a_violation(tmp_path):
  """The import reader finds lazy and `from bert_jax import x` imports (the checks above can fail)."""
  sample = tmp_path / "sample.py"
  sample.write_text("def f():\n  from bert_jax import train\n  import bert_jax.tasks.registry\n", encoding="utf-8")
  assert sorted(imported_modules(sample)) == [(2, "bert_jax.train"), (3, "bert_jax.tasks.registry")]


def test_the_readme_layout_names_every_module():
  readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
  layout = readme[readme.index("## Layout"):]
  missing = [str(p.relative_to(PACKAGE)) for p in modules()
             if p.name not in ("__init__.py", "__main__.py") and p.name not in layout]
  assert not missing, f"the README's layout section does not name {missing}"
