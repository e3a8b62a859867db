"""The `pydocs` corpus: English prose that ships with every Python.

Two parts, both read from the running interpreter's own files so the corpus
needs no network and no package beyond the standard library:

- every help topic in `pydoc_data.topics` (the text behind `help("FOR")`),
  one document per topic, sorted by topic name;
- the standard library's docstrings, one document per module, found by
  parsing the source with `ast`. Modules are never imported: importing the
  whole stdlib is slow, has side effects (turtle, antigravity, tkinter) and
  fails on modules whose C parts are missing.

The corpus differs slightly between Python versions; the token cache is keyed
on the corpus fingerprint, so that is harmless.
"""

from __future__ import annotations

import ast
import os
import sysconfig
import warnings
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

# Folders under the stdlib that hold tests or test data (some of it is
# deliberately broken or Python 2 source) rather than library prose.
_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "__pycache__"})


@dataclass(frozen=True)
class DocstringRecord:
    """One docstring of the standard library.

    `qualname` is the dotted name inside the module ("JSONEncoder.default"),
    empty for the module's own docstring.
    """

    module: str
    qualname: str
    text: str

    @property
    def name(self) -> str:
        """Fully qualified name, e.g. "json.JSONEncoder.default" or "json"."""
        return f"{self.module}.{self.qualname}" if self.qualname else self.module


def load_pydocs(exclude: Collection[str] = frozenset()) -> list[str]:
    """Help topics then one document per stdlib module with docstrings.

    `exclude` holds docstring texts to leave out (held-out fine-tuning
    examples, so a model pretrained on the rest has never read them).
    """
    return _topic_documents() + _module_documents(frozenset(exclude))


def iter_pydoc_docstrings(stdlib: str | Path | None = None) -> Iterator[DocstringRecord]:
    """Every non-empty docstring of the stdlib, modules in sorted path order.

    Within a module the order is source order (module, then each class and
    function as it appears, methods after their class docstring).
    """
    for module, path in _stdlib_modules(stdlib):
        tree = _parse(path)
        if tree is None:
            continue
        yield from _module_docstrings(module, tree)


def _topic_documents() -> list[str]:
    from pydoc_data.topics import topics  # stdlib data module, ~0.5 MB of text

    return [text.strip() for _, text in sorted(topics.items()) if text.strip()]


def _module_documents(exclude: frozenset[str] = frozenset()) -> list[str]:
    docs: list[str] = []
    current: str | None = None
    parts: list[str] = []
    # Records arrive grouped by module, so one pass builds one document each.
    for record in iter_pydoc_docstrings():
        if record.text in exclude:
            continue
        if record.module != current:
            if parts:
                docs.append("\n\n".join(parts))
            current, parts = record.module, []
        parts.append(f"{record.name}: {record.text}")
    if parts:
        docs.append("\n\n".join(parts))
    return docs


def _stdlib_modules(stdlib: str | Path | None) -> list[tuple[str, Path]]:
    """(dotted module name, file) for every importable .py file, sorted by path."""
    root = Path(stdlib if stdlib is not None else sysconfig.get_paths()["stdlib"])
    found: list[tuple[str, str, Path]] = []  # (relative path, module, file)
    for dirpath, dirnames, filenames in os.walk(root):
        # Only folders that could be packages: this drops site-packages,
        # lib-dynload and config-3.x-<platform> without naming each of them.
        dirnames[:] = [d for d in dirnames if d.isidentifier() and d not in _SKIP_DIRS]
        rel_dir = Path(dirpath).relative_to(root)
        for filename in filenames:
            stem, suffix = os.path.splitext(filename)
            if suffix != ".py" or not stem.isidentifier():
                continue
            rel = rel_dir / filename
            parts = list(rel_dir.parts) + ([] if stem == "__init__" else [stem])
            if parts:
                found.append((rel.as_posix(), ".".join(parts), root / rel))
    found.sort()
    return [(module, path) for _, module, path in found]


def _parse(path: Path) -> ast.Module | None:
    try:
        source = path.read_bytes()
        # Old string escapes in some modules warn on parse; they are not our concern.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source, filename=str(path))
    except (OSError, SyntaxError, ValueError):  # ValueError covers undecodable source
        return None


# Fields of a statement that hold nested statements. Docstrings live only on
# modules, classes and functions, so expressions are never walked (walking
# them with ast.NodeVisitor made this three times slower).
_BLOCK_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _module_docstrings(module: str, tree: ast.Module) -> Iterator[DocstringRecord]:
    """Module docstring, then classes and functions (at any depth) in source order."""
    scope: list[str] = []

    def record(node: ast.AST) -> Iterator[DocstringRecord]:
        text = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
        if text and text.strip():
            yield DocstringRecord(module, ".".join(scope), text.strip())

    def walk(node: ast.AST) -> Iterator[DocstringRecord]:
        for field in _BLOCK_FIELDS:
            for child in getattr(node, field, None) or ():
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    scope.append(child.name)
                    yield from record(child)
                    yield from walk(child)
                    scope.pop()
                else:
                    # if/try/with/for blocks and except/match arms: same scope.
                    yield from walk(child)

    yield from record(tree)
    yield from walk(tree)
