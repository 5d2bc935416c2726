"""GET /openapi.json: the intake described in OpenAPI 3, generated from the marshmallow schemas
of the event registry (apispec's marshmallow plugin), so the document cannot drift from what
the endpoint validates."""
from __future__ import annotations

from functools import cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify
from marshmallow import Schema
from marshmallow import fields as ma

from relay.storable import MAX_DEPTH
from schemas.events import EVENTS

bp = Blueprint("openapi", __name__)


class ErrorSchema(Schema):
    error = ma.String(required=True, metadata={"description": "what is wrong, in a sentence"})


class FieldErrorsSchema(ErrorSchema):
    fields = ma.Dict(required=True, metadata={
        "description": "where: field names (nested like the payload) → messages; `_body` for the "
                       "body as a whole. Never quotes a value."})
    event_id = ma.Integer(metadata={"description": "the stored invalid event, when it was stored"})


def _error(description: str, schema: str = "Error") -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


@cache
def openapi_document() -> dict:
    spec = APISpec(title="Relay", version="1", openapi_version="3.0.3", plugins=[MarshmallowPlugin()],
                   info={"description": "SparkLoop webhooks, delivered to Sprig and Spruce."})
    spec.components.security_scheme("SparkLoopToken", {"type": "apiKey", "in": "header", "name": "SparkLoop-Token"})
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.schema("FieldErrors", schema=FieldErrorsSchema)
    names, registered = {}, {}
    for event_type, spec_entry in sorted(EVENTS.items()):
        schema_class = type(spec_entry.schema)
        if schema_class not in registered:  # two types may share one schema
            registered[schema_class] = schema_class.__name__.removesuffix("Schema")
            spec.components.schema(registered[schema_class], schema=spec_entry.schema)
        names[event_type] = f"#/components/schemas/{registered[schema_class]}"
    spec.path(path="/webhooks/sparkloop", operations={"post": {
        "summary": "Receive one SparkLoop webhook",
        "description": ("Stored, then answered at once; delivery follows. An unknown `type` is stored "
                        f"as unhandled and answered 200. JSON nested deeper than {MAX_DEPTH} levels, NaN, "
                        "Infinity, NUL characters and unpaired surrogates are refused."),
        "security": [{"SparkLoopToken": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "oneOf": [{"$ref": ref} for ref in names.values()],
            "discriminator": {"propertyName": "type", "mapping": names}}}}},
        "responses": {
            "200": {"description": "stored (or a duplicate of a stored event); empty body"},
            "400": _error("not JSON, not storable, or failing the event's schema", "FieldErrors"),
            "401": _error("missing or wrong SparkLoop-Token"),
            "413": _error("body over RELAY_MAX_BODY_BYTES"),
            "503": _error("the store is unreachable: retry"),
        },
    }})
    spec.path(path="/healthz", operations={"get": {"summary": "The process answers",
                                                   "responses": {"200": {"description": "up"}}}})
    spec.path(path="/readyz", operations={"get": {"summary": "The store and the broker answer", "responses": {
        "200": {"description": "ready"}, "503": {"description": "a dependency is unreachable"}}}})
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(openapi_document())
