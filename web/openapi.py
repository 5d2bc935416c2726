"""GET /openapi.json: the intake described in OpenAPI 3.1, generated from the marshmallow schemas
of the event registry (apispec's marshmallow plugin), so the document cannot drift from what
the endpoint validates. Exactly what it accepts, not only the fields' JSON types:

- what marshmallow takes beyond a field's JSON type: a required id is trimmed before its length
  is checked (blank is missing), a boolean also takes marshmallow's words ("yes", "off", 1, 0…),
  an undocumented payload's id is a string or an integer;
- what the store refuses in every body (relay.storable): a NUL character in any string or key,
  a number a double does not hold;
- any other `type` is accepted (stored as unhandled, answered 200, so SparkLoop does not retry):
  the handled types are listed, not enumerated as the only ones.

JSON Schema cannot say two refusals, and the description says them: nesting deeper than
MAX_DEPTH levels and unpaired surrogates. tests/test_contract.py runs schemathesis against it.
"""

from __future__ import annotations

from functools import cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify
from marshmallow import Schema
from marshmallow import fields as ma
from marshmallow.validate import Length

from relay.storable import LARGEST_NUMBER, MAX_DEPTH
from schemas.events import EVENTS, MAX_TYPE_LENGTH
from schemas.fields import Identifier, TrimmedString

bp = Blueprint("openapi", __name__)


def _char_class(characters) -> str:
    """The body of a regex character class matching `characters`, as \\uXXXX escapes and ranges."""
    runs: list[list[int]] = []
    for code in sorted(map(ord, characters)):
        if runs and code == runs[-1][1] + 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return "".join(rf"\u{a:04x}" if a == b else rf"\u{a:04x}-\u{b:04x}" for a, b in runs)


NO_NUL = r"^[^\u0000]*$"
# What str.strip() removes (all of it in the Basic Multilingual Plane): a trimmed field that must
# not be empty must hold one character outside it.
WHITESPACE = _char_class(c for c in map(chr, range(0x10000)) if c.isspace())
NOT_BLANK = rf"^[^\u0000]*[^\u0000{WHITESPACE}][^\u0000]*$"
NUMBER_BOUNDS = {"minimum": -LARGEST_NUMBER, "maximum": LARGEST_NUMBER}
JSON_VALUE = "StorableJson"
UNHANDLED = "UnhandledEvent"
RESPONSE_SCHEMAS = ("Error", "FieldErrors")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


STORABLE_JSON = {
    "description": f"Any JSON value the store keeps: no NUL character in a string or key, numbers a "
    f"double holds, at most {MAX_DEPTH} levels deep (counted from the body).",
    "anyOf": [
        {"type": ["null", "boolean"]},
        {"type": "number", **NUMBER_BOUNDS},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": _ref(JSON_VALUE)},
        {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": _ref(JSON_VALUE)},
    ],
}


class ErrorSchema(Schema):
    error = ma.String(required=True, metadata={"description": "what is wrong, in a sentence"})


class FieldErrorsSchema(ErrorSchema):
    # Not an attribute named `fields`: that is marshmallow's own (the schema's declared fields).
    field_errors = ma.Dict(
        required=True,
        data_key="fields",
        metadata={
            "description": "where: field names (nested like the payload) → messages; `_body` for the "
            "body as a whole. Never quotes a value."
        },
    )
    event_id = ma.Integer(metadata={"description": "the stored invalid event, when it was stored"})


def marshmallow_reading(self, field: ma.Field, ret: dict, **_kwargs) -> dict:
    """What a field accepts beyond its JSON type, as marshmallow reads it (an apispec attribute
    function: merged into the field's property)."""
    null = ["null"] if field.allow_none else []
    if isinstance(field, Identifier):
        return {"type": ["string", "integer", *null]}
    if isinstance(field, ma.Boolean):
        ret.pop("type", None)
        words = sorted(field.truthy | field.falsy, key=repr)
        return {"enum": [True, False, *words, *([None] if null else [])]}
    if isinstance(field, TrimmedString) and any(isinstance(v, Length) and v.min == 1 for v in field.validators):
        return {"pattern": NOT_BLANK}
    return {}


def storable(schema: dict) -> dict:
    """Narrow one generated schema (in place) to what relay.storable lets through."""
    types = schema.get("type", [])
    types = {types} if isinstance(types, str) else set(types)
    if "string" in types and "pattern" not in schema:
        schema["pattern"] = NO_NUL
    if types & {"number", "integer"}:
        schema.update(NUMBER_BOUNDS)
    if "object" in types:
        schema["propertyNames"] = {"pattern": NO_NUL}
        if schema.get("additionalProperties") in (True, {}):
            schema["additionalProperties"] = _ref(JSON_VALUE)
    for child in [*schema.get("properties", {}).values(), *schema.get("anyOf", [])]:
        storable(child)
    return schema


def _unhandled(handled: list[str]) -> dict:
    return {
        "type": "object",
        "description": "A type Relay does not handle: stored as `unhandled` and answered 200, so that "
        "SparkLoop does not retry it (`relay events list --status unhandled` shows them).",
        "required": ["type"],
        "properties": {
            "type": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TYPE_LENGTH,
                "pattern": NOT_BLANK,
                "not": {"enum": handled},
            }
        },
        "propertyNames": {"pattern": NO_NUL},
        "additionalProperties": _ref(JSON_VALUE),
    }


def _error(description: str, schema: str = "Error") -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


@cache
def openapi_document() -> dict:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Relay",
        version="1",
        openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": "SparkLoop webhooks, delivered to Sprig and Spruce."},
    )
    assert plugin.converter is not None  # APISpec(plugins=[plugin]) has initialised it
    plugin.converter.add_attribute_function(marshmallow_reading)
    spec.components.security_scheme("SparkLoopToken", {"type": "apiKey", "in": "header", "name": "SparkLoop-Token"})
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.schema("FieldErrors", schema=FieldErrorsSchema)
    types_of: dict[str, list[str]] = {}  # component → the event types it validates (two may share one)
    for event_type, spec_entry in sorted(EVENTS.items()):
        name = type(spec_entry.schema).__name__.removesuffix("Schema")
        if name not in types_of:
            spec.components.schema(name, schema=spec_entry.schema)
        types_of.setdefault(name, []).append(event_type)
    handled = sorted(EVENTS)
    spec.path(
        path="/webhooks/sparkloop",
        operations={
            "post": {
                "summary": "Receive one SparkLoop webhook",
                "description": (
                    "Stored, then answered at once; delivery follows. The body is a JSON object whose `type` "
                    f"is any non-blank string of at most {MAX_TYPE_LENGTH} characters. Relay handles "
                    + ", ".join(f"`{t}`" for t in handled)
                    + ", each validated by its schema (400 when it fails, stored as invalid); any other type "
                    "is stored as unhandled and answered 200. Every body: no NUL character (`\\u0000`) in a "
                    "string or key, every number within a double's range, no unpaired surrogate "
                    f"(`\\ud800`), at most {MAX_DEPTH} levels of nesting below the body; otherwise 400, "
                    "nothing stored. Numbers are read by value, as JSON Schema reads them: `5.0` is the integer 5."
                ),
                "security": [{"SparkLoopToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"oneOf": [*(_ref(name) for name in types_of), _ref(UNHANDLED)]}}
                    },
                },
                "responses": {
                    "200": {"description": "stored (or a duplicate of a stored event); empty body"},
                    "400": _error("not JSON, not storable, or failing the event's schema", "FieldErrors"),
                    "401": _error("missing or wrong SparkLoop-Token"),
                    "413": _error("body over RELAY_MAX_BODY_BYTES"),
                    "503": _error("the store is unreachable: retry"),
                },
            }
        },
    )
    spec.path(
        path="/healthz",
        operations={"get": {"summary": "The process answers", "responses": {"200": {"description": "up"}}}},
    )
    spec.path(
        path="/readyz",
        operations={
            "get": {
                "summary": "The store and the broker answer",
                "responses": {"200": {"description": "ready"}, "503": {"description": "a dependency is unreachable"}},
            }
        },
    )
    document = spec.to_dict()
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        if name not in RESPONSE_SCHEMAS:
            storable(schema)
    for name, types in types_of.items():
        schemas[name]["properties"]["type"] = {"type": "string", "enum": types}
    schemas[UNHANDLED] = _unhandled(handled)
    schemas[JSON_VALUE] = STORABLE_JSON
    return document


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(openapi_document())
