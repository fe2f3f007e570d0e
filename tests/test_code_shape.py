"""The code stays readable at a glance: no function of the package longer than a screen, none taking more than
eight parameters (more belong in an options object: Reading, FitOptions, Source / Output / Shown, Images...)."""
import ast
from pathlib import Path

import deepcluster

MOST_LINES, MOST_PARAMS = 60, 8


def _functions():
    root = Path(deepcluster.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(root.parent)}:{node.lineno} {node.name}", node


def _params(fn: ast.FunctionDef) -> int:
    a = fn.args
    named = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
    return len(named) + (a.vararg is not None) + (a.kwarg is not None)


def test_no_function_is_longer_than_a_screen():
    long = [f"{where} ({fn.end_lineno - fn.lineno + 1} lines)" for where, fn in _functions()
            if fn.end_lineno - fn.lineno + 1 > MOST_LINES]
    assert not long, f"functions over {MOST_LINES} lines: {long}"


def test_no_function_takes_more_than_eight_parameters():
    many = [f"{where} ({_params(fn)})" for where, fn in _functions() if _params(fn) > MOST_PARAMS]
    assert not many, f"functions over {MOST_PARAMS} parameters (use an options object): {many}"


def test_the_rules_see_the_package():
    # the walk reads the package itself: its largest modules, and the limits hold there as measured
    names = {where.split(" ")[1] for where, _ in _functions()}
    assert {"train", "clustering_input", "write_report", "build_parser"} <= names
