"""The connectors against their own `/openapi.json`, with Schemathesis over the ASGI app (in-memory fakes):
at least 1,000 generated requests per operation, valid and invalid, plus Schemathesis's boundary
(coverage) cases. No request gets a 5xx; every answer has a documented status, a JSON content type
and a body that matches the documented schema; every invalid request is refused with a 4xx.

Schemathesis's `positive_data_acceptance` check (a schema-valid request must not be refused) is
replaced by a narrower one: a schema-valid request may only be refused by one of the SPEC rules that
JSON Schema cannot state (Base64 that decodes, an end time not before the start time, line item ids
unique within a cart, a phone number with digits, a date-time whose UTC time is within the years 1 to
9999). Each case starts with an empty idempotency ledger,
so that two generated requests sharing a key do not meet as a "same key, different body" 400.

Deterministic (derandomized, no example database) and without shrinking, so that its time is bounded;
`JWO_TEST_SCHEMATHESIS_EXAMPLES` changes the number of generated requests per operation.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings

from connectors import models
from connectors.app import create_app
from connectors.directory import CachedDirectory
from connectors.fakes import MemoryOutbox
from connectors.service import ConnectorService
from connectors.settings import ConnectorSettings
from tests.conftest import scan_body, shopper_body
from tests.connectors_traffic import PATHS, Population

EXAMPLES = int(os.environ.get("JWO_TEST_SCHEMATHESIS_EXAMPLES", "1000"))
# What a schema-valid request may still be refused for: SPEC §2 rules that JSON Schema cannot express.
CROSS_FIELD_RULES = re.compile(
    "|".join(
        [
            r"identityKey: must be valid Base64",
            r"shopperKey: must be valid Base64 for a QR_CODE key",
            r"shopperKey must be an E\.123 phone number",
            r"shoppingTrip: endTime must not be before startTime",
            r"cartItems: duplicate lineItemId .+",
            r"[\w.\[\]]+: must be a date-time within the years 1 to 9999 in UTC",
        ]
    )
)

OUTBOX = MemoryOutbox()
APP = create_app(
    ConnectorService(CachedDirectory(Population.build().source()), OUTBOX, lambda: datetime.now(UTC)),
    ConnectorSettings(rate_limit_per_store=1e9),  # generated requests come faster than any store's limit
)
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "deterministic": True},
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "negative_data_rejection": {"enabled": True},
            "positive_data_acceptance": {"enabled": False},
        },
    }
)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


def refused_only_for_a_cross_field_rule(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """A schema-valid request is accepted, unless a rule the schema cannot express refuses it."""
    if case.meta is None or case.meta.generation.mode is not schemathesis.GenerationMode.POSITIVE:
        return
    if response.status_code == 400:
        message = response.json()["message"]
        assert CROSS_FIELD_RULES.fullmatch(message), f"a schema-valid request was refused: {message}"


@pytest.mark.slow
@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_generated_requests_get_documented_answers_and_never_a_5xx(case: schemathesis.Case[Any]) -> None:
    OUTBOX.responses.clear()
    case.call_and_validate(additional_checks=[refused_only_for_a_cross_field_rule])


@pytest.mark.parametrize(
    ("path", "body", "field_name"),
    [
        (PATHS["shopper"], shopper_body() | {"timestamp": "0001-01-01T00:02:01+05:17"}, "timestamp"),
        (PATHS["scan"], scan_body(timestamp="9999-12-31T23:59:59-01:00"), "scanEvent.timestamp"),
    ],
    ids=["year-0-in-utc", "year-10000-in-utc"],
)
def test_a_timestamp_whose_utc_time_is_outside_the_calendar_is_a_400_not_a_500(
    path: str, body: dict[str, Any], field_name: str
) -> None:
    """Found by the generated requests above: it was an OverflowError, answered 500."""
    response = TestClient(APP, raise_server_exceptions=False).post(path, json=body)

    assert response.status_code == 400
    assert response.json() == {"message": f"{field_name}: must be a date-time within the years 1 to 9999 in UTC"}


# --- what /openapi.json publishes ------------------------------------------------------------------

UUID = {"type": "string", "pattern": models.UUID_PATTERN}
DATE_TIME = {"type": "string", "format": "date-time"}
ID_255 = {"type": "string", "minLength": 1, "maxLength": 255}
LOCATIONS = ["ENTRY", "EXIT", "MANUAL_IN_STORE"]
CHANNELS = ["OPTICAL", "RADIO", "CONTACT"]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its `$ref` (and a nullable `anyOf`) followed."""
    if "anyOf" in schema:
        [schema] = [s for s in schema["anyOf"] if s.get("type") != "null"]
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return resolve(document, document["components"]["schemas"][name])
    return schema


def request_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    body = document["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    return resolve(document, body["content"]["application/json"]["schema"])


def field(document: dict[str, Any], schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    for name in dotted.split("."):
        schema = resolve(document, schema)
        schema = schema["items"] if name == "[]" else schema["properties"][name]
    return resolve(document, schema)


def constraints(schema: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "pattern", "minLength", "maxLength", "enum", "format")
    return {k: schema[k] for k in keys if k in schema}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    document: dict[str, Any] = TestClient(APP).get("/openapi.json").json()
    return document


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (
            "scan",
            {
                "requestId": UUID,
                "storeId": ID_255,
                "scanEvent.id": {"type": "string", "minLength": 1, "maxLength": 1000},
                "scanEvent.timestamp": DATE_TIME,
                "scanEvent.location": {"type": "string", "enum": LOCATIONS},
                "scanEvent.value": {"type": "string", "maxLength": 1000},
                "scanEvent.channel": {"type": "string", "enum": CHANNELS},
            },
        ),
        (
            "identity_keys",
            {
                "requestId": UUID,
                "identityKey": {"type": "string", "minLength": 1, "maxLength": 1000},
                "storeId": ID_255,
                "authEvent.id": UUID,
                "authEvent.timestamp": DATE_TIME,
                "authEvent.location": {"type": "string", "enum": LOCATIONS},
                "keyChannel": {"type": "string", "enum": CHANNELS},
            },
        ),
        (
            "shopper",
            {
                "requestId": UUID,
                "shopperKey": {"type": "string", "minLength": 1, "maxLength": 1000},
                "shopperKeyType": {"type": "string", "enum": ["QR_CODE", "PHONE_NUMBER"]},
                "storeId": ID_255,
                "timestamp": DATE_TIME,
            },
        ),
        (
            "purchases",
            {
                "requestId": UUID,
                "idempotentShoppingTripId": ID_255,
                "storeId": ID_255,
                "shoppingTrip.startTime": DATE_TIME,
                "shoppingTrip.endTime": DATE_TIME,
                "shoppingTrip.authEvents.[].id": UUID,
                "shoppingTrip.authEvents.[].location": {"type": "string", "enum": LOCATIONS},
                "shoppingTrip.authEvents.[].payloadType": {"type": "string", "enum": ["FINANCIAL", "SCAN_CODE"]},
                "shoppingTrip.authEvents.[].scanResult.id": {"type": "string", "maxLength": 255},
                "shoppingTrip.authEvents.[].scanResult.type": {
                    "type": "string",
                    "enum": ["SHOPPER", "ASSOCIATE", "CASH", "LOYALTY"],
                },
                "cartItems.[].id": ID_255,
                "cartItems.[].type": {"type": "string", "enum": ["SKU", "SCANCODE"]},
                "cartItems.[].quantity.value": {
                    "type": "string",
                    "pattern": models.DECIMAL_PATTERN,
                    "minLength": 1,
                    "maxLength": 10,
                },
                "cartItems.[].lineItemId": ID_255,
                "cartItems.[].externalIdentifiers.[].id": {"type": "string", "maxLength": 255},
                "shopperIdentity.id": {"type": "string", "maxLength": 255},
                "shopperDeviceId": {"type": "string", "maxLength": 255},
            },
        ),
    ],
)
def test_the_openapi_document_carries_every_key_field_constraint(
    openapi: dict[str, Any], route: str, expected: dict[str, dict[str, Any]]
) -> None:
    schema = request_schema(openapi, PATHS[route])  # type: ignore[index]

    published = {name: constraints(field(openapi, schema, name)) for name in expected}

    assert published == expected


@pytest.mark.parametrize(
    ("route", "required"),
    [
        (
            "scan",
            {
                "": ["requestId", "storeId", "scanEvent"],
                "scanEvent": ["id", "timestamp", "location", "value", "channel"],
            },
        ),
        (
            "identity_keys",
            {"": ["requestId", "identityKey", "storeId", "authEvent"], "authEvent": ["id", "timestamp", "location"]},
        ),
        ("shopper", {"": ["requestId", "shopperKey", "storeId", "timestamp"]}),
        (
            "purchases",
            {
                "": ["requestId", "idempotentShoppingTripId", "storeId", "shoppingTrip", "cartItems"],
                "shoppingTrip": ["startTime", "endTime", "authEvents"],
                "shoppingTrip.authEvents.[]": ["id", "timestamp", "location", "payloadType"],
                "cartItems.[]": ["id", "type", "quantity"],
                "cartItems.[].quantity": ["value", "unit"],
            },
        ),
    ],
)
def test_the_openapi_document_marks_the_required_fields_and_allows_unknown_ones(
    openapi: dict[str, Any], route: str, required: dict[str, list[str]]
) -> None:
    schema = request_schema(openapi, PATHS[route])  # type: ignore[index]

    objects = {name: field(openapi, schema, name) if name else schema for name in required}

    assert {name: sorted(o["required"]) for name, o in objects.items()} == {n: sorted(r) for n, r in required.items()}
    assert all(o.get("additionalProperties", True) is not False for o in objects.values())


def test_the_openapi_document_publishes_the_answers_and_their_enums(openapi: dict[str, Any]) -> None:
    def answer(path: str, status: str) -> dict[str, Any]:
        response = openapi["paths"][path]["post"]["responses"][status]
        return resolve(openapi, response["content"]["application/json"]["schema"])

    scan = answer(PATHS["scan"], "200")
    visitor = field(openapi, answer(PATHS["identity_keys"], "200"), "visitorDetails")

    assert constraints(scan["properties"]["type"])["enum"] == ["SHOPPER", "ASSOCIATE", "CASH", "LOYALTY"]
    assert constraints(scan["properties"]["action"])["enum"] == ["ACCEPT", "REJECT"]
    assert constraints(visitor["properties"]["type"])["enum"] == ["SHOPPER", "ASSOCIATE", "CASH_SHOPPER"]
    assert set(openapi["paths"][PATHS["identity_keys"]]["post"]["responses"]) >= {"200", "400", "401", "429", "500"}
    assert set(openapi["paths"][PATHS["shopper"]]["post"]["responses"]) >= {"201", "400", "404", "429", "500"}
    assert set(openapi["paths"][PATHS["purchases"]]["post"]["responses"]) >= {"201", "400", "429", "500"}
    for path in PATHS.values():
        assert answer(path, "400")["required"] == ["message"]
