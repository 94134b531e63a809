"""Microsoft Graph's published metadata, as far as monitor uses it: what a request may name and what a
response may contain, per API version.

The data is `graph_metadata.json`, derived by `scripts/graph_metadata.py` from Microsoft's v1.0 CSDL
(https://github.com/microsoftgraph/msgraph-metadata) and from the generated beta SDK
(https://pypi.org/project/msgraph-beta-sdk/); its header says which files, and when. It keeps the
entity sets and singletons monitor calls, the types on the navigation paths it follows (with base and
derived types, and the complex types they use) and the functions and actions bound to them.

Two users: the simulator answers a request that names something the metadata lacks with Graph's `400`
(https://learn.microsoft.com/en-us/graph/errors) and sends only properties the type has; the
request-conformance test checks every request the product made. Names are matched without regard to
case, as Graph does for paths and query options.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

NAMESPACE = "microsoft.graph"
COLLECTION = "C:"
STREAM = "Edm.Stream"
DIRECTORY_OBJECT = f"{NAMESPACE}.directoryObject"
VERSIONS = ("v1.0", "beta")
ProblemKind = Literal["segment", "property", "parameter", "uncovered", "response"]


@dataclass(frozen=True)
class Problem:
    """What Graph would refuse (`segment`, `property`, `parameter`: a 400 with `message`), what the
    artifact does not cover (`uncovered`: regenerate it), or a response property the type lacks."""

    kind: ProblemKind
    message: str


class MetadataError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass
class TypeInfo:
    """A type with what it inherits: property name (lower case) -> (name, complex type or None)."""

    name: str
    entity: bool
    lineage: tuple[str, ...]  # itself, then its base types
    properties: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    navigation: dict[str, tuple[str, str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    name: str
    kind: str
    parameters: tuple[str, ...]
    returns: str | None


@dataclass(frozen=True)
class Target:
    """What a path addresses: a type (a collection of it, or one), maybe through a bound operation."""

    type_name: str | None
    collection: bool = False
    operation: Operation | None = None
    terminal: bool = False  # a property, $count, $ref, $value: nothing may follow, no query applies


def _full(ref: str | None) -> str | None:
    """The artifact leaves `microsoft.graph.` out of names in that namespace."""
    if ref is None or ref.startswith("Edm."):
        return ref
    prefix = COLLECTION if ref.startswith(COLLECTION) else ""
    name = ref.removeprefix(COLLECTION)
    return prefix + (name if "." in name else f"{NAMESPACE}.{name}")


def _split(ref: str) -> tuple[str, bool]:
    return ref.removeprefix(COLLECTION), ref.startswith(COLLECTION)


class VersionMetadata:
    """One API version: resolve paths, check query options and bodies, conform responses."""

    def __init__(self, version: str, data: Mapping[str, Any]) -> None:
        self.version = version
        self.roots = {name.lower(): str(_full(ref)) for name, ref in data["roots"].items()}
        self._raw = {str(_full(name)): entry for name, entry in data["types"].items()}
        self._lower = {name.lower(): name for name in self._raw}
        self.operations: dict[str, dict[str, Operation]] = {}
        for binding, ops in data["operations"].items():
            self.operations[str(_full(binding))] = {
                name.lower(): Operation(name, op["kind"], tuple(op["parameters"]), _full(op["returns"]))
                for name, op in ops.items()
            }
        self.derived: dict[str, set[str]] = {}
        for name, entry in self._raw.items():
            if entry.get("base"):
                self.derived.setdefault(str(_full(entry["base"])), set()).add(name)
        # What conforming an object of a given shape does at its own level (`_shape_plan`), per shape.
        self.plans: dict[Shape, Plan | None] = {}

    def known(self, type_name: str) -> bool:
        return type_name in self._raw

    def find_type(self, name: str) -> str | None:
        """A type by its (qualified, any case) name, without a leading `#`."""
        return self._lower.get(name.lstrip("#").lower())

    @functools.cache  # noqa: B019 - one instance per version for the life of the process
    def type(self, name: str) -> TypeInfo:
        lineage: list[str] = []
        current: str | None = name
        while current is not None and current in self._raw:
            lineage.append(current)
            current = _full(self._raw[current].get("base"))
        info = TypeInfo(name, bool(self._raw[name]["entity"]), tuple(lineage))
        for member in reversed(lineage):
            entry = self._raw[member]
            for prop in entry.get("properties", ()):
                info.properties[prop.lower()] = (prop, None)
            for prop, ref in entry.get("complex", {}).items():
                info.properties[prop.lower()] = (prop, _full(ref))
            for nav, ref in entry.get("navigation", {}).items():
                info.navigation[nav.lower()] = (nav, _full(ref))
        return info

    def is_a(self, name: str, ancestor: str) -> bool:
        return ancestor in self.type(name).lineage

    def operation(self, type_name: str, collection: bool, segment: str) -> Operation | None:
        """A function or action bound to the type (or a base type), or to a collection of it."""
        name = segment.split("(", 1)[0].lower().removeprefix(f"{NAMESPACE.lower()}.")
        for member in self.type(type_name).lineage:
            binding = (COLLECTION if collection else "") + member
            found = self.operations.get(binding, {}).get(name)
            if found is not None:
                return found
        return None

    # -- paths -----------------------------------------------------------------------------------

    def resolve(self, segments: list[str]) -> Target:
        """What `/<version>/<segments>` addresses; raises MetadataError as Graph would refuse it."""
        if not segments or segments[0].split("(", 1)[0].lower() not in self.roots:
            raise MetadataError(_segment(segments[0] if segments else ""))
        head, key = _key_of(segments[0])
        type_name, collection = _split(self.roots[head.lower()])
        target = Target(type_name, collection)
        if key is not None:
            target = self._key(target, segments[0])
        for segment in segments[1:]:
            target = self._step(target, segment)
        return target

    def _step(self, target: Target, segment: str) -> Target:
        if target.terminal or target.operation is not None or target.type_name is None:
            raise MetadataError(_segment(segment))
        if segment in ("$count", "$ref", "$value"):
            return Target(target.type_name, target.collection, terminal=True)
        cast = self._cast(target, segment)
        if cast is not None:
            return cast
        operation = self.operation(target.type_name, target.collection, segment)
        if operation is not None:
            return self._after_operation(operation)
        if target.collection:
            return self._key(target, segment)
        name, key = _key_of(segment)
        member = self._member(target.type_name, name)
        return self._key(member, segment) if key is not None else member

    def _key(self, target: Target, segment: str) -> Target:
        if not target.collection:
            raise MetadataError(_segment(segment))
        return Target(target.type_name)

    def _cast(self, target: Target, segment: str) -> Target | None:
        if not segment.lower().startswith(f"{NAMESPACE.lower()}."):
            return None
        found = self.find_type(segment)
        if found is None or target.type_name is None:
            return None
        if not self.is_a(found, target.type_name):
            raise MetadataError(_segment(segment))
        return Target(found, target.collection)

    def _after_operation(self, operation: Operation) -> Target:
        if operation.returns is None or operation.returns == STREAM or operation.returns.startswith("Edm."):
            return Target(None, operation=operation)
        name, collection = _split(operation.returns)
        return Target(name if self.known(name) else None, collection, operation)

    def _member(self, type_name: str, segment: str) -> Target:
        info = self.type(type_name)
        name = segment.lower()
        if name in info.navigation:
            nav, ref = info.navigation[name]
            if ref is None:
                raise MetadataError(_uncovered(self.version, type_name, nav))
            target_name, collection = _split(ref)
            return Target(target_name, collection)
        if name in info.properties:
            return Target(None, terminal=True)
        raise MetadataError(_segment(segment))

    # -- query options and bodies --------------------------------------------------------------------

    def check_query(self, target: Target, query: Mapping[str, str]) -> Iterator[Problem]:
        type_name = target.type_name
        for option, value in query.items():
            lowered = option.lower()
            if lowered not in ("$select", "$expand", "$filter", "$orderby") or not value:
                continue
            if type_name is None:
                yield Problem("segment", f"The query specified in the URI is not valid. {option} is not allowed here.")
                continue
            if lowered == "$select":
                yield from self.check_select(type_name, value)
            elif lowered == "$expand":
                yield from self.check_expand(type_name, value)
            elif lowered == "$orderby":
                # Each item is a property path, then an optional direction (`activityDateTime asc`).
                for item in _top_level(value):
                    yield from self.check_filter(type_name, item.split()[0] if item.split() else item)
            else:
                yield from self.check_filter(type_name, value)

    def check_select(self, type_name: str, value: str) -> Iterator[Problem]:
        for item in _top_level(value):
            path = item.split("(", 1)[0].strip()
            if path and path != "*":
                yield from self._check_path(type_name, path.split("/"), allow_navigation=True)

    def check_expand(self, type_name: str, value: str) -> Iterator[Problem]:
        for item in _top_level(value):
            path = item.split("(", 1)[0].strip()
            if not path or path == "*":
                continue
            parts = path.split("/")
            owner = type_name
            if len(parts) > 1 and parts[0].lower().startswith(f"{NAMESPACE.lower()}."):
                cast = self.find_type(parts[0])
                if cast is None or not self.is_a(cast, type_name):
                    yield _property(parts[0], type_name)
                    continue
                owner, parts = cast, parts[1:]
            info = self.type(owner)
            if parts[0].lower() not in info.navigation:
                yield _property(parts[0], owner)

    def check_filter(self, type_name: str, value: str) -> Iterator[Problem]:
        for path in filter_paths(value):
            yield from self._check_path(type_name, path, allow_navigation=True)

    def _check_path(self, type_name: str, parts: list[str], *, allow_navigation: bool) -> Iterator[Problem]:
        """`prop`, `complexProp/sub`, `microsoft.graph.derived/prop`, `nav/prop` against `type_name`."""
        owner: str | None = type_name
        for position, part in enumerate(parts):
            if owner is None:
                return
            if part.lower().startswith(f"{NAMESPACE.lower()}."):
                cast = self.find_type(part)
                if cast is None or not self.is_a(cast, owner):
                    yield _property(part, owner)
                    return
                owner = cast
                continue
            info = self.type(owner)
            name = part.lower()
            if name not in info.properties and name not in info.navigation and owner == DIRECTORY_OBJECT:
                info = self._directory_object_union()
            if name in info.properties:
                ref = info.properties[name][1]
                owner = _split(ref)[0] if ref is not None else None
            elif name in info.navigation and (allow_navigation or position < len(parts) - 1):
                ref = info.navigation[name][1]
                owner = _split(ref)[0] if ref is not None else None
            else:
                yield _property(part, owner)
                return

    @functools.cache  # noqa: B019 - one instance per version for the life of the process
    def _directory_object_union(self) -> TypeInfo:
        """directoryObject with the properties of all its derived types. The directory accepts them on a
        collection of directoryObjects: Graph's own description of `group.members` gives
        `$expand=members($select=id,userPrincipalName,displayName)` as an example (v1.0 metadata)."""
        union = TypeInfo(DIRECTORY_OBJECT, True, (DIRECTORY_OBJECT,))
        for name in (DIRECTORY_OBJECT, *sorted(_descendants_of(self.derived, DIRECTORY_OBJECT))):
            info = self.type(name)
            union.properties = {**info.properties, **union.properties}
            union.navigation = {**info.navigation, **union.navigation}
        return union

    def check_body(self, method: str, target: Target, body: Any) -> Iterator[Problem]:
        """An action's parameters, or the properties of an entity being created or updated."""
        if not isinstance(body, dict):
            return
        if target.operation is not None:
            allowed = {p.lower() for p in target.operation.parameters}
            for name in body:
                if name.lower() not in allowed:
                    yield Problem(
                        "parameter",
                        f"The parameter '{name}' in the request payload is not a valid parameter for the "
                        f"operation '{target.operation.name}'.",
                    )
        elif method.upper() in ("POST", "PATCH") and target.type_name is not None:
            info = self.type(target.type_name)
            for name in body:
                base = name.split("@", 1)[0].lower()
                if name.startswith("@") or base in info.properties or base in info.navigation:
                    continue
                yield Problem(
                    "property",
                    f"The property '{name}' does not exist on type '{target.type_name}'. Make sure to only use "
                    "property names that are defined by the type or mark the type as open type.",
                )

    # -- responses ------------------------------------------------------------------------------------

    def response_type(self, target: Target) -> tuple[str, bool] | None:
        if target.terminal or target.type_name is None:
            return None
        return target.type_name, target.collection


def _descendants_of(derived: Mapping[str, set[str]], name: str) -> set[str]:
    found: set[str] = set()
    stack = list(derived.get(name, ()))
    while stack:
        current = stack.pop()
        if current not in found:
            found.add(current)
            stack.extend(derived.get(current, ()))
    return found


def _segment(segment: str) -> Problem:
    return Problem("segment", f"Resource not found for the segment '{segment.split('(', 1)[0]}'.")


def _property(name: str, type_name: str) -> Problem:
    return Problem("property", f"Could not find a property named '{name}' on type '{type_name}'.")


def _uncovered(version: str, type_name: str, navigation: str) -> Problem:
    return Problem(
        "uncovered",
        f"{version} {type_name}/{navigation} exists in Graph's metadata but not in graph_metadata.json: add it "
        "to ROOTS in scripts/graph_metadata.py and regenerate",
    )


_KEY = re.compile(r"^([^(]+)\((.*)\)$")


def _key_of(segment: str) -> tuple[str, str | None]:
    """`exportJobs('x')` -> (`exportJobs`, `'x'`); `users` -> (`users`, None)."""
    match = _KEY.match(segment)
    return (match.group(1), match.group(2)) if match else (segment, None)


def _top_level(value: str) -> Iterator[str]:
    """Comma-separated items, commas inside parentheses (`$expand=x($select=a,b)`) kept."""
    depth, start = 0, 0
    for position, char in enumerate(value):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            yield value[start:position].strip()
            start = position + 1
    yield value[start:].strip()


_TOKEN = re.compile(
    r"'(?:[^']|'')*'"  # a string literal
    r"|\d[\w.:+-]*"  # a number, date, time or GUID literal that starts with a digit
    r"|(?P<path>[A-Za-z_][\w.]*(?:/[A-Za-z_][\w.]*)*)(?P<call>\s*\()?(?P<var>\s*:)?"
    r"|[^'A-Za-z_]+"  # numbers, operators, punctuation, GUID and date literals' digits
)
_KEYWORDS = frozenset(
    "eq ne gt ge lt le and or not has in add sub mul div mod true false null inf nan".split()  # noqa: SIM905
)


def filter_paths(value: str) -> Iterator[list[str]]:
    """The property paths a `$filter` names: literals, keywords and function names left out; a lambda's
    variable (`any(m: m/id eq 'x')`) is the collection it ranges over."""
    variables: set[str] = set()
    for match in _TOKEN.finditer(value):
        path = match.group("path")
        if path is None:
            continue
        parts = path.split("/")
        if match.group("var"):
            variables.add(parts[0].lower())
            continue
        if match.group("call"):
            # `prop/any(` ranges over prop; a bare `contains(` is a function.
            if len(parts) > 1 and parts[-1].lower() in ("any", "all"):
                yield parts[:-1]
            continue
        if parts[0].lower() in _KEYWORDS or parts[0].lower() in variables or _literal_like(path):
            continue
        yield parts


def _literal_like(path: str) -> bool:
    """GUIDs and dates appear unquoted in filters (`id eq 00000000-...`, `2024-01-01T00:00:00Z`)."""
    return bool(re.fullmatch(r"[0-9a-fA-F]+|[A-Za-z]?\d\w*", path))


# -- loading and the version of a path ----------------------------------------------------------------


@functools.cache
def metadata() -> dict[str, VersionMetadata]:
    raw = json.loads(resources.files("monitor.simulator").joinpath("graph_metadata.json").read_text())
    return {version: VersionMetadata(version, raw[version]) for version in VERSIONS}


def header() -> dict[str, Any]:
    raw = json.loads(resources.files("monitor.simulator").joinpath("graph_metadata.json").read_text())
    return dict(raw["header"])


def split_path(path: str) -> tuple[str, list[str]] | None:
    """`/v1.0/users/delta` -> ("v1.0", ["users", "delta"]); None for anything that is not Graph."""
    parts = [part for part in path.split("/") if part]
    if not parts or parts[0] not in VERSIONS:
        return None
    return parts[0], parts[1:]


def check_request(method: str, path: str, query: Mapping[str, str], body: Any = None) -> list[Problem]:
    """Everything Graph's metadata says is wrong with one request (the envelope of `$batch` is fine)."""
    split = split_path(path)
    if split is None:
        return [Problem("segment", f"not a Graph path: {path}")]
    version, segments = split
    if segments == ["$batch"]:
        return []
    meta = metadata()[version]
    try:
        target = meta.resolve(segments)
    except MetadataError as exc:
        return [exc.problem]
    return [*meta.check_query(target, query), *meta.check_body(method, target, body)]


# -- responses ----------------------------------------------------------------------------------------


# An object's shape: the type it is conformed as, its `@odata.type` when that is a string, its keys in order.
Shape = tuple[str, str | None, tuple[str, ...]]
# What conforming an object of a shape does when it keeps every key and its `@odata.type`: the keys whose
# values are conformed in turn, in order, each with the type they are conformed as.
Plan = tuple[tuple[str, str], ...]
_PLANS_KEPT = 4096  # shapes remembered per version (a page of one list has a handful)


@dataclass
class Conformed:
    """A response body cut to what the type has in this version; `invented` names what no version has."""

    body: Any
    changed: bool = False
    invented: list[str] = field(default_factory=list)


def conform_response(version: str, target: Target, body: Any) -> Conformed:
    """Drop from `body` every property the addressed type lacks in `version` (Graph's v1.0 answer has no
    beta-only property); a property that neither version has is reported in `invented`."""
    meta = metadata()[version]
    result = Conformed(body)
    shape = meta.response_type(target)
    if shape is None or not isinstance(body, dict):
        return result
    type_name, collection = shape
    items = body.get("value") if collection else [body]
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            _conform_object(meta, type_name, item, result)
    return result


# What JSON has besides objects and arrays; orjson writes a subclass of these as one of them.
_SCALARS = (str, int, float, type(None))


def conforms(version: str, target: Target, body: Any) -> bool:
    """Whether `conform_response` would neither change nor report anything in `body` as JSON (a handler's
    answer, read where it stands instead of parsed again from the bytes it became). False when unsure: a
    value that is not a dict, list, tuple (a list in JSON) or scalar where conforming looks."""
    meta = metadata()[version]
    shape = meta.response_type(target)
    if shape is None:
        return True
    if not isinstance(body, dict):
        return isinstance(body, (list, tuple, *_SCALARS))
    type_name, collection = shape
    items = body.get("value") if collection else [body]
    if not isinstance(items, (list, tuple)):
        return isinstance(items, (dict, *_SCALARS))
    return _values_conform(meta, type_name, items)


def _object_conforms(meta: VersionMetadata, type_name: str, obj: dict[str, Any]) -> bool:
    plan = _plan(meta, type_name, obj)
    return plan is not None and all(_values_conform(meta, nested, obj[key]) for key, nested in plan)


def _values_conform(meta: VersionMetadata, type_name: str, value: Any) -> bool:
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(item, dict):
            if not _object_conforms(meta, type_name, item):
                return False
        elif not isinstance(item, (list, tuple, *_SCALARS)):
            return False
    return True


def _other(meta: VersionMetadata) -> VersionMetadata:
    return metadata()["beta" if meta.version == "v1.0" else "v1.0"]


def _declared(meta: VersionMetadata, type_name: str, obj: dict[str, Any], result: Conformed) -> str:
    """The object's type: its `@odata.type` when this version has it. An object of a type only the other
    version has is shown as its nearest base type this version has: Graph's documentation does not say
    what v1.0 answers for an object of a beta-only type, so the product must not depend on it."""
    raw = obj.get("@odata.type")
    if not isinstance(raw, str):
        return type_name
    found = meta.find_type(raw)
    if found is None:
        other = _other(meta)
        lineage = other.type(other.find_type(raw) or "").lineage if other.find_type(raw) else ()
        found = next((name for name in lineage if meta.known(name)), None)
        if found is not None:
            obj["@odata.type"] = f"#{found}"
            result.changed = True
    if found is None or not meta.is_a(found, type_name):
        result.invented.append(f"@odata.type {raw} is not a {type_name} in {meta.version}")
        return type_name
    return found


def _conform_object(meta: VersionMetadata, type_name: str, obj: dict[str, Any], result: Conformed) -> None:
    """Objects of one shape are conformed alike: a shape that keeps every key and its `@odata.type` (a
    page of one list, nearly always) is looked at once, then only its nested objects are walked."""
    plan = _plan(meta, type_name, obj)
    if plan is None:
        _conform_keys(meta, type_name, obj, result)
        return
    for key, nested in plan:
        _conform_values(meta, nested, obj[key], result)


def _plan(meta: VersionMetadata, type_name: str, obj: dict[str, Any]) -> Plan | None:
    raw = obj.get("@odata.type")
    shape = (type_name, raw if isinstance(raw, str) else None, tuple(obj))
    try:
        return meta.plans[shape]
    except KeyError:
        if len(meta.plans) >= _PLANS_KEPT:
            meta.plans.clear()
        plan = meta.plans[shape] = _shape_plan(meta, *shape)
        return plan


def _shape_plan(meta: VersionMetadata, type_name: str, raw: str | None, keys: tuple[str, ...]) -> Plan | None:
    """What `_conform_keys` does to an object of this shape, when it drops no key and neither rewrites nor
    reports the `@odata.type` (`_declared`): the keys it walks into. None when it does any of those."""
    if raw is not None:
        found = meta.find_type(raw)
        if found is None or not meta.is_a(found, type_name):
            return None
        type_name = found
    info = meta.type(type_name)
    plan: list[tuple[str, str]] = []
    for key in keys:
        name = key.split("@", 1)[0]
        if not name:
            continue
        lowered = name.lower()
        if lowered in info.properties:
            ref = info.properties[lowered][1]
        elif lowered in info.navigation:
            ref = info.navigation[lowered][1]
        else:
            return None
        if ref is not None and "@" not in key:
            plan.append((key, _split(ref)[0]))
    return tuple(plan)


def _conform_keys(meta: VersionMetadata, type_name: str, obj: dict[str, Any], result: Conformed) -> None:
    raw = obj.get("@odata.type")
    original = _other(meta).find_type(raw) if isinstance(raw, str) else None
    type_name = _declared(meta, type_name, obj, result)
    info = meta.type(type_name)
    for key in list(obj):
        name = key.split("@", 1)[0]
        if not name:
            continue  # an instance annotation (@odata.type, @removed)
        lowered = name.lower()
        if lowered in info.properties:
            ref = info.properties[lowered][1]
            if ref is not None and "@" not in key:
                _conform_values(meta, _split(ref)[0], obj[key], result)
        elif lowered in info.navigation:
            ref = info.navigation[lowered][1]
            if ref is not None and "@" not in key:
                _conform_values(meta, _split(ref)[0], obj[key], result)
        else:
            _drop(meta, original or type_name, obj, key, result)


def _conform_values(meta: VersionMetadata, type_name: str, value: Any, result: Conformed) -> None:
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            _conform_object(meta, type_name, item, result)


def _drop(meta: VersionMetadata, type_name: str, obj: dict[str, Any], key: str, result: Conformed) -> None:
    """Remove a property this version's type lacks; `type_name` is the object's type in the other version."""
    other = _other(meta)
    name = key.split("@", 1)[0].lower()
    in_other = other.known(type_name) and (
        name in other.type(type_name).properties or name in other.type(type_name).navigation
    )
    if not in_other:
        result.invented.append(f"{type_name}.{key} (in neither v1.0 nor beta)")
    del obj[key]
    result.changed = True
