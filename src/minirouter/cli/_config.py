"""Config files for the CLI: reading YAML/JSON, validating with field paths and line numbers,
and the diff between the stored config and a wanted one (shown by `apply`, `edit`, `history`).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import click
import yaml

from minirouter.model import KINDS, Config, Item, ValidationError, from_dict, to_dict
from minirouter.store import Change

from ._common import DISPLAY_KINDS, CliError

# libyaml's loader when PyYAML was built with it (a large file loads ~10x faster).
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Files with more items than this show a progress bar while they are validated (on a terminal).
PROGRESS_THRESHOLD = 2000
# How many field errors one message lists.
MAX_ERRORS = 10
_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")

Action = Literal["add", "change", "remove"]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed YAML or JSON file: its name (for messages), text (for line numbers), data."""

    name: str
    text: str
    data: Any


# The type of a -f option: a file name, or - for stdin.
FILE_ARG = click.Path(exists=True, dir_okay=False, allow_dash=True)


def read_document(path: str) -> Document:
    """Read and parse a YAML or JSON file, ``-`` for stdin (CliError naming the line of a
    syntax error)."""
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    return parse_document(name, text)


def parse_document(name: str, text: str) -> Document:
    """Parse YAML or JSON text (CliError naming the line of a syntax error)."""
    if not text.strip():
        raise CliError(f"{name}: the file is empty")
    if text.lstrip()[:1] in ("{", "["):
        # JSON is YAML, but the json module reads a large file far faster than any YAML parser.
        try:
            return Document(name, text, json.loads(text))
        except ValueError:
            pass  # the YAML parser then says where it is wrong
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise CliError(f"{name}: {_yaml_problem(exc)}") from None
    return Document(name, text, data)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        detail = "; ".join(p for p in (exc.context, exc.problem) if p)
        return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {detail}"
    return f"invalid YAML: {exc}"


def _locate(root: yaml.Node | None, path: str) -> int | None:
    """The line (1-based) of a field path like ``routes[2].path`` in a composed file.

    A field's line is its key's (a block value starts on the next line); a path that goes
    further than the file (a missing field) gives the line of its deepest existing part.
    """
    node = root
    line = None if node is None else node.start_mark.line + 1
    for index, key in _PATH_PART.findall(path):
        if isinstance(node, yaml.SequenceNode) and index and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode) and key:
            found = [(k, v) for k, v in node.value if getattr(k, "value", None) == key]
            if not found:
                break
            line = found[0][0].start_mark.line + 1
            node = found[0][1]
        else:
            break
    return line


def describe_errors(
    doc: Document | None, fields: Mapping[str, str], limit: int = MAX_ERRORS
) -> str:
    """Field errors on one line, each with its line in `doc` when it can be found."""
    root: yaml.Node | None = None
    if doc is not None:
        try:
            root = yaml.compose(doc.text, Loader=_Loader)
        except yaml.YAMLError:
            root = None  # JSON that YAML 1.1 does not read: no line numbers then
    located = [
        (_locate(root, path) if root is not None and path != "<file>" else None, path, message)
        for path, message in fields.items()
    ]
    # In file order: the way the reader will fix them.
    located.sort(key=lambda found: found[0] if found[0] is not None else 1 << 62)
    parts = [
        f"{path} (line {line}): {message}" if line else f"{path}: {message}"
        for line, path, message in located[:limit]
    ]
    more = len(fields) - limit
    return "; ".join(parts) + (f"; ... and {more} more" if more > 0 else "")


def invalid_file(doc: Document, fields: Mapping[str, str]) -> CliError:
    """The error for a file that does not validate: nothing was written."""
    return CliError(f"{doc.name} is invalid, nothing was written: {describe_errors(doc, fields)}")


# -- validation -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wanted:
    """The items a config file names, by kind and id, with the field path of each."""

    items: dict[str, dict[str, Item]]
    paths: dict[tuple[str, str], str]  # (kind, id) -> "routes[3]"


def _item_errors(kind: str, index: int, raw: Any, errors: dict[str, str]) -> Item | None:
    try:
        return from_dict(kind, raw)
    except ValidationError as exc:
        where = f"{kind}[{index}]"
        for path, message in exc.fields.items():
            errors[where if path == "<root>" else f"{where}.{path}"] = message
        return None


def check_document(doc: Document) -> Wanted:
    """Validate every item of a whole-config file: each on its own, and duplicate ids.

    References between items are checked by `check_references`, against the config the file
    will produce (which, without --prune, also holds the stored items it does not name).
    Raises CliError naming each bad field and its line.
    """
    data = doc.data
    if not isinstance(data, Mapping):
        raise invalid_file(
            doc, {"<file>": f"the top level must be a mapping with {', '.join(DISPLAY_KINDS)}"}
        )
    errors: dict[str, str] = {}
    for key in data:
        if key not in KINDS:
            errors[str(key)] = f"unknown section; expected one of {', '.join(DISPLAY_KINDS)}"
    sections: list[tuple[str, list[Any]]] = []
    for kind in DISPLAY_KINDS:
        raw = data.get(kind)
        if raw is None:
            continue
        if not isinstance(raw, list):
            errors[kind] = f"expected a list of {kind}, got {type(raw).__name__}"
            continue
        sections.append((kind, raw))
    wanted = Wanted({kind: {} for kind in KINDS}, {})
    todo = [(kind, i, raw) for kind, section in sections for i, raw in enumerate(section)]
    for kind, i, raw in _with_progress(todo, "validating"):
        item = _item_errors(kind, i, raw, errors)
        if item is None:
            continue
        where = f"{kind}[{i}]"
        first = wanted.paths.get((kind, item.id))
        if first is not None:
            errors[f"{where}.id"] = f"duplicate id {item.id!r} (also {first})"
            continue
        wanted.items[kind][item.id] = item
        wanted.paths[(kind, item.id)] = where
    if errors:
        raise invalid_file(doc, errors)
    return wanted


def stderr_is_tty() -> bool:
    """Whether a progress bar can be drawn (tests replace this)."""
    return sys.stderr.isatty()


def _with_progress(items: Sequence[_T], label: str) -> Iterator[_T]:
    """Iterate over `items`, with a progress bar on stderr for many items on a terminal."""
    if len(items) < PROGRESS_THRESHOLD or not stderr_is_tty():
        yield from items
        return
    with click.progressbar(items, label=label, file=sys.stderr) as bar:
        yield from bar


def check_references(doc: Document, wanted: Wanted, final_upstreams: set[str]) -> None:
    """Every route and listener the file names must use an upstream the result will have."""
    errors: dict[str, str] = {}
    for kind in ("routes", "listeners"):
        for item_id, item in wanted.items[kind].items():
            upstream = getattr(item, "upstream", None)
            if upstream is not None and upstream not in final_upstreams:
                path = wanted.paths.get((kind, item_id), f"{kind}/{item_id}")
                errors[f"{path}.upstream"] = f"unknown upstream {upstream!r}"
    if errors:
        raise invalid_file(doc, errors)


# -- diff -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemChange:
    """One item added, changed or removed; before/after in the JSON shape."""

    kind: str
    id: str
    action: Action
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    item: Item | None = None  # the item to put (add, change)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON form printed by ``--json``."""
        return {
            "kind": self.kind,
            "id": self.id,
            "action": self.action,
            "before": self.before,
            "after": self.after,
        }


def diff_config(
    current: Config,
    invalid: Mapping[str, str],
    wanted: Mapping[str, Mapping[str, Item]],
    *,
    prune: bool,
) -> list[ItemChange]:
    """What makes `current` into `wanted`: every item of `wanted` put (unless equal), and with
    `prune` every other stored item (invalid ones too) removed. Ordered by kind, then id."""
    changes: list[ItemChange] = []
    for kind in DISPLAY_KINDS:
        stored: dict[str, Item] = {item.id: item for item in getattr(current, kind)}
        target = wanted.get(kind, {})
        for item_id in sorted(set(stored) | set(target)):
            old, new = stored.get(item_id), target.get(item_id)
            if new is not None and old is None:
                changes.append(ItemChange(kind, item_id, "add", None, to_dict(new), new))
            elif new is not None and old is not None and new != old:
                changes.append(ItemChange(kind, item_id, "change", to_dict(old), to_dict(new), new))
            elif new is None and old is not None and prune:
                changes.append(ItemChange(kind, item_id, "remove", to_dict(old), None))
        if prune:
            for key, why in sorted(invalid.items()):
                k, _, item_id = key.partition("/")
                if k == kind and item_id not in target and item_id not in stored:
                    changes.append(
                        ItemChange(kind, item_id, "remove", None, None, note=f"invalid: {why}")
                    )
    return changes


def store_changes(diff: Sequence[ItemChange]) -> list[Change]:
    """The store changes of a diff, in an order a reader of the history finds natural:
    upstreams put first, then their users; users removed before the upstreams they used."""
    puts = [Change.put(c.item) for c in diff if c.item is not None]
    users = [c for c in diff if c.action == "remove" and c.kind != "upstreams"]
    upstreams = [c for c in diff if c.action == "remove" and c.kind == "upstreams"]
    return puts + [Change.delete(c.kind, c.id) for c in [*users, *upstreams]]


def summary(diff: Sequence[ItemChange]) -> str:
    """``2 to add, 1 to change, 0 to remove``."""
    counts = {
        action: sum(c.action == action for c in diff) for action in ("add", "change", "remove")
    }
    return f"{counts['add']} to add, {counts['change']} to change, {counts['remove']} to remove"


_MISSING: Any = object()


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted paths (``timeouts.connect``); lists stay whole values."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, path + "."))
        else:
            out[path] = item
    return out


def show_value(value: Any, width: int = 72) -> str:
    """A value as compact JSON, cut to `width` characters (PEM blocks, long lists)."""
    if value is _MISSING:
        return "(default)"
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= width else text[: width - 3] + "..."


def field_lines(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
    """``field: old -> new`` for each field that differs (a field left out has its default)."""
    old, new = flatten(before or {}), flatten(after or {})
    lines = []
    for path in [*old, *(p for p in new if p not in old)]:
        if before is None and path == "id":
            continue  # the label already says which item
        a, b = old.get(path, _MISSING), new.get(path, _MISSING)
        if a == b:
            continue
        if before is None:
            lines.append(f"{path}: {show_value(b)}")
        else:
            lines.append(f"{path}: {show_value(a)} -> {show_value(b)}")
    return lines


_MARKS: dict[str, tuple[str, str]] = {
    "add": ("+", "green"),
    "change": ("~", "yellow"),
    "remove": ("-", "red"),
}


def render_change(
    label: str, change: ItemChange, *, indent: str = "  ", details: bool
) -> Iterator[str]:
    """The lines that show one change: a coloured mark and label, then changed fields."""
    mark, colour = _MARKS[change.action]
    note = f"  ({change.note})" if change.note else ""
    yield indent + click.style(f"{mark} {label}", fg=colour) + note
    if change.action == "change" or (details and change.action == "add"):
        for line in field_lines(change.before, change.after):
            yield f"{indent}    {line}"


def render_diff(diff: Sequence[ItemChange]) -> Iterator[str]:
    """A diff grouped by kind: additions and removals by id, changes field by field."""
    for kind in DISPLAY_KINDS:
        of_kind = [c for c in diff if c.kind == kind]
        if of_kind:
            yield click.style(f"{kind}:", bold=True)
            for change in of_kind:
                yield from render_change(change.id, change, details=False)
