"""Size of the package's code: files, lines, and the largest functions (for the structure notes).

python scripts/code_size.py [FOLDER] [--top N]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def main() -> None:
    """Print file and line counts and the ``--top`` longest functions under FOLDER."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(Path(__file__).parents[1] / "src" / "resnets"))
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    root = Path(args.folder)
    files = sorted(root.rglob("*.py"))
    functions: list[tuple[int, str]] = []
    lines = {}
    for path in files:
        text = path.read_text()
        lines[path] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((size, f"{path.relative_to(root)}:{node.name}"))
    functions.sort(reverse=True)
    largest = max(lines, key=lines.__getitem__)
    name = largest.relative_to(root)
    print(f"{len(files)} files, {sum(lines.values())} lines; largest {name} ({lines[largest]})")
    over = {n: sum(size > n for size, _ in functions) for n in (40, 60)}
    print(f"{len(functions)} functions, {over[40]} over 40 lines, {over[60]} over 60")
    for size, name in functions[: args.top]:
        print(f"{size:5d}  {name}")


if __name__ == "__main__":
    main()
