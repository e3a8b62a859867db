from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from stlm.data import corpus_fingerprint, iter_pydoc_docstrings, load_documents

# A fresh interpreter with another hash seed builds the corpus alongside this
# one: an order leaked from a set or dict would show up as a different corpus.
_FINGERPRINT = """
from stlm.data import corpus_fingerprint, load_documents
print(corpus_fingerprint(load_documents("pydocs")))
"""
# "name: " at the start of a document or paragraph: where a docstring begins.
_HEADER = re.compile(r"(?:\A|\n\n)([A-Za-z_][\w.]*): ")


def test_pydocs_is_deterministic_and_large() -> None:
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(root))
    other = subprocess.Popen([sys.executable, "-c", _FINGERPRINT], env=env, stdout=subprocess.PIPE, text=True)
    docs = load_documents("pydocs")
    out, _ = other.communicate(timeout=300)
    assert other.returncode == 0
    assert out.strip() == corpus_fingerprint(docs)

    size = sum(len(d.encode("utf-8")) for d in docs)
    # CPython 3.11: 724 documents (79 help topics, 645 modules), 2.53 MB.
    print(f"pydocs: {len(docs)} documents, {size / 1e6:.2f} MB")
    assert size > 1_000_000 and len(docs) > 300
    assert any(d.startswith("json: ") and "\n\njson.dumps: " in d for d in docs)
    names = {m.group(1) for d in docs for m in _HEADER.finditer(d)}
    # A test folder shows up as a package part of a name; a function may be called `test`.
    test_dirs = {"test", "tests", "idle_test"}
    assert not [n for n in names if test_dirs & set(n.split(".")[:-1]) or n in test_dirs]
    assert not [n for n in names if n.split(".")[0] in {"pip", "setuptools", "numpy", "torch"}]


def test_docstring_records_from_a_fake_stdlib(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text('"""The package."""\n', encoding="utf-8")
    (tmp_path / "pkg" / "mod.py").write_text(
        '"""Module doc."""\n'
        "import sys\n"
        "class Thing:\n"
        '    """A thing.\n\n        Indented detail.\n    """\n'
        "    def method(self):\n"
        '        """Does it."""\n'
        "        def inner():\n"
        '            """Nested."""\n'
        "if sys.platform:\n"
        "    async def helper():\n"
        '        """Conditional helper."""\n'
        "def bare():\n"
        "    pass\n",
        encoding="utf-8",
    )
    (tmp_path / "broken.py").write_text("def (:\n", encoding="utf-8")  # fails to parse: skipped
    (tmp_path / "latin.py").write_bytes(b'"""caf\xe9"""\n')  # undecodable: skipped
    for skipped in ("test", "tests", "idle_test", "site-packages", "__pycache__"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "x.py").write_text('"""Skip me."""\n', encoding="utf-8")
    (tmp_path / "pkg" / "tests").mkdir()
    (tmp_path / "pkg" / "tests" / "data.py").write_text('"""Skip me too."""\n', encoding="utf-8")

    records = list(iter_pydoc_docstrings(tmp_path))
    assert [(r.module, r.qualname, r.text) for r in records] == [
        ("pkg", "", "The package."),
        ("pkg.mod", "", "Module doc."),
        ("pkg.mod", "Thing", "A thing.\n\nIndented detail."),
        ("pkg.mod", "Thing.method", "Does it."),
        ("pkg.mod", "Thing.method.inner", "Nested."),
        ("pkg.mod", "helper", "Conditional helper."),
    ]
    assert records[3].name == "pkg.mod.Thing.method" and records[0].name == "pkg"
