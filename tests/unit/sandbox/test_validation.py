"""The sandbox's JSON Schema subset validator."""

from __future__ import annotations

from typing import Any

import pytest

from lifecycle.sandbox.validation import SchemaValidator, json_type_name

DOCUMENT: dict[str, Any] = {
    "components": {
        "schemas": {
            "Address": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}},
                        "required": ["email"]},
            "Color": {"type": "string", "enum": ["red", "green"]},
        }
    }
}  # fmt: skip
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["to"],
    "properties": {
        "to": {
            "type": "array",
            "minItems": 1,
            "maxItems": 2,
            "items": {"$ref": "#/components/schemas/Address"},
        },
        "tags": {"type": "array", "uniqueItems": True, "items": {"type": "string", "maxLength": 3}},
        "color": {"$ref": "#/components/schemas/Color"},
        "count": {"type": "integer", "minimum": 1, "maximum": 9},
        "code": {"type": "string", "pattern": "^AB[0-9]+$", "minLength": 3},
        "note": {"type": "string", "nullable": True},
        "labels": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
        "strict": {"type": "object", "properties": {"a": {"type": "boolean"}}, "additionalProperties": False},
        "ratio": {"type": "number"},
    },
}
VALIDATOR = SchemaValidator(DOCUMENT, {"email": lambda value: "@" in value})


def violations(instance: Any) -> list[tuple[str, str]]:
    return [(violation.field, violation.keyword) for violation in VALIDATOR.validate(instance, SCHEMA)]


def test_a_valid_instance_has_no_violations() -> None:
    instance = {
        "to": [{"email": "a@b.c"}],
        "tags": ["x", "y"],
        "color": "red",
        "count": 3,
        "code": "AB12",
        "note": None,
        "labels": {"k": "v"},
        "strict": {"a": True},
        "ratio": 2,
    }
    assert violations(instance) == []


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ({}, [("to", "required")]),
        ({"to": []}, [("to", "minItems")]),
        ({"to": [{"email": "a@b"}] * 3}, [("to", "maxItems")]),
        ({"to": [{}]}, [("to.0.email", "required")]),
        ({"to": [{"email": "nope"}]}, [("to.0.email", "format")]),
        ({"to": [{"email": 7}]}, [("to.0.email", "type")]),
        ({"to": "a@b"}, [("to", "type")]),
        ({"to": [{"email": "a@b"}], "tags": ["x", "x"]}, [("tags", "uniqueItems")]),
        ({"to": [{"email": "a@b"}], "tags": ["long"]}, [("tags.0", "maxLength")]),
        ({"to": [{"email": "a@b"}], "color": "blue"}, [("color", "enum")]),
        ({"to": [{"email": "a@b"}], "count": 0}, [("count", "minimum")]),
        ({"to": [{"email": "a@b"}], "count": 10}, [("count", "maximum")]),
        ({"to": [{"email": "a@b"}], "count": True}, [("count", "type")]),
        ({"to": [{"email": "a@b"}], "count": 2.5}, [("count", "type")]),
        ({"to": [{"email": "a@b"}], "code": "AC1"}, [("code", "pattern")]),
        ({"to": [{"email": "a@b"}], "code": "AB"}, [("code", "minLength"), ("code", "pattern")]),
        ({"to": [{"email": "a@b"}], "labels": {"a": "1", "b": "2"}}, [("labels", "maxProperties")]),
        ({"to": [{"email": "a@b"}], "labels": {"a": 1}}, [("labels.a", "type")]),
        ({"to": [{"email": "a@b"}], "strict": {"b": 1}}, [("strict.b", "additionalProperties")]),
        ({"to": [{"email": "a@b"}], "ratio": "1"}, [("ratio", "type")]),
        ({"to": [{"email": "a@b"}], "note": 3}, [("note", "type")]),
    ],
)
def test_each_keyword_reports_the_offending_path(instance: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert violations(instance) == expected


def test_messages_read_like_the_provider_errors() -> None:
    [violation] = VALIDATOR.validate({"to": [{"email": 7}]}, SCHEMA)

    assert violation.message == "Invalid type. Expected: string, given: integer."
    assert violation.path == ("to", 0, "email")


def test_json_type_names() -> None:
    assert [json_type_name(value) for value in (True, 1, 1.5, "s", None, [], {})] == [
        "boolean", "integer", "number", "string", "null", "array", "object",
    ]  # fmt: skip
