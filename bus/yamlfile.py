"""Safe YAML loading that remembers where every value came from.

Integrators' files are loaded with a ``SafeLoader`` subclass: no object-constructing tags, duplicate keys
rejected, and every mapping and sequence remembers the line and column of each of its entries, so an error
found later (by the JSON Schema, or by lint) can still point at ``file:line:column``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bus.errors import ConfigError, Location

__all__ = ["YamlList", "YamlMap", "load_yaml", "load_yaml_text", "locate", "plain"]


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


def _make_loader(file: str) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

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


def load_yaml(path: str | Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a :class:`ConfigError`."""
    p = Path(path)
    try:
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
