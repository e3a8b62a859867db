"""Worked fine-tuning tasks that need no download, built from the stdlib's docstrings.

Both read the docstrings of the running Python's standard library (the
`pydocs` corpus, `stlm.data.pydocs.iter_pydoc_docstrings`), drop every
docstring whose text occurs more than once (inherited boilerplate such as
"Return self==value." would otherwise sit in every split under several
answers), and split by a SHA-256 of the text: 75% train, 10% validation,
15% test. The same Python version always gives the same examples; another
version's stdlib gives slightly different ones (the run records the version
and the hash of every split file).

docstring-summary
    A PEP 257 docstring: a one-line summary, a blank line, then the body.
    input = the body, target = the summary line. Kept when the summary is one
    line of at most 100 characters and the body has at least 40 characters.

docstring-topic
    input = a docstring (any), target = the part of the standard library its
    module belongs to, by top-level module name (`TOPICS` below; modules not
    listed are left out). Each label keeps at most 400 docstrings, chosen by
    the same hash, so the classes are close to balanced.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from stlm.finetune.examples import Example

if TYPE_CHECKING:
    from stlm.data.pydocs import DocstringRecord

SPLITS = ("train", "val", "test")
_VAL, _TEST = 0.10, 0.15
MAX_PER_TOPIC = 400

# Label -> top-level stdlib modules. Chosen as families a reader would name,
# each with a few hundred distinct docstrings in CPython 3.10-3.13.
TOPICS: dict[str, tuple[str, ...]] = {
    "gui": ("tkinter", "idlelib", "turtle", "turtledemo", "curses"),
    "internet": (
        "email",
        "http",
        "urllib",
        "mailbox",
        "imaplib",
        "nntplib",
        "smtplib",
        "ftplib",
        "poplib",
        "ssl",
        "socket",
        "socketserver",
        "xmlrpc",
        "wsgiref",
        "cgi",
        "cgitb",
        "telnetlib",
        "webbrowser",
        "mimetypes",
        "smtpd",
        "ipaddress",
        "mailcap",
        "netrc",
    ),
    "concurrency": (
        "asyncio",
        "multiprocessing",
        "threading",
        "concurrent",
        "subprocess",
        "selectors",
        "queue",
        "sched",
        "_threading_local",
        "asynchat",
        "asyncore",
    ),
    "debugging": (
        "unittest",
        "doctest",
        "pdb",
        "bdb",
        "traceback",
        "trace",
        "tracemalloc",
        "timeit",
        "pstats",
        "profile",
        "cProfile",
        "faulthandler",
        "logging",
    ),
    "data types": (
        "_pydecimal",
        "decimal",
        "datetime",
        "collections",
        "numbers",
        "enum",
        "statistics",
        "_collections_abc",
        "calendar",
        "fractions",
        "random",
        "heapq",
        "bisect",
        "zoneinfo",
        "copy",
        "weakref",
        "graphlib",
        "dataclasses",
        "array",
        "math",
        "cmath",
    ),
    "files": (
        "tarfile",
        "_pyio",
        "pathlib",
        "zipfile",
        "shutil",
        "os",
        "tempfile",
        "gzip",
        "bz2",
        "lzma",
        "stat",
        "fileinput",
        "glob",
        "fnmatch",
        "filecmp",
        "genericpath",
        "posixpath",
        "ntpath",
        "shelve",
        "dbm",
        "zipapp",
        "_compression",
        "io",
    ),
}
_MODULE_TOPIC = {module: topic for topic, modules in TOPICS.items() for module in modules}


def build_task(name: str, stdlib: str | Path | None = None) -> dict[str, list[Example]]:
    """{"train": [...], "val": [...], "test": [...]} for a built-in task name.

    `stdlib` is the library folder to read (default: the running Python's).
    """
    from stlm.data.pydocs import iter_pydoc_docstrings

    return _task_from(name, list(iter_pydoc_docstrings(stdlib)))


def _task_from(name: str, records: list[DocstringRecord]) -> dict[str, list[Example]]:
    """`build_task` on docstring records already read."""
    counts = Counter(r.text for r in records)
    unique = [r for r in records if counts[r.text] == 1]
    if name == "docstring-summary":
        examples = [ex for r in unique if (ex := summary_example(r.text, r.name)) is not None]
    elif name == "docstring-topic":
        examples = _balanced(
            Example(r.text, _MODULE_TOPIC[r.module.split(".")[0]], f"pydocs:{r.name}")
            for r in unique
            if r.module.split(".")[0] in _MODULE_TOPIC
        )
    else:
        raise ValueError(f"no built-in task {name!r}")
    return _split(examples)


def unlabelled_docstrings(name: str, stdlib: str | Path | None = None) -> list[str]:
    """The stdlib docstrings in none of task `name`'s splits, sorted: text without labels, to
    self-train or distil on (docs/finetune.md, "Soft labels"). Like the task's own examples,
    each occurs once in the stdlib."""
    from stlm.data.pydocs import iter_pydoc_docstrings

    records = list(iter_pydoc_docstrings(stdlib))  # read once: the task is built from the same records
    taken = {ex.input for split in _task_from(name, records).values() for ex in split}
    counts = Counter(r.text for r in records)
    return sorted(text for text, n in counts.items() if n == 1 and text not in taken)


def summary_example(docstring: str, where: str = "") -> Example | None:
    """(body -> summary line) of a PEP 257 docstring, or None when it has no such shape."""
    head, sep, body = docstring.partition("\n\n")
    head, body = head.strip(), body.strip()
    if not sep or "\n" in head or not head or len(head) > 100 or len(body) < 40:
        return None
    return Example(body, head, f"pydocs:{where}" if where else "")


def lead_sentence(text: str) -> str:
    """The first sentence of a text (up to the first '. ' or the first blank line): the lead baseline."""
    first = text.strip().split("\n\n", 1)[0]
    flat = " ".join(first.split())
    end = flat.find(". ")
    return flat if end < 0 else flat[: end + 1]


def _rank(ex: Example) -> float:
    digest = hashlib.sha256(f"{ex.input}\0{ex.target}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _balanced(examples: Iterable[Example]) -> list[Example]:
    by_topic: dict[str, list[Example]] = {}
    for ex in examples:
        by_topic.setdefault(ex.target, []).append(ex)
    kept = []
    for topic in TOPICS:
        kept += sorted(by_topic.get(topic, []), key=_rank)[:MAX_PER_TOPIC]
    return kept


def _split(examples: list[Example]) -> dict[str, list[Example]]:
    # A second hash (salted) decides the split, so the topic cap above does not bias it.
    out: dict[str, list[Example]] = {split: [] for split in SPLITS}
    for ex in examples:
        u = int.from_bytes(hashlib.sha256(f"split\0{ex.input}".encode()).digest()[:8], "big") / 2**64
        out["test" if u < _TEST else "val" if u < _TEST + _VAL else "train"].append(ex)
    # Each split in hash order, not grouped by label: any prefix of it is a fair sample.
    return {split: sorted(examples, key=_rank) for split, examples in out.items()}


def write_heldout_corpus(path: str | Path) -> int:
    """Write the `pydocs` corpus minus every validation and test docstring of both tasks, as JSONL.

    Pretrain on it (`stlm pretrain --data PATH`) so that a fine-tuned model's
    test scores come from docstrings it has never read. Returns the number of
    documents written.
    """
    import json

    from stlm.data.pydocs import iter_pydoc_docstrings, load_pydocs

    inputs = set()
    for name in ("docstring-summary", "docstring-topic"):
        splits = build_task(name)
        inputs |= {ex.input for ex in splits["val"] + splits["test"]}
    held_out = set()
    for record in iter_pydoc_docstrings():
        summary = summary_example(record.text)
        if record.text in inputs or (summary is not None and summary.input in inputs):
            held_out.add(record.text)
    docs = load_pydocs(exclude=held_out)
    Path(path).write_text("".join(json.dumps({"text": doc}) + "\n" for doc in docs), encoding="utf-8")
    return len(docs)
