"""Plain prose from the markup formats the `offline-mix` corpus is made of.

Each function takes one source file's text and returns it with the markup a
reader would not see removed: reStructuredText (Python and Linux docs), POD
(Perl docs), AsciiDoc (Git docs), and the two dictionary formats (GCIDE's
dictd text, WordNet's data files). They are deliberately light: the aim is
text a model can learn English from, not a faithful renderer, so anything
ambiguous is left in rather than guessed at. Every function is pure and
deterministic (the corpus's split depends on the exact output).
"""

from __future__ import annotations

import html.entities
import re

# --- reStructuredText ------------------------------------------------------

# Directives whose argument and body are not prose (metadata, code set-up,
# tables of contents, images): dropped with their indented body.
_RST_DROP = frozenset(
    {
        "module",
        "moduleauthor",
        "sectionauthor",
        "currentmodule",
        "testsetup",
        "testcleanup",
        "toctree",
        "index",
        "highlight",
        "image",
        "figure",
        "kernel-doc",
        "kernel-abi",
        "kernel-feat",
        "raw",
        "include",
        "literalinclude",
        "only",
        "tabularcolumns",
        "audit-event",
        "opcode",
        "c:namespace",
        "c:namespace-push",
        "c:namespace-pop",
        "productionlist",
        "impl-detail",
        "cssclass",
        "flat-table",
        "csv-table",
        "list-table",
    }
)
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
_RST_COMMENT = re.compile(r"^(\s*)\.\.(\s|$)")  # `.. anything` that is not a directive: comment or label
_RST_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+<>_.:])\1{3,}\s*$")
_RST_ROLE = re.compile(r":[\w:.+-]+:`([^`]*)`")
_RST_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_INTERPRETED = re.compile(r"`([^`]+)`_{0,2}")
_RST_STRONG = re.compile(r"\*\*([^*]+)\*\*")


def _rst_inline(line: str) -> str:
    if line.endswith("::") and line.strip() != "::":  # "as shown below::" introduces a literal block
        line = line[:-1]

    def role(match: re.Match[str]) -> str:
        body = match.group(1)
        if body.endswith(">") and "<" in body:  # :ref:`text <target>` -> text
            body = body[: body.rindex("<")].rstrip()
        return body.lstrip("~!")

    line = _RST_ROLE.sub(role, line)
    line = _RST_LINK.sub(r"\1", line)
    line = _RST_LITERAL.sub(r"\1", line)
    line = _RST_INTERPRETED.sub(r"\1", line)
    return _RST_STRONG.sub(r"\1", line)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def rst_to_text(text: str) -> str:
    """reStructuredText as plain text: headings kept, underlines, comments and metadata directives dropped."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _RST_DIRECTIVE.match(line)
        if directive or _RST_COMMENT.match(line):
            indent = _indent(line)
            name = directive.group(2) if directive else ""
            keep = directive is not None and name not in _RST_DROP
            if keep and directive.group(3).strip():
                out.append(directive.group(1) + _rst_inline(directive.group(3).strip()))
            i += 1
            # The block runs over lines indented deeper than the marker (and blank lines inside it);
            # a kept directive keeps its body but not its `:option:` lines.
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
                body = lines[i]
                if keep and not (body.strip().startswith(":") and re.match(r"^\s*:[\w -]+:", body)):
                    out.append(_rst_inline(body))
                elif keep and not body.strip():
                    out.append("")
                i += 1
            continue
        if _RST_UNDERLINE.match(line):
            i += 1
            continue
        out.append(_rst_inline(line))
        i += 1
    return _squeeze(out)


# --- POD -------------------------------------------------------------------

_POD_DROP_COMMANDS = ("=over", "=back", "=cut", "=pod", "=encoding", "=for", "=begin", "=end")
_POD_CODE = re.compile(r"([A-Z])<(?:<+)\s+(.*?)\s+>+>")  # C<< x->y >> (any number of brackets)
_POD_SIMPLE = re.compile(r"([A-Z])<([^<>]*)>")
_POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&"}


def _pod_code(letter: str, body: str) -> str:
    if letter == "X" or letter == "Z":  # index entries and zero-width markers are invisible
        return ""
    if letter == "E":
        return _pod_escape(body)
    if letter == "L":
        return body.split("|", 1)[0] if "|" in body else body.split("/", 1)[0].strip('"') or body
    return body


def _pod_escape(body: str) -> str:
    """E<...>: a name (lt, eacute), or a number: 0x.. hex, 0.. octal, else decimal (perlpodspec)."""
    if body in _POD_ESCAPES:
        return _POD_ESCAPES[body]
    try:
        if body.lower().startswith("0x"):
            return chr(int(body, 16))
        if body.isdigit():
            return chr(int(body, 8) if body.startswith("0") else int(body))
    except (ValueError, OverflowError):
        return ""
    return chr(html.entities.name2codepoint[body]) if body in html.entities.name2codepoint else ""


def _pod_inline(line: str) -> str:
    line = _POD_CODE.sub(lambda m: _pod_code(m.group(1), m.group(2)), line)
    # Innermost codes first, until none is left (B<I<x>> needs two passes).
    for _ in range(8):
        new = _POD_SIMPLE.sub(lambda m: _pod_code(m.group(1), m.group(2)), line)
        if new == line:
            break
        line = new
    return line


def pod_to_text(text: str) -> str:
    """POD as plain text: `=head`/`=item` lines become their text; layout commands and formatting codes go."""
    out: list[str] = []
    in_block = False  # inside =begin ... =end (HTML, LaTeX): not prose
    for line in text.splitlines():
        if line.startswith("=begin"):
            in_block = True
            continue
        if line.startswith("=end"):
            in_block = False
            continue
        if in_block:
            continue
        if line.startswith(_POD_DROP_COMMANDS):
            continue
        if line.startswith(("=head", "=item")):
            line = line.split(None, 1)[1] if " " in line else ""
            if line.strip() == "*":  # a bullet with its text on the next paragraph
                continue
        out.append(_pod_inline(line))
    return _squeeze(out)


# --- AsciiDoc ---------------------------------------------------------------

_ADOC_LINKGIT = re.compile(r"linkgit:([\w.-]+)\[(\d)\]")
_ADOC_ANCHOR = re.compile(r"\[\[[^\]]*\]\]")
_ADOC_ATTRIBUTE = re.compile(r"^:[\w-]+:.*$|^\[[\w ,=\"'-]*\]\s*$|^include::.*$|^ifdef::.*$|^ifndef::.*$|^endif::.*$")
_ADOC_DELIMITER = re.compile(r"^(-{4,}|\.{4,}|={4,}|~{4,}|\+{4,}|\*{4,}|_{4,}|/{4,})\s*$")


def asciidoc_to_text(text: str) -> str:
    """AsciiDoc (Git's manual pages) as plain text: underlines, block delimiters and attributes dropped."""
    out: list[str] = []
    for line in text.splitlines():
        if _ADOC_DELIMITER.match(line) or _ADOC_ATTRIBUTE.match(line) or line.startswith("//"):
            continue
        line = _ADOC_LINKGIT.sub(r"\1(\2)", line)
        out.append(_ADOC_ANCHOR.sub("", line))
    return _squeeze(out)


# --- dictionaries -------------------------------------------------------------

# GCIDE's dictd text cites its source after every sense ("[1913 Webster]",
# "[PJC]"); those lines are bibliography, not definitions.
_GCIDE_SOURCE_LINE = re.compile(r"^\s*\[[^\]]*\]\s*$")
_GCIDE_XREF = re.compile(r"[{}]")


def gcide_entries(text: str) -> list[str]:
    """The dictionary's entries in file order, citation lines and cross-reference braces removed.

    An entry starts at a line in column 0 after a blank line; the database's
    own header entries (`00-database-...`) are dropped.
    """
    entries: list[list[str]] = []
    previous_blank = True
    for line in text.splitlines():
        if line and not line[0].isspace() and previous_blank:
            entries.append([])
        previous_blank = not line.strip()
        if entries and not _GCIDE_SOURCE_LINE.match(line):
            entries[-1].append(_GCIDE_XREF.sub("", line))
    cleaned = (_squeeze(lines) for lines in entries if lines and not lines[0].startswith("00-database"))
    return [entry for entry in cleaned if entry.strip()]


def wordnet_glosses(data: str) -> list[str]:
    """One line per synset of a WordNet `data.*` file: "word, other word: gloss".

    The file's licence header lines start with two spaces and are skipped.
    """
    out: list[str] = []
    for line in data.splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        fields, gloss = line.split("|", 1)
        parts = fields.split()
        count = int(parts[3], 16)  # w_cnt is two hex digits, then (word, lex_id) pairs
        words = [parts[4 + 2 * k].replace("_", " ") for k in range(count)]
        words = [re.sub(r"\([a-z]+\)$", "", w) for w in words]  # adjective markers: "good(a)"
        out.append(f"{', '.join(words)}: {gloss.strip()}")
    return out


def _squeeze(lines: list[str]) -> str:
    """Lines joined, trailing spaces cut, runs of blank lines reduced to one, ending in one newline."""
    text = "\n".join(line.rstrip() for line in lines)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return text + "\n" if text else ""
