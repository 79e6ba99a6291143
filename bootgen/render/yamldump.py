"""YAML for rendered files: PyYAML's safe dumper on libyaml's emitter, with a fast
way from plain data to the node graph.

PyYAML's representer looks up a function per value's type, keeps alias
bookkeeping for every container, and the serializer asks the resolver twice
per scalar which tag a plain or quoted spelling would read back as. For the
data bootgen renders (dicts, lists, strings, ints, booleans, None) that was
most of the time a Tinkerbell export took. `Dumper` builds the same node
graph directly and remembers the resolver's answers; anything else (another
type, or one container appearing twice, which PyYAML writes as an alias)
goes PyYAML's own way. Either way the text is byte for byte SafeDumper's
(tests/render/test_yamldump.py compares them).
"""
from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

_BASE = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's emitter is ~10x faster
_STR, _INT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "bool", "null"))
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_RESOLVED_MAX = 65536  # cached resolver answers; values are per node, so the cache is bounded


class _Slow(Exception):
    """The data needs PyYAML's own representer."""


class Dumper(_BASE):
    """SafeDumper, faster. `block_strings`: multi-line strings as `|` blocks."""

    block_strings = False
    _resolved: dict = {}  # (value, implicit) -> tag; the safe resolvers are the same for every subclass

    def represent(self, data) -> None:
        try:
            node = self._node(data, set())
        except _Slow:
            return super().represent(data)
        self.serialize(node)

    def resolve(self, kind, value, implicit):
        if kind is not ScalarNode:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = self._resolved.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(self._resolved) >= _RESOLVED_MAX:
                self._resolved.clear()
            self._resolved[key] = tag
        return tag

    def _str_style(self, value: str):
        if self.block_strings and "\n" in value:
            return "|"
        return self.default_style

    def _node(self, data, containers: set):
        kind = type(data)
        if kind is str:
            return ScalarNode(_STR, data, style=self._str_style(data))
        if kind is dict or kind is list:
            if id(data) in containers or self.default_flow_style is None:
                raise _Slow  # an alias, or a flow style chosen per container
            containers.add(id(data))
            if kind is list:
                return SequenceNode(_SEQ, [self._node(item, containers) for item in data],
                                    flow_style=self.default_flow_style)
            items = list(data.items())
            if self.sort_keys:
                try:
                    items = sorted(items)
                except TypeError:
                    pass
            return MappingNode(_MAP, [(self._node(k, containers), self._node(v, containers)) for k, v in items],
                               flow_style=self.default_flow_style)
        if kind is bool:
            return ScalarNode(_BOOL, "true" if data else "false", style=self.default_style)
        if kind is int:
            return ScalarNode(_INT, str(data), style=self.default_style)
        if data is None:
            return ScalarNode(_NULL, "null", style=self.default_style)
        raise _Slow


def _represent_str(dumper: Dumper, value: str):
    return dumper.represent_scalar(_STR, value, style=dumper._str_style(value))


Dumper.add_representer(str, _represent_str)  # the slow way writes strings the same way


class BlockDumper(Dumper):
    """Multi-line strings (a Tinkerbell Template's workflow, say) as readable `|` blocks."""

    block_strings = True
