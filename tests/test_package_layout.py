"""The package's layering: no import cycle between the packages of `match_rcnn_jax` (imports
inside functions count too: a lazy import is still a dependency), and the library holds no
measurement fixtures."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "match_rcnn_jax")


def _unit(module: str) -> str:
  """'match_rcnn_jax.models.heads' -> 'models'; a top-level module is its own unit."""
  return module.split(".")[1] if module.count(".") >= 1 else module


def package_graph(root: str = PKG) -> dict[str, set[str]]:
  """{unit: units it imports}, units being the subpackages and top-level modules of the
  package at `root` (every `import` / `from ... import` anywhere in its files)."""
  graph: dict[str, set[str]] = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
      rel = rel.removesuffix(".__init__")
      unit = _unit(rel)
      deps = graph.setdefault(unit, set())
      for node in ast.walk(ast.parse(open(path).read())):
        targets = []
        if isinstance(node, ast.Import):
          targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
          targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for t in targets:
          if t.startswith("match_rcnn_jax.") and _unit(t) != unit:
            if os.path.exists(os.path.join(root, *t.split(".")[1:2])) or os.path.exists(
                os.path.join(root, t.split(".")[1] + ".py")):
              deps.add(_unit(t))
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` as a list of nodes (first == last), or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(n):
    state[n] = 1
    stack.append(n)
    for m in sorted(graph.get(n, ())):
      if state.get(m) == 1:
        return stack[stack.index(m):] + [m]
      if m not in state:
        found = visit(m)
        if found:
          return found
    stack.pop()
    state[n] = 2
    return None

  for n in sorted(graph):
    if n not in state:
      found = visit(n)
      if found:
        return found
  return None


def test_find_cycle_finds_a_cycle_and_accepts_a_dag():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_packages():
  graph = package_graph()
  assert {"data", "evaluation", "inference", "models", "ops", "training"} <= set(graph)
  assert "evaluation" in graph["training"] and "inference" in graph["evaluation"]  # read right
  assert find_cycle(graph) is None, find_cycle(graph)


def test_no_measurement_fixture_in_the_library():
  names = [n for _, _, files in os.walk(PKG) for n in files]
  assert not [n for n in names if "fixture" in n], names
