"""The package's import graph: no cycles, and `training/` knows no model family.

Every import counts, module-level or inside a function (a lazy import that closes a cycle is
still a cycle: the two modules cannot be understood or moved apart). `from pkg import name`
is an edge to `pkg.name` when that is a module, else to `pkg`; a module's own parent
packages are not edges (Python imports them first, always)."""

import ast
import functools
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "jaxformer")

# What training/ may import from the rest of the package: nothing that names a model family
# or a task. (benchmarking: the FLOPs tables; errors: the shared error classes; data.* is
# reached only through a task.)
TRAINING_MAY_IMPORT = ("jaxformer.training", "jaxformer.benchmarking", "jaxformer.errors")


def _modules() -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(dirpath, f)
    return out


@functools.cache
def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        edges = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative
                    parts = name.split(".") if is_pkg else name.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    targets.append(full if full in mods else base)
            for t in targets:
                while t and t not in mods:  # a.b.c where only a.b is ours
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(t + "."):
                    edges.add(t)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]):
    """One cycle as a list of modules, or None (iterative depth-first search)."""
    state = {}
    for root in sorted(graph):
        if root in state:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path, state[root] = [root], 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_and_package_imports():
    g = import_graph()
    assert "jaxformer.training.task" in g["jaxformer.tasks.pretrain"]
    assert "jaxformer.tasks" in g["jaxformer.launch"]  # a function-level import


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "module", sorted(m for m in _modules() if m.startswith("jaxformer.training"))
)
def test_training_imports_no_model_family_and_no_task(module):
    bad = sorted(t for t in import_graph()[module] if not t.startswith(TRAINING_MAY_IMPORT))
    assert not bad, f"{module} imports {bad}; training/ receives its task and knows no model"


def test_every_registered_task_is_a_task_and_old_names_still_resolve():
    from jaxformer.tasks import TASKS, task_class
    from jaxformer.training import Task

    for name in TASKS:
        assert issubclass(task_class(name), Task), name
    assert task_class("jaxformer.recipes.electra:ElectraTask") is task_class("electra")
    assert task_class("jaxformer.recipes.finetune:FineTuneTask") is task_class("finetune")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        task_class("nope")


def _config_gets(path: str) -> list[str]:
    """`....get(` calls on a config object (a name or attribute chain rooted at `config`)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr != "get":
                continue
            root = node.func.value
            while isinstance(root, ast.Attribute) and root.attr != "config":
                root = root.value
            name = root.attr if isinstance(root, ast.Attribute) else getattr(root, "id", "")
            if name == "config":
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    return found


def test_tasks_and_the_loop_read_declared_keys_without_inline_defaults():
    # A `config.get(KEY, default)` writes a second default beside the declared one
    # (training/defaults.py, recipes/configs.py, tasks.seq2seq.decode_config). checks.py is
    # exempt: it validates configs of every task, so it probes keys only some declare.
    offenders = []
    for room in ("tasks", "training"):
        for dirpath, _, files in os.walk(os.path.join(PKG, room)):
            for f in files:
                if f.endswith(".py") and f != "checks.py":
                    offenders += _config_gets(os.path.join(dirpath, f))
    assert not offenders, offenders
    # The probe finds what it is for.
    assert _config_gets(os.path.join(PKG, "training", "checks.py"))
