"""The examples of docs/api.md run, in order, in one namespace, and say what they
return: an expression statement whose line ends in ``# -> VALUE`` must evaluate to
VALUE whenever VALUE is a Python literal (the text up to a ``: `` or two blanks,
which start an explanation); other ``# ->`` comments are descriptions."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "docs" / "api.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the block's first line, source) of every ```python block."""
    return [(text[:m.start(1)].count("\n") + 1, m.group(1)) for m in FENCE.finditer(text)]


def expected_value(comment: str) -> tuple[bool, object]:
    """The literal a ``# -> ...`` comment promises, if it is one."""
    value = comment.split("# ->", 1)[1].strip()
    for candidate in (value, re.split(r": |  ", value)[0].strip()):
        try:
            return True, ast.literal_eval(candidate)
        except (ValueError, SyntaxError):
            continue
    return False, None


def test_api_examples_run_and_return_what_they_say() -> None:
    pytest.importorskip("matplotlib")  # the plotting example (the docs extra)
    text = API.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "api_examples"}
    checked = 0
    for first_line, source in blocks:
        lines = source.splitlines()
        tree = ast.parse(source, filename=f"docs/api.md:{first_line}")
        for statement in tree.body:
            where = f"docs/api.md:{first_line + statement.lineno - 1}"
            last = lines[(statement.end_lineno or statement.lineno) - 1]
            code = ast.Module(body=[statement], type_ignores=[])
            with contextlib.redirect_stdout(io.StringIO()):
                if isinstance(statement, ast.Expr) and "# ->" in last:
                    literal, value = expected_value(last)
                    got = eval(compile(ast.Expression(statement.value), where, "eval"),
                               namespace)
                    if literal:
                        assert got == value, f"{where}: {ast.unparse(statement)} is {got!r}"
                        checked += 1
                else:
                    exec(compile(code, where, "exec"), namespace)
    assert checked >= 15, f"only {checked} results checked"
