"""Fail when a module or a function outgrows the sizes docs/architecture.md sets.

Ruff counts statements and branches but not lines, and the limit we want a newcomer to rely on is
"a module reads in one sitting, a function fits on a screen": 600 lines a module, 80 a function.
Generated Alembic migrations are exempt. An exception is named below with its reason, so
keeping one is a visible decision rather than drift.

Usage: python scripts/check_shape.py [PATH ...]   (default: mailer)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

# "path" or "path:function" -> why it may stay over the limit.
EXCEPTIONS: dict[str, str] = {}

EXEMPT_DIRS = ("migrations/versions",)


def problems(root: Path) -> list[str]:
    """Every module and function over its limit under ``root``, as one line each."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.as_posix()
        if any(part in rel for part in EXEMPT_DIRS):
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n") + (0 if source.endswith("\n") else 1)
        if lines > MAX_MODULE_LINES and rel not in EXCEPTIONS:
            found.append(f"{rel}: {lines} lines (limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source, filename=rel)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            key = f"{rel}:{node.name}"
            if length > MAX_FUNCTION_LINES and key not in EXCEPTIONS:
                found.append(f"{key} (line {node.lineno}): {length} lines "
                             f"(limit {MAX_FUNCTION_LINES})")
    return found


def main(argv: list[str]) -> int:
    roots = [Path(arg) for arg in argv] or [Path("mailer")]
    found = [line for root in roots for line in problems(root)]
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} over the size limits (see docs/architecture.md)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
