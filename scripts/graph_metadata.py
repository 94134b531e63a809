"""Regenerate `monitor/simulator/graph_metadata.json`: the part of Microsoft Graph's published metadata
that monitor's requests and the simulator's answers are checked against.

Sources (nothing here is guessed; both are Microsoft's own descriptions of the API):

- v1.0: the clean CSDL of the public repository microsoftgraph/msgraph-metadata,
  `clean_v10_metadata/cleanMetadata.xml` (https://github.com/microsoftgraph/msgraph-metadata).
- beta: Microsoft publishes no clean beta CSDL release to pin, so beta is read from the generated beta
  SDK on PyPI (https://pypi.org/project/msgraph-beta-sdk/): each model's `get_field_deserializers`
  (the serialized property names, incl. inherited ones through the class hierarchy) and each request
  builder's URL template (entity sets, singletons, navigation, bound functions and actions).

Only what the checks need is kept: for the entity sets and singletons monitor calls (`ROOTS`), every
entity type on the navigation paths it follows, with its base and derived types (for `@odata.type`
casts), the complex types their properties use, and the functions and actions bound to them. Run it
when monitor starts calling something new:

    pip download --no-deps msgraph-beta-sdk==1.66.0 -d /tmp/beta
    curl -sLo /tmp/v1.xml https://raw.githubusercontent.com/microsoftgraph/msgraph-metadata/<commit>/clean_v10_metadata/cleanMetadata.xml
    python scripts/graph_metadata.py --v1 /tmp/v1.xml --v1-source "msgraph-metadata <commit> (<date>)" \\
        --beta-wheel /tmp/beta/msgraph_beta_sdk-1.66.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

NAMESPACE = "microsoft.graph"
# What monitor calls, as a tree: entity sets and singletons (directoryObjects: getByIds), and below each
# the navigation properties it follows. Every type on the way is kept with its base and derived types,
# the complex types they use and the functions and actions bound to them; other navigation properties
# are listed by name only (a request through one fails the check with "regenerate the artifact").
Tree = dict[str, "Tree"]
ROOTS: Tree = {
    "auditLogs": {"directoryAudits": {}},
    "users": {},
    "groups": {"members": {}},
    "organization": {},
    "subscriptions": {},
    "directoryObjects": {},
    "deviceManagement": {
        "managedDevices": {"detectedApps": {}},
        "auditEvents": {},
        "deviceCompliancePolicies": {"deviceStatuses": {}},
        "deviceConfigurations": {"deviceStatuses": {}},
        "detectedApps": {"managedDevices": {}},
        "reports": {},
    },
    "deviceAppManagement": {"mobileApps": {}},
}
OUT = Path(__file__).resolve().parent.parent / "monitor" / "simulator" / "graph_metadata.json"
COLLECTION = "C:"  # prefix of a collection-valued reference in the artifact
STREAM = "Edm.Stream"
EDM = "http://docs.oasis-open.org/odata/ns/edm"


@dataclass
class TypeDef:
    """An entity or complex type: its own properties (inherited ones live on the base)."""

    name: str
    base: str | None = None
    entity: bool = False
    properties: dict[str, str | None] = field(default_factory=dict)  # structural: name -> complex type or None
    navigation: dict[str, str] = field(default_factory=dict)  # name -> target entity type


@dataclass
class Operation:
    name: str
    kind: str  # "action" or "function"
    parameters: list[str]
    returns: str | None


@dataclass
class Model:
    roots: dict[str, str] = field(default_factory=dict)  # entity set / singleton -> type (C: for a set)
    types: dict[str, TypeDef] = field(default_factory=dict)
    operations: dict[str, dict[str, Operation]] = field(default_factory=dict)  # binding -> name -> op


def collection(ref: str) -> bool:
    return ref.startswith(COLLECTION)


def bare(ref: str) -> str:
    return ref.removeprefix(COLLECTION)


# -- v1.0: the CSDL ---------------------------------------------------------------------------------


def _q(tag: str) -> str:
    return f"{{{EDM}}}{tag}"


class CsdlReader:
    """Reads the clean CSDL into a `Model` (all namespaces; aliases resolved)."""

    def __init__(self, root: ET.Element) -> None:
        self.schemas = list(root.iter(_q("Schema")))
        self.aliases = {s.get("Alias", ""): s.get("Namespace", "") for s in self.schemas if s.get("Alias")}
        self.complex = {
            f"{s.get('Namespace')}.{c.get('Name')}" for s in self.schemas for c in s.iter(_q("ComplexType"))
        }

    def ref(self, raw: str) -> str:
        """`Collection(graph.user)` -> `C:microsoft.graph.user`."""
        inner = raw[len("Collection(") : -1] if raw.startswith("Collection(") else raw
        namespace, _, name = inner.rpartition(".")
        full = f"{self.aliases.get(namespace, namespace)}.{name}"
        return (COLLECTION if inner != raw else "") + full

    def read(self) -> Model:
        model = Model()
        for schema in self.schemas:
            namespace = schema.get("Namespace", "")
            for tag, entity in (("EntityType", True), ("ComplexType", False)):
                for element in schema.iter(_q(tag)):
                    typedef = self._type(namespace, element, entity)
                    model.types[typedef.name] = typedef
            for tag in ("Action", "Function"):
                for element in schema.iter(_q(tag)):
                    if element.get("IsBound") == "true":
                        binding, operation = self._operation(element, tag.lower())
                        model.operations.setdefault(binding, {})[operation.name] = operation
            for container in schema.iter(_q("EntityContainer")):
                for entity_set in container.iter(_q("EntitySet")):
                    model.roots[entity_set.get("Name", "")] = COLLECTION + self.ref(entity_set.get("EntityType", ""))
                for singleton in container.iter(_q("Singleton")):
                    model.roots[singleton.get("Name", "")] = self.ref(singleton.get("Type", ""))
        return model

    def _type(self, namespace: str, element: ET.Element, entity: bool) -> TypeDef:
        base = element.get("BaseType")
        typedef = TypeDef(f"{namespace}.{element.get('Name')}", self.ref(base) if base else None, entity)
        for prop in element.iter(_q("Property")):
            target = self.ref(prop.get("Type", ""))
            typedef.properties[prop.get("Name", "")] = target if bare(target) in self.complex else None
        for nav in element.iter(_q("NavigationProperty")):
            typedef.navigation[nav.get("Name", "")] = self.ref(nav.get("Type", ""))
        return typedef

    def _operation(self, element: ET.Element, kind: str) -> tuple[str, Operation]:
        parameters = list(element.iter(_q("Parameter")))
        returns = next(iter(element.iter(_q("ReturnType"))), None)
        operation = Operation(
            element.get("Name", ""),
            kind,
            [p.get("Name", "") for p in parameters[1:]],
            self.ref(returns.get("Type", "")) if returns is not None else None,
        )
        return self.ref(parameters[0].get("Type", "")), operation


# -- beta: the generated SDK ------------------------------------------------------------------------

_CLASS = re.compile(r"^class (\w+)\(([\w, ]+)\):", re.MULTILINE)
_IMPORT = re.compile(r"^\s*from (\.+)([\w.]*) import (\w+)$", re.MULTILINE)
_ODATA_TYPE = re.compile(r'odata_type: Optional\[str\] = "#([\w.]+)"')
_FIELD = re.compile(r'^\s+"([^"]+)": lambda n : setattr\(self, \'\w+\', n\.(\w+)\((\w*)\)\),$', re.MULTILINE)
_TEMPLATE = re.compile(r'super\(\).__init__\(request_adapter, "\{\+baseurl\}([^"]*)"')
_QUERY = re.compile(r"\{\?[^}]*\}$")
_RETURNS = re.compile(r"async def (get|post)\(self.*?\) -> Optional\[([\w\[\]]+)\]:")
_OBJECT_READERS = ("get_object_value", "get_collection_of_object_values")
_ROOT_BASES = ("AdditionalDataHolder", "BackedModel", "Parsable")
_PREFIX = "msgraph_beta/generated/"
_MODELS = f"{_PREFIX}models/"


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass
class _Module:
    """One generated model class, keyed by its module path (`models/device_management/alert_record`)."""

    cls: str
    name: str  # its OData type name
    base: str | None  # module of the base class
    fields: list[tuple[str, str, str | None]]  # (JSON name, reader, module of the object type)


class SdkReader:
    """Reads the beta SDK wheel: the models (all namespaces) and the request builders."""

    def __init__(self, wheel: zipfile.ZipFile) -> None:
        self.wheel = wheel
        self.files = set(wheel.namelist())
        self.modules: dict[str, _Module] = {}

    def read(self) -> Model:
        for path in sorted(self.files):
            if path.startswith(_MODELS) and path.endswith(".py") and not path.endswith("__init__.py"):
                self._read_model(path.removesuffix(".py"), self.wheel.read(path).decode())
        model = Model()
        for module in self.modules:
            typedef = self._type(module)
            model.types[typedef.name] = typedef
        self._builders(model)  # reads operation answer classes too; they are not types
        return model

    def _read_model(self, module: str, source: str) -> None:
        match = _CLASS.search(source)
        if match is None:
            return
        cls, bases = match.group(1), [b.strip() for b in match.group(2).split(",")]
        imports = {name: _resolve(module, dots, path) for dots, path, name in _IMPORT.findall(source)}
        odata = _ODATA_TYPE.search(source)
        self.modules[module] = _Module(
            cls,
            odata.group(1) if odata else _default_name(module, cls),
            imports.get(bases[0]) if bases[0] not in _ROOT_BASES else None,
            [(json_name, reader, imports.get(target)) for json_name, reader, target in _FIELD.findall(source)],
        )

    def _is_entity(self, module: str | None) -> bool:
        while module is not None and module in self.modules:
            if self.modules[module].cls == "Entity" and module == f"{_MODELS}entity":
                return True
            module = self.modules[module].base
        return False

    def _type(self, module: str) -> TypeDef:
        info = self.modules[module]
        base = self.modules.get(info.base or "")
        typedef = TypeDef(info.name, base.name if base else None, self._is_entity(module))
        inherited = {name for name, _, _ in base.fields} if base else set()
        for name, reader, target in info.fields:
            if name in inherited or name == "@odata.type":
                continue
            many = COLLECTION if "collection" in reader else ""
            known = self.modules.get(target or "")
            if reader in _OBJECT_READERS and known is not None and self._is_entity(target):
                typedef.navigation[name] = many + known.name
            elif reader in _OBJECT_READERS and known is not None:
                typedef.properties[name] = many + known.name
            else:
                typedef.properties[name] = None
        return typedef

    def _builders(self, model: Model) -> None:
        """Roots and bound operations from the request builders' URL templates."""
        templates: list[tuple[list[str], str, str | None, str]] = []
        for path in sorted(self.files):
            if not (path.startswith(_PREFIX) and path.endswith("_request_builder.py")):
                continue
            source = self.wheel.read(path).decode()
            template = _TEMPLATE.search(source)
            if template is None:
                continue
            segments = [s for s in _QUERY.sub("", template.group(1)).split("/") if s]
            returns = _RETURNS.findall(source)
            method, answer = returns[0] if returns else ("", "")
            imports = {name: _resolve(path, dots, mod) for dots, mod, name in _IMPORT.findall(source)}
            templates.append((segments, method, self._answer(answer, imports.get(answer)), path))
        for segments, _, answer, _ in templates:
            if len(segments) == 1 and answer is not None:
                model.roots[segments[0]] = answer
        for segments, method, answer, path in templates:
            self._operation(model, segments, method, answer, path)

    def _answer(self, cls: str, module: str | None) -> str | None:
        """What a builder's get/post returns: a collection response (or an operation's `...GetResponse` /
        `...PostResponse`) carries its `value`; bytes are a stream."""
        if cls == "bytes":
            return STREAM
        if module is None:
            return None
        if module not in self.modules and module + ".py" in self.files:
            self._read_model(module, self.wheel.read(module + ".py").decode())
        info = self.modules.get(module)
        if info is None:
            return None
        if not cls.endswith(("CollectionResponse", "GetResponse", "PostResponse")):
            return info.name
        value = next((f for f in info.fields if f[0] == "value"), None)
        target = self.modules.get(value[2] or "") if value else None
        if value is None or target is None:
            return None
        return (COLLECTION if "collection" in value[1] else "") + target.name

    def _operation(self, model: Model, segments: list[str], method: str, answer: str | None, builder: str) -> None:
        last = segments[-1] if segments else ""
        if len(segments) < 2 or last.startswith("{") or last in ("$count", "$ref", "$value"):
            return
        name = last.split("(", 1)[0]
        if name.startswith(f"{NAMESPACE}.") or not name[:1].islower():
            return
        binding = _walk(model, segments[:-1])
        if binding is None or name in _members(model, bare(binding)):
            return
        parameters: list[str] = []
        if method == "post":
            body = builder.replace("_request_builder.py", "_post_request_body.py")
            source = self.wheel.read(body).decode() if body in self.files else ""
            parameters = [f[0] for f in _FIELD.findall(source)]
        kind = "function" if method == "get" else "action"
        model.operations.setdefault(binding, {})[name] = Operation(name, kind, parameters, answer)


def _resolve(module: str, dots: str, path: str) -> str:
    """The module a relative import names (`..admin_consent` from `models/device_management/x`)."""
    parts = module.split("/")[: -len(dots)]
    return "/".join([*parts, *path.split(".")]) if path else "/".join(parts)


def _default_name(module: str, cls: str) -> str:
    """The OData name of a class whose module gives none: its namespace from the package, except for
    the class a package is named after (`models/device_management/device_management` is the type
    microsoft.graph.deviceManagement, not microsoft.graph.deviceManagement.deviceManagement)."""
    packages = [_camel(p) for p in module.removeprefix(_MODELS).split("/")[:-1]]
    if packages and packages[-1] == _lower_first(cls):
        packages = packages[:-1]
    return ".".join([NAMESPACE, *packages, _lower_first(cls)])


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _members(model: Model, type_name: str) -> set[str]:
    names: set[str] = set()
    current: str | None = type_name
    while current is not None and current in model.types:
        typedef = model.types[current]
        names |= set(typedef.properties) | set(typedef.navigation)
        current = typedef.base
    return names


def _navigation(model: Model, type_name: str, name: str) -> str | None:
    current: str | None = type_name
    while current is not None and current in model.types:
        if name in model.types[current].navigation:
            return model.types[current].navigation[name]
        current = current and model.types[current].base
    return None


def _walk(model: Model, segments: list[str]) -> str | None:
    """The type a template path (without its last segment) addresses, or None."""
    current = model.roots.get(segments[0]) if segments else None
    for segment in segments[1:]:
        if current is None:
            return None
        if segment.startswith("{"):
            current = bare(current) if collection(current) else None
        elif segment.startswith(f"{NAMESPACE}.") or segment.startswith("graph."):
            cast = f"{NAMESPACE}.{segment.rsplit('.', 1)[-1]}"
            current = (COLLECTION if collection(current) else "") + cast if cast in model.types else None
        elif collection(current):
            return None
        else:
            current = _navigation(model, current, segment)
    return current


# -- the reachable part, and the artifact ----------------------------------------------------------


def _family(model: Model) -> dict[str, set[str]]:
    derived: dict[str, set[str]] = {}
    for typedef in model.types.values():
        if typedef.base:
            derived.setdefault(typedef.base, set()).add(typedef.name)
    return derived


def _ancestors(model: Model, type_name: str) -> Iterator[str]:
    current = model.types[type_name].base if type_name in model.types else None
    while current is not None and current in model.types:
        yield current
        current = model.types[current].base


def _descendants(derived: dict[str, set[str]], type_name: str) -> Iterator[str]:
    stack = list(derived.get(type_name, ()))
    while stack:
        name = stack.pop()
        yield name
        stack.extend(derived.get(name, ()))


_LEAF: Tree = {}


def reachable(model: Model, roots: Tree) -> set[str]:
    """The types of the `roots` tree with their base types (inherited properties), derived types (casts),
    what their bound operations return, and the complex types all of these use (with theirs)."""
    derived = _family(model)
    kept: set[str] = set()
    seen: set[tuple[str, int]] = set()
    queue: list[tuple[str, Tree]] = [(bare(model.roots[r]), tree) for r, tree in roots.items() if r in model.roots]
    while queue:
        name, tree = queue.pop()
        if name not in model.types or (name, id(tree)) in seen:
            continue
        seen.add((name, id(tree)))
        family = [name, *_descendants(derived, name)]
        for member in family:
            kept.update([member, *_ancestors(model, member)])
            for binding in (member, COLLECTION + member):
                for operation in model.operations.get(binding, {}).values():
                    if operation.returns and operation.returns != STREAM:
                        queue.append((bare(operation.returns), _LEAF))
            for nav, subtree in tree.items():
                target = _navigation(model, member, nav)
                if target is not None:
                    queue.append((bare(target), subtree))
    return kept | _complex_closure(model, derived, kept)


def _complex_closure(model: Model, derived: dict[str, set[str]], types: set[str]) -> set[str]:
    found: set[str] = set()
    stack = [bare(t) for name in types for t in model.types[name].properties.values() if t is not None]
    while stack:
        name = stack.pop()
        if name in found or name not in model.types:
            continue
        found.add(name)
        for related in (*_ancestors(model, name), *_descendants(derived, name)):
            stack.append(related)
        stack.extend(bare(t) for t in model.types[name].properties.values() if t is not None)
    return found


def short(ref: str | None) -> str | None:
    """A type reference as the artifact writes it: `microsoft.graph.` is left out (a name without a dot
    is in that namespace); other namespaces stay whole; `C:` marks a collection."""
    if ref is None:
        return None
    prefix = COLLECTION if collection(ref) else ""
    name = bare(ref)
    rest = name.removeprefix(f"{NAMESPACE}.")
    return prefix + (rest if "." not in rest else name)


def compact(model: Model, roots: Tree) -> dict[str, object]:
    keep = reachable(model, roots)
    types: dict[str, object] = {}
    for name in sorted(keep):
        typedef = model.types[name]
        entry: dict[str, object] = {"entity": typedef.entity}
        if typedef.base:
            entry["base"] = short(typedef.base)
        entry["properties"] = sorted(p for p, t in typedef.properties.items() if t is None or bare(t) not in keep)
        complex_props = {p: short(t) for p, t in typedef.properties.items() if t is not None and bare(t) in keep}
        if complex_props:
            entry["complex"] = dict(sorted(complex_props.items()))
        # Every navigation property by name; its target only where the artifact has that type.
        navigation = {n: (short(t) if bare(t) in keep else None) for n, t in typedef.navigation.items()}
        if navigation:
            entry["navigation"] = dict(sorted(navigation.items()))
        types[str(short(name))] = entry
    operations: dict[str, object] = {}
    for binding in sorted(model.operations):
        if bare(binding) in keep:
            operations[str(short(binding))] = {
                op.name: {"kind": op.kind, "parameters": op.parameters, "returns": short(op.returns)}
                for op in sorted(model.operations[binding].values(), key=lambda o: o.name)
            }
    root_map = {root: short(model.roots[root]) for root in roots if root in model.roots}
    return {"roots": root_map, "types": types, "operations": operations}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--v1", type=Path, required=True, help="clean_v10_metadata/cleanMetadata.xml")
    parser.add_argument("--v1-source", required=True, help="where it came from: repository, commit, date")
    parser.add_argument("--beta-wheel", type=Path, required=True, help="the msgraph-beta-sdk wheel")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    v1 = CsdlReader(ET.parse(args.v1).getroot()).read()
    with zipfile.ZipFile(args.beta_wheel) as wheel:
        beta = SdkReader(wheel).read()
    artifact = {
        "header": {
            "description": "Graph metadata for monitor's request and response checks, by scripts/graph_metadata.py",
            "v1.0": f"{args.v1_source}; sha256 {_sha256(args.v1)}",
            "beta": f"PyPI {args.beta_wheel.name}; sha256 {_sha256(args.beta_wheel)}",
            "generated": datetime.date.today().isoformat(),
            "roots": ROOTS,
        },
        "v1.0": compact(v1, ROOTS),
        "beta": compact(beta, ROOTS),
    }
    # One name per line: a regenerated artifact diffs readably.
    args.out.write_text(json.dumps(artifact, indent=0, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
