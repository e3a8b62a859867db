"""Command-line flags derived from the typed configs: one flag per setting, its help and default from the dataclass.

    @dataclass
    class DataConfig:
        seq_len: int = 256  # tokens per training window
                  |
                  v
    --seq-len SEQ_LEN   tokens per training window (data.seq_len; default: 256)

A flag is the field's name in kebab case; `names` renames the few that read
better otherwise (`data.source` is --data) or would collide (`optim.name` and
`objective.name`), and `aliases` keeps other spellings working (--warmup-steps).
A flag's dest is its dotted config key, and flags not given stay out of the
namespace (argparse.SUPPRESS), so a recipe's values hold unless a flag is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from stlm.errors import UserError

_FIELD_INDENT = 4  # a dataclass's fields sit one level inside its (dedented) class statement


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default (config flags say theirs with their key)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return f"{text} (default: {show(action.default).replace('%', '%%')})"


def show(value: Any) -> str:
    """A default as the help prints it."""
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and (not value or value != value.strip() or "\n" in value):
        return repr(value)
    return str(value)


def field_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each field of a dataclass, read from its source: what the setting means."""
    return dict(_field_comments(cls))


@functools.cache
def _field_comments(cls: type) -> dict[str, str]:
    # Reading a class's source parses its whole module: once per class and process, not once per
    # flag table (the parser holds ~40 tables, most sections in several commands).
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source at hand (a frozen app): flags go without help
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    first: dict[int, tokenize.TokenInfo] = {}  # line -> its first token
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.NEWLINE):
            continue
        line = token.start[0]
        first.setdefault(line, token)
        lead = first[line]
        if token.type == tokenize.COMMENT and lead.string in names and lead.start[1] == _FIELD_INDENT:
            comments[lead.string] = token.string.lstrip("#").strip()
    return comments


def add_config_flags(
    parser: argparse.ArgumentParser,
    config: Any,
    *,
    prefix: str = "",
    names: Mapping[str, str] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
    choices: Mapping[str, Sequence[str]] | None = None,
    only: Collection[str] | None = None,
    title: str | None = None,
    show_keys: bool = True,
) -> dict[str, str]:
    """One flag per plain setting of the config dataclass instance `config` (its values are the defaults shown).

    Nested dataclass sections become argument groups. `only` keeps just these
    dotted keys. Settings of other types (lists, tables) are left to --set.
    `show_keys` names each flag's dotted key in its help (the recipe key).
    Returns {dotted key: flag}.
    """
    names, aliases, choices = names or {}, aliases or {}, choices or {}
    hints = typing.get_type_hints(type(config))
    comments = field_comments(type(config))
    group = parser.add_argument_group(title) if title else parser
    table: dict[str, str] = {}
    for f in dataclasses.fields(config):
        key, value = prefix + f.name, getattr(config, f.name)
        if only is not None and key not in only and not any(k.startswith(key + ".") for k in only):
            continue
        if dataclasses.is_dataclass(value):
            table |= add_config_flags(
                parser,
                value,
                prefix=key + ".",
                names=names,
                aliases=aliases,
                choices=choices,
                only=only,
                title=f"{key} settings (recipe section [{key}])" if show_keys else None,
                show_keys=show_keys,
            )
            continue
        kind = _scalar_kind(hints[f.name])
        if kind is None:
            continue
        flag = names.get(key, "--" + f.name.replace("_", "-"))
        about = comments.get(f.name, "")
        options: dict[str, Any] = {
            "dest": key,
            "default": argparse.SUPPRESS,
            "help": f"{about} ({key + '; ' if show_keys else ''}default: {show(value)})".lstrip().replace("%", "%%"),
        }
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            options["metavar"] = None if key in choices else flag.lstrip("-").upper().replace("-", "_")
            options["choices"] = choices.get(key)
        group.add_argument(flag, *aliases.get(key, ()), **options)
        table[key] = flag
    return table


def _scalar_kind(hint: Any) -> type | None:
    """str, int, float or bool for a hint such as `int` or `str | None`; None for anything else."""
    is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    kinds = [k for k in (typing.get_args(hint) if is_union else (hint,)) if k is not type(None)]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (str, int, float, bool) else None


def add_set_flag(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"any setting by its dotted key, repeatable, e.g. {example} (default: none)",
    )


def overrides(args: argparse.Namespace, table: Mapping[str, str]) -> dict[str, Any]:
    """Dotted config keys of the flags given, then every --set KEY=VALUE (passed through unchanged)."""
    given = vars(args)
    out = {key: given[key] for key in table if key in given}
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def given(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The flags given for one section, by field name: {"device": "cpu"} for --device cpu."""
    start = section + "."
    return {key[len(start) :]: value for key, value in vars(args).items() if key.startswith(start)}
