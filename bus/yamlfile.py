"""Safe YAML loading that remembers where every value came from.

Integrators' files are loaded with a ``SafeLoader`` subclass: no object-constructing tags, duplicate keys
rejected, and every mapping and sequence remembers the line and column of each of its entries, so an error
found later (by the JSON Schema, or by lint) can still point at ``file:line:column``.

Every document is bounded before it is built (:mod:`bus.limits`): its size, its nesting depth and the number
of nodes it expands to once aliases are followed, so a few hundred bytes of nested aliases ("billion
laughs") fail at once with one line naming the file instead of growing the process to gigabytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from bus.errors import ConfigError, Location
from bus.limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_YAML_NODES, depth_exceeds

__all__ = ["YamlList", "YamlMap", "load_json_text", "load_yaml", "load_yaml_text", "locate", "plain"]


class YamlMap(dict[str, Any]):
    """A dict that knows the location of itself and of each key."""

    location: Location
    key_locations: dict[str, Location]


class YamlList(list[Any]):
    """A list that knows the location of itself and of each item."""

    location: Location
    item_locations: list[Location]


def _loc(file: str, mark: yaml.Mark) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_graph(root: yaml.Node, file: str) -> None:
    """Refuse a composed document that nests too deep, refers to itself, or expands to too many nodes.

    Aliases make the node graph a DAG whose expansion can be exponential in its size; the expanded count is
    computed per distinct node (memoised), so the check costs one pass over what was actually written.
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, level, done = stack.pop()
        ident = id(node)
        if done:
            on_path.discard(ident)
            size[ident] = 1 + sum(size[id(c)] for c in _children(node))
            if size[ident] > MAX_YAML_NODES:
                raise ConfigError(f"document expands to more than {MAX_YAML_NODES} values (aliases nested "
                                  f"within aliases?)", _loc(file, node.start_mark))
            continue
        if ident in size:
            continue
        if ident in on_path:
            raise ConfigError("an alias refers to a value that contains it (recursive YAML)",
                              _loc(file, node.start_mark))
        if level > MAX_DEPTH:
            raise ConfigError(f"document nested deeper than {MAX_DEPTH} levels", _loc(file, node.start_mark))
        on_path.add(ident)
        stack.append((node, level, True))
        stack.extend((child, level + 1, False) for child in _children(node) if id(child) not in size)


def _make_loader(file: str) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        def construct_document(self, node: yaml.Node) -> Any:
            _check_graph(node, file)
            return super().construct_document(node)

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> YamlMap:
        # Keys written in this mapping itself, as opposed to keys brought in by a '<<' merge: YAML lets an
        # explicit key override a merged one, so only a clash between two written keys is a duplicate.
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        loader.flatten_mapping(node)
        out = YamlMap()
        out.location = _loc(file, node.start_mark)
        out.key_locations = {}
        written: set[str] = set()
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise ConfigError("mapping keys must be plain scalars", _loc(file, key_node.start_mark))
            key = str(key) if not isinstance(key, str) else key
            if id(key_node) in own:
                if key in written:
                    first = out.key_locations[key]
                    raise ConfigError(f"duplicate key {key!r} (first defined at line {first.line})",
                                      _loc(file, key_node.start_mark))
                written.add(key)
            out[key] = loader.construct_object(value_node, deep=True)
            out.key_locations[key] = _loc(file, key_node.start_mark)
        return out

    def construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> YamlList:
        out = YamlList(loader.construct_object(child, deep=True) for child in node.value)
        out.location = _loc(file, node.start_mark)
        out.item_locations = [_loc(file, child.start_mark) for child in node.value]
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    return Loader


def load_yaml_text(text: str, file: str = "<string>") -> Any:
    """Parse YAML text safely; raises :class:`ConfigError` with the location of a syntax error."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"file is larger than {MAX_FILE_BYTES} bytes", Location(file))
    try:
        return yaml.load(text, Loader=_make_loader(file))  # noqa: S506 - the loader is a SafeLoader subclass
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _loc(file, mark) if mark else Location(file)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", Location(file)) from None
    except RecursionError:  # the composer recurses per level: a deep enough document stops it first
        raise ConfigError(f"invalid YAML: nested deeper than {MAX_DEPTH} levels", Location(file)) from None


def load_json_text(text: str | bytes, file: str = "<string>") -> Any:
    """Parse JSON bounded like YAML (size and depth); errors are one :class:`ConfigError` naming the position."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"file is larger than {MAX_FILE_BYTES} bytes", Location(file))
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
        line = raw.count("\n", 0, exc.pos) + 1
        col = exc.pos - (raw.rfind("\n", 0, exc.pos) + 1) + 1
        message = "nested too deeply" if "depth" in exc.msg else exc.msg
        raise ConfigError(f"invalid JSON: {message}", Location(file, line, col)) from None
    if depth_exceeds(doc, MAX_DEPTH):
        raise ConfigError(f"invalid JSON: nested deeper than {MAX_DEPTH} levels", Location(file))
    return doc


def load_yaml(path: str | Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a :class:`ConfigError`."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_FILE_BYTES:  # before reading it into memory
            raise ConfigError(f"file is larger than {MAX_FILE_BYTES} bytes", Location(str(path)))
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", Location(str(path))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", Location(str(path))) from None
    return load_yaml_text(text, str(path))


def locate(root: Any, path: list[str | int] | tuple[str | int, ...],
           default: Location | None = None) -> Location | None:
    """The location of the value at ``path`` inside a loaded document (the deepest one known)."""
    best = getattr(root, "location", default)
    node = root
    for part in path:
        if isinstance(node, YamlMap) and isinstance(part, str) and part in node:
            best = node.key_locations.get(part, best)
            node = node[part]
        elif isinstance(node, YamlList) and isinstance(part, int) and 0 <= part < len(node):
            best = node.item_locations[part]
            node = node[part]
        else:
            break
    return best


def plain(value: Any) -> Any:
    """Plain dicts and lists (not the located YAML kinds, keys as strings), so values serialise and copy like
    JSON."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
