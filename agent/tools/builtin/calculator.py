"""``calculate``: exact arithmetic on an expression (no Python ``eval``: a whitelisted AST walk)."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from agent.tools.registry import ToolContext, ToolError, tool

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "log": math.log, "exp": math.exp, "sin": math.sin, "cos": math.cos,
    "tan": math.tan, "abs": abs, "round": round, "min": min, "max": max}
_NAMES = {"pi": math.pi, "e": math.e}
MAX_EXPONENT = 10_000  # keeps 9**9**9 from eating the CPU


def evaluate(expression: str) -> float | int:
    """Evaluate ``expression`` (numbers, + - * / // % **, parentheses, ``_FUNCS``, pi, e).

    Raises:
        ToolError: syntax error, disallowed construct, or math error (division by zero...).
    """
    try:
        tree = ast.parse(expression, mode="eval")
        return _eval(tree.body)
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from exc
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ToolError(f"math error: {exc}") from exc


def _eval(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError("exponent too large")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords):
        return _FUNCS[node.func.id](*[_eval(a) for a in node.args])
    raise ToolError(f"not allowed in an expression: {ast.dump(node)[:60]}")


@tool("calculate", "Evaluate an arithmetic expression exactly, e.g. '(3.5 * 12) / 7' or 'sqrt(2)'.",
      {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]})
def calculate(args: dict, ctx: ToolContext) -> str:
    """Return the value of ``args["expression"]`` as text."""
    if not isinstance(args.get("expression"), str):
        raise ToolError("expression (a string) is required")
    return str(evaluate(args["expression"]))
