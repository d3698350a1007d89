"""A JSON Schema validator for the subset of keywords the providers' OpenAPI specs use.

Supported: ``$ref`` (local ``#/...`` pointers), ``type`` (with OpenAPI's ``nullable``),
``properties``, ``required``, ``additionalProperties``, ``maxProperties``, ``items``,
``minItems``, ``maxItems``, ``uniqueItems``, ``enum``, ``minLength``, ``maxLength``, ``pattern``,
``minimum``, ``maximum`` and ``format`` (only the formats the caller passes a checker for).
Every violation is reported, each with the path of the offending value, so a provider can
answer with the field name as the real API does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

PathPart = str | int
FormatChecker = Callable[[str], bool]

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}


@dataclass(frozen=True)
class SchemaViolation:
    """One way an instance breaks its schema."""

    path: tuple[PathPart, ...]
    keyword: str
    message: str

    @property
    def field(self) -> str:
        """The dotted path of the offending value (``personalizations.0.to``), as SendGrid names fields."""
        return ".".join(str(part) for part in self.path)


def json_type_name(value: Any) -> str:
    """The JSON type of a decoded value (``integer`` and ``number`` told apart)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    for name, types in _JSON_TYPES.items():
        if isinstance(value, types):
            return name
    return type(value).__name__


def _is_type(value: Any, expected: str) -> bool:
    if isinstance(value, bool) and expected in ("integer", "number"):
        return False
    if expected == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES.get(expected, (object,)))


def resolve_ref(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    """Follow a local JSON pointer (``#/components/schemas/MailTo``) inside ``root``."""
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref pointers are supported, got {ref!r}")
    node: Any = root
    for token in ref[2:].split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class SchemaValidator:
    """Validates instances against schemas that live inside one OpenAPI document."""

    def __init__(self, root: Mapping[str, Any], formats: Mapping[str, FormatChecker] | None = None) -> None:
        self.root = root
        self.formats = dict(formats or {})

    def validate(self, instance: Any, schema: Mapping[str, Any]) -> list[SchemaViolation]:
        """Return every violation of ``schema`` by ``instance`` (an empty list when valid)."""
        return list(dict.fromkeys(self._check(instance, schema, ())))

    def _check(self, value: Any, schema: Mapping[str, Any], path: tuple[PathPart, ...]) -> Iterator[SchemaViolation]:
        if "$ref" in schema:
            yield from self._check(value, resolve_ref(self.root, schema["$ref"]), path)
        if value is None and schema.get("nullable"):
            return
        expected = schema.get("type")
        if expected is not None and not _is_type(value, expected):
            yield SchemaViolation(path, "type", f"Invalid type. Expected: {expected}, given: {json_type_name(value)}.")
            return
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(json.dumps(item) for item in schema["enum"])
            yield SchemaViolation(path, "enum", f"Must be one of the following: {allowed}.")
        if isinstance(value, dict):
            yield from self._check_object(value, schema, path)
        elif isinstance(value, list):
            yield from self._check_array(value, schema, path)
        elif isinstance(value, str):
            yield from self._check_string(value, schema, path)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield from self._check_number(value, schema, path)

    def _check_object(
        self, value: dict[str, Any], schema: Mapping[str, Any], path: tuple[PathPart, ...]
    ) -> Iterator[SchemaViolation]:
        for name in schema.get("required", ()):
            if name not in value:
                yield SchemaViolation((*path, name), "required", f"{name} is required.")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            yield SchemaViolation(path, "maxProperties", f"Must have at most {schema['maxProperties']} properties.")
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                yield from self._check(item, properties[name], (*path, name))
            elif additional is False:
                yield SchemaViolation((*path, name), "additionalProperties", f"{name} is not allowed.")
            elif isinstance(additional, Mapping):
                yield from self._check(item, additional, (*path, name))

    def _check_array(
        self, value: list[Any], schema: Mapping[str, Any], path: tuple[PathPart, ...]
    ) -> Iterator[SchemaViolation]:
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield SchemaViolation(path, "minItems", f"Array must have at least {schema['minItems']} items.")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield SchemaViolation(path, "maxItems", f"Array must have at most {schema['maxItems']} items.")
        if schema.get("uniqueItems") and len({_canonical(item) for item in value}) != len(value):
            yield SchemaViolation(path, "uniqueItems", "Array items must be unique.")
        if "items" in schema:
            for index, item in enumerate(value):
                yield from self._check(item, schema["items"], (*path, index))

    def _check_string(
        self, value: str, schema: Mapping[str, Any], path: tuple[PathPart, ...]
    ) -> Iterator[SchemaViolation]:
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield SchemaViolation(
                path, "minLength", f"String length must be greater than or equal to {schema['minLength']}."
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield SchemaViolation(
                path, "maxLength", f"String length must be less than or equal to {schema['maxLength']}."
            )
        if "pattern" in schema and not _compiled(schema["pattern"]).search(value):
            yield SchemaViolation(path, "pattern", f"Does not match pattern '{schema['pattern']}'.")
        checker = self.formats.get(schema.get("format", ""))
        if checker is not None and not checker(value):
            yield SchemaViolation(path, "format", f"Does not match format '{schema['format']}'.")

    def _check_number(
        self, value: float, schema: Mapping[str, Any], path: tuple[PathPart, ...]
    ) -> Iterator[SchemaViolation]:
        if "minimum" in schema and value < schema["minimum"]:
            yield SchemaViolation(path, "minimum", f"Must be greater than or equal to {schema['minimum']}.")
        if "maximum" in schema and value > schema["maximum"]:
            yield SchemaViolation(path, "maximum", f"Must be less than or equal to {schema['maximum']}.")
