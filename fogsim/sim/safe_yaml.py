"""Reading a YAML file into plain data, safely and with one-line errors, and naming key paths.

PyYAML's safe loader executes nothing, but it bounds nothing either: a file can be endless
(``/dev/zero``), a few lines of aliases can stand for billions of values, deep nesting exhausts
Python's stack, and a repeated key silently wins. ``read_yaml`` therefore reads at most
``MAX_FILE_BYTES`` of a regular file, decodes it as strict UTF-8, and parses it with a loader
that refuses duplicate keys, nesting deeper than ``MAX_DEPTH`` and more than ``MAX_VALUES``
values, an alias counting every value it stands for each time it is used. Every refusal is a
one-line FogsimError naming the file and the line, never quoting the file's content.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from fogsim.errors import FogsimError, brief, shown, shown_path
from fogsim.units import format_bytes

MAX_FILE_BYTES = 1024 * 1024  # a scenario or profile file is a few kilobytes; 1 MiB is far beyond any real one
MAX_VALUES = 50_000           # values in a document, aliases expanded; a big scenario has a few hundred
MAX_DEPTH = 50                # nesting levels, aliases expanded; a scenario needs five
MAX_NUMBER_CHARS = 4300       # Python's own limit on the digits of an int read from text

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"))


class Refused(yaml.YAMLError):
    """YAML that parses but that fogsim will not load: a limit is exceeded or a key is repeated."""

    def __init__(self, problem: str, mark, hint: str = ""):
        super().__init__(problem)
        self.problem, self.mark, self.hint = problem, mark, hint


class _Loader(yaml.SafeLoader):
    """The safe loader, bounded: duplicate keys, deep nesting and alias expansion are refused."""

    def __init__(self, stream):
        super().__init__(stream)
        self._values = 0    # values composed so far, an alias counting all the values it stands for
        self._depth = 0     # nesting level of the value being composed
        self._deepest = 0   # deepest level reached inside the value being composed
        self._anchored: dict[str, tuple[int, int]] = {}  # anchor -> (values, height) of its finished value

    def _count(self, values: int, mark) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise Refused(f"more than {MAX_VALUES} values (an alias counts every value it stands for, each time "
                          "it is used)", mark, "write a smaller file or use fewer aliases")

    def _reach(self, level: int, mark) -> None:
        if level > MAX_DEPTH:
            raise Refused(f"nested deeper than {MAX_DEPTH} levels (aliases expanded)", mark, "flatten the file")
        self._deepest = max(self._deepest, level)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.anchors:
                if event.anchor not in self._anchored:
                    raise Refused(f"alias *{brief(event.anchor)} is used inside the value it names",
                                  event.start_mark, "write that part out")
                values, height = self._anchored[event.anchor]
                self._count(values, event.start_mark)
                self._reach(self._depth + height, event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        outer, self._deepest = self._deepest, 0
        self._reach(self._depth, event.start_mark)
        self._count(1, event.start_mark)
        before = self._values
        node = super().compose_node(parent, index)
        if event.anchor is not None:
            self._anchored[event.anchor] = (self._values - before + 1, self._deepest - self._depth + 1)
        self._deepest = max(outer, self._deepest)
        self._depth -= 1
        return node

    def compose_mapping_node(self, anchor):
        # Checked here, on the keys as written: the constructor later merges ``<<`` keys into mappings.
        node = super().compose_mapping_node(anchor)
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in first:
                raise Refused(f"key {shown(key)} appears twice, at lines {first[key]} and {line}", None, "keep one")
            first[key] = line
        return node

    def _scalar(self, construct, node):
        """A number, boolean or date, refused in one line when it cannot be one (``!!int abc``, ``2001-13-45``)."""
        kind = node.tag.rpartition(":")[2]
        if isinstance(node.value, str) and len(node.value) > MAX_NUMBER_CHARS:
            raise Refused(f"a value written with more than {MAX_NUMBER_CHARS} characters", node.start_mark)
        try:
            return construct(self, node)
        except (ValueError, KeyError, IndexError, AttributeError, OverflowError):
            raise Refused(f"a value that is not a valid {kind}", node.start_mark,
                          "quote it to keep it as text") from None


for _tag, _construct in (("int", yaml.SafeLoader.construct_yaml_int), ("float", yaml.SafeLoader.construct_yaml_float),
                         ("bool", yaml.SafeLoader.construct_yaml_bool),
                         ("timestamp", yaml.SafeLoader.construct_yaml_timestamp)):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}",
                            lambda loader, node, construct=_construct: loader._scalar(construct, node))


def parse_yaml(text: str) -> Any:
    """Parse ``text`` with the bounded loader; raises ``Refused`` or PyYAML's own errors."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_problem(error: yaml.YAMLError, text: str = "") -> str:
    """A YAML error as ``what is wrong at line N``, in one line, quoting nothing longer than a token."""
    if isinstance(error, Refused):
        where = f" at line {error.mark.line + 1}" if error.mark else ""
        return f"{error.problem}{where}; {error.hint}" if error.hint else f"{error.problem}{where}"
    if isinstance(error, yaml.reader.ReaderError):
        line = text.count("\n", 0, error.position) + 1
        character = error.character if isinstance(error.character, int) else 0
        return f"not a text file: character U+{character:04X} at line {line} is not allowed in YAML"
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = ", ".join(filter(None, (error.context, error.problem))) or "syntax error"
        problem = re.sub(r" ?'([^']*)'", _token, problem)
        return f"invalid YAML{where}: {brief(problem, 160)}"
    return "invalid YAML"


def _token(quoted: re.Match) -> str:
    """What PyYAML quotes from the file: one character is shown, longer text (a tag, an alias) is not;
    its own token names (``'<scalar>'``) are kept."""
    text = quoted.group(1)
    if len(text) == 1 or re.fullmatch(r"<[a-z ]+>|\\(?:[a-z0]|x[0-9a-f]{2}|u[0-9a-f]{4})", text):  # '\t'
        return f"{quoted.group(0)[:-len(text) - 2]}'{brief(text)}'"
    return ""


def read_text(path: Path, what: str, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes; anything else is a FogsimError.

    The file is opened without blocking and checked before it is read, so a pipe, a device or a
    directory is refused by name instead of hanging or filling memory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise FogsimError(f"cannot read {what} {shown_path(path)}: {error.strerror or error}") from None
    except ValueError:  # a NUL character in the path
        raise FogsimError(f"cannot read {what} {shown_path(path)}: a path cannot contain a NUL character") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise FogsimError(f"{shown_path(path)}: {kind}, not a regular file; give the path of a YAML {what}")
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(limit + 1)
        except OSError as error:
            raise FogsimError(f"cannot read {what} {shown_path(path)}: {error.strerror or error}") from None
    if len(data) > limit:
        raise FogsimError(f"{shown_path(path)}: larger than {format_bytes(limit)}, the most a {what} may hold; "
                          "is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise FogsimError(f"{shown_path(path)}: not UTF-8 text (undecodable byte at line {line}); save the {what} as "
                          "UTF-8") from None


def read_yaml(path: Path, what: str) -> Any:
    """Read and parse ``path`` (see the module's docstring); any problem is a one-line FogsimError."""
    text = read_text(path, what)
    try:
        return parse_yaml(text)
    except yaml.YAMLError as error:
        raise FogsimError(f"{shown_path(path)}: {yaml_problem(error, text)}") from None
