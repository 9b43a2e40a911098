"""Imports flow down only: each package may import the packages below it, never above.

util < datasets < data < models < evaluation < options < trainers < entry points (train.py,
test.py, scripts/). Lazy imports inside functions count too: a cycle hidden by a lazy import
is still a cycle."""
from __future__ import annotations

import ast
import os
from typing import List

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("util", "datasets", "data", "models", "evaluation", "options", "trainers")
TOP = ("scripts", "train", "test", "tests")  # entry points: nothing below may import them
RANK = {name: i for i, name in enumerate(LAYERS)}
RANK.update({name: len(LAYERS) for name in TOP})


def upward_imports(source: str, package: str, where: str) -> List[str]:
    """Imports in ``source`` (a module of ``package``) of a package ranked above it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        else:
            continue
        for module in modules:
            target = module.split(".")[0]
            if target in RANK and RANK[target] > RANK[package]:
                found.append(f"{where}:{node.lineno} imports {module} ({package} is below {target})")
    return found


def test_the_checker_sees_a_lazy_upward_import():
    source = "def f():\n    from options.base_options import RUN_OPTIONS\n    return RUN_OPTIONS\n"
    assert upward_imports(source, "models", "models/x.py") == [
        "models/x.py:2 imports options.base_options (models is below options)"]
    assert upward_imports("import util.errors\n", "data", "data/x.py") == []


@pytest.mark.parametrize("package", LAYERS)
def test_package_imports_only_layers_below_it(package):
    problems = []
    for root, _, files in os.walk(os.path.join(REPO, package)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    problems += upward_imports(f.read(), package, os.path.relpath(path, REPO))
    assert not problems, "\n".join(problems)
