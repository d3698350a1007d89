"""Every field the published specs require for the two create operations is enforced by the sandbox.

The required fields are read straight from the OpenAPI JSON in include/provider_specs, so a spec
update that adds a requirement makes these tests exercise it.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN, SandboxServer
from lifecycle.sandbox.specs import SPEC_DIR

REPO_SPECS = Path(__file__).resolve().parents[3] / "include" / "provider_specs"
SENDGRID = json.loads((REPO_SPECS / "sendgrid_mail_v3.openapi.json").read_text())
TWILIO = json.loads((REPO_SPECS / "twilio_api_v2010_messages.openapi.json").read_text())
MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
_addresses = itertools.count()


def deref(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for token in node["$ref"][2:].split("/"):
            target = target[token]
        node = target
    return node


def mail_send_schema() -> dict[str, Any]:
    body = deref(SENDGRID, SENDGRID["paths"]["/v3/mail/send"]["post"]["requestBody"])
    return body["content"]["application/json"]["schema"]


def required_paths(schema: dict[str, Any], path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every (path to a required field) in ``schema``, array items addressed as index 0."""
    schema = deref(SENDGRID, schema)
    for name in schema.get("required", ()):
        yield (*path, name)
    for name, child in schema.get("properties", {}).items():
        yield from required_paths(child, (*path, name))
    if "items" in schema:
        yield from required_paths(schema["items"], (*path, 0))


def example(schema: dict[str, Any]) -> Any:
    """A minimal instance of ``schema``: only required properties, one item per array, unique addresses."""
    schema = deref(SENDGRID, schema)
    kind = schema.get("type")
    if kind == "object":
        return {name: example(schema["properties"][name]) for name in schema.get("required", ())}
    if kind == "array":
        return [example(schema["items"])]
    if kind == "integer":
        return 1
    if schema.get("format") == "email":
        return f"r{next(_addresses)}@example.com"
    return schema.get("enum", ["x"])[0]


def schema_at(path: tuple[str | int, ...]) -> dict[str, Any]:
    schema = mail_send_schema()
    for part in path:
        schema = deref(SENDGRID, schema)
        schema = schema["items"] if isinstance(part, int) else schema["properties"][part]
    return schema


def with_path(body: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    """``body`` with every container along ``path`` present, created from the spec when missing."""
    body = copy.deepcopy(body)
    node: Any = body
    for depth, part in enumerate(path):
        if isinstance(part, int):
            node = node[part]
            continue
        if part not in node:
            node[part] = example(schema_at(path[: depth + 1]))
        node = node[part]
    return body


def minimal_mail() -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": "ada@example.com"}]}],
        "from": {"email": "news@lifecycle.example"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello"}],
    }


def dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path)


SENDGRID_REQUIRED = sorted(set(required_paths(mail_send_schema())), key=dotted)
TWILIO_CREATE = TWILIO["paths"][MESSAGES]["post"]
TWILIO_FORM = TWILIO_CREATE["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
TWILIO_GROUPS = [
    ["".join(word.capitalize() for word in name.split("_")) for name in group]
    for group in TWILIO_CREATE["x-twilio"]["conditional"]
]
TWILIO_VALUES = {
    "To": "+15558675310",
    "From": "+15017122661",
    "MessagingServiceSid": "MG" + "ab" * 16,
    "Body": "Hello",
    "MediaUrl": "https://lifecycle.example/a.png",
    "ContentSid": "HX" + "cd" * 16,
}
TWILIO_GROUP_CODES = {"From": 21603, "Body": 21602}
TWILIO_REQUIRED_CODES = {"To": 21604}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


def post_mail(sandbox: SandboxServer, body: dict[str, Any]) -> requests.Response:
    headers = {"Authorization": f"Bearer {DEFAULT_SENDGRID_KEY}"}
    return requests.post(f"{sandbox.url}/v3/mail/send", json=body, headers=headers, timeout=10)


def post_sms(sandbox: SandboxServer, form: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{sandbox.url}/2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages.json",
        data=form,
        auth=(DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN),
        timeout=10,
    )


def test_sandbox_reads_the_shipped_specs() -> None:
    assert SPEC_DIR == REPO_SPECS
    assert {path.name for path in SPEC_DIR.iterdir()} >= {
        "sendgrid_mail_v3.openapi.json",
        "twilio_api_v2010_messages.openapi.json",
        "sendgrid-oai.LICENSE",
        "twilio-oai.LICENSE",
    }


def test_spec_lists_the_requirements_these_tests_cover() -> None:
    assert ("personalizations",) in SENDGRID_REQUIRED
    assert ("personalizations", 0, "to", 0, "email") in SENDGRID_REQUIRED
    assert ("from", "email") in SENDGRID_REQUIRED
    assert TWILIO_FORM["required"] == ["To"]
    assert sorted(map(tuple, TWILIO_GROUPS)) == [
        ("Body", "MediaUrl", "ContentSid"),
        ("From", "MessagingServiceSid"),
    ]


@pytest.mark.parametrize("path", SENDGRID_REQUIRED, ids=dotted)
def test_every_required_mail_send_field_is_enforced(sandbox: SandboxServer, path: tuple[str | int, ...]) -> None:
    complete = with_path(minimal_mail(), path[:-1])
    incomplete = copy.deepcopy(complete)
    parent: Any = incomplete
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]

    accepted = post_mail(sandbox, complete)
    refused = post_mail(sandbox, incomplete)

    assert accepted.status_code == 202, accepted.text
    assert refused.status_code == 400
    assert dotted(path) in [error["field"] for error in refused.json()["errors"]]


@pytest.mark.parametrize("name", TWILIO_FORM["required"])
def test_every_required_create_message_parameter_is_enforced(sandbox: SandboxServer, name: str) -> None:
    form = {"To": TWILIO_VALUES["To"], "From": TWILIO_VALUES["From"], "Body": TWILIO_VALUES["Body"]}

    accepted = post_sms(sandbox, form)
    refused = post_sms(sandbox, {key: value for key, value in form.items() if key != name})

    assert accepted.status_code == 201
    assert refused.status_code == 400
    assert refused.json()["code"] == TWILIO_REQUIRED_CODES[name]


@pytest.mark.parametrize("group", TWILIO_GROUPS, ids="|".join)
def test_one_of_each_conditional_group_is_required(sandbox: SandboxServer, group: list[str]) -> None:
    base = {"To": TWILIO_VALUES["To"], "From": TWILIO_VALUES["From"], "Body": TWILIO_VALUES["Body"]}
    without_group = {key: value for key, value in base.items() if key not in group}

    refused = post_sms(sandbox, without_group)
    accepted = [post_sms(sandbox, {**without_group, member: TWILIO_VALUES[member]}) for member in group]

    assert refused.status_code == 400
    assert refused.json()["code"] == TWILIO_GROUP_CODES[group[0]]
    assert [response.status_code for response in accepted] == [201] * len(group)
