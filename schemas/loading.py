"""A schema's load, for payloads that pass it, without marshmallow's machinery around each field.

`Schema.load` costs the intake more than anything else it does in Python per webhook: an error
store, a closure and a call chain per field, an `And` of validators made for every value. Most
payloads are valid, and for a valid payload what a load does comes down to: each declared field's
`_deserialize` and validators, nested schemas the same way, unknown keys kept (INCLUDE). A
`Loader` does that and only that, with the schema's own fields (their `_deserialize`, their
validators), so its result is the one `Schema.load` returns. At the first value it is not sure
of (a field missing or null that may not be, a value a field refuses, anything it does not
handle) it gives up and returns None; the caller then runs `Schema.load`, whose errors are the
ones Relay has always answered and stored. So it decides nothing marshmallow would decide
otherwise: a payload is valid exactly when marshmallow says so.

Schemas with hooks (pre_load, post_load, validates, validates_schema), `many`, or fields it
does not know how to take apart are loaded by marshmallow throughout (the loader declines them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import EXCLUDE, INCLUDE, Schema, ValidationError, fields, missing
from marshmallow.validate import Validator

Load = Callable[[Any], "dict | None"]
_DECLINED = object()  # a field the loader cannot take apart: the whole schema goes to marshmallow


def loader(schema: Schema) -> Load:
    """What to call instead of `schema.load(payload)`: the same dict for a valid payload, None
    when marshmallow must decide (then call `schema.load`)."""
    load = _compile(schema)
    return load if load is not None else _never


def _never(_data) -> None:
    return None


def _compile(schema: Schema) -> Load | None:
    if schema.many or schema.partial or any(schema._hooks.values()) or schema.unknown not in (INCLUDE, EXCLUDE):
        return None
    steps = []
    for attr_name, field in schema.load_fields.items():
        step = _step(field)
        if step is _DECLINED:
            return None
        key = field.data_key if field.data_key is not None else attr_name
        steps.append((key, field.attribute or attr_name, field, step))
    if any("." in attribute for _key, attribute, _field, _step in steps):
        return None  # marshmallow sets dotted attributes as nested dicts
    declared = frozenset(key for key, _attribute, _field, _step in steps)
    keep_unknown = schema.unknown == INCLUDE

    def load(data):
        if not isinstance(data, dict):
            return None
        loaded = {}
        for key, attribute, field, step in steps:
            value = data.get(key, missing)
            if value is missing:
                if field.required or field.load_default is not missing:
                    return None
                continue
            if value is None:
                if not field.allow_none:
                    return None
                loaded[attribute] = None
                continue
            value = step(value, key, data)
            if value is _GAVE_UP:
                return None
            loaded[attribute] = value
        if keep_unknown:
            for key, value in data.items():
                if key not in declared:
                    loaded[key] = value
        return loaded

    return load


_GAVE_UP = object()


def _step(field: fields.Field):
    """How to load a present, non-null value of `field`: its own `_deserialize` and validators
    (what `Field.deserialize` does once missing and null values are dealt with)."""
    kind = type(field)
    generic = (
        kind.deserialize is fields.Field.deserialize
        and kind._validate_missing is fields.Field._validate_missing
        and kind._validate is fields.Field._validate
        and not field.pre_load
    )
    if not generic:
        return _DECLINED
    validators = tuple(field.validators)
    if isinstance(field, fields.Nested):
        nested = _nested(field)
        if nested is None:
            return _DECLINED

        def load_nested(value, _key, _data):
            loaded = nested(value)
            if loaded is None or not _valid(validators, loaded):
                return _GAVE_UP
            return loaded

        return load_nested
    deserialize = field._deserialize

    def load_value(value, key, data):
        try:
            value = deserialize(value, key, data)
        except ValidationError:
            return _GAVE_UP
        return value if _valid(validators, value) else _GAVE_UP

    return load_value


def _nested(field: fields.Nested) -> Load | None:
    if field.many or field.only or field.exclude:
        return None
    schema = field.schema
    if field.unknown is not None and field.unknown != schema.unknown:
        return None
    return _compile(schema)


def _valid(validators: tuple, value) -> bool:
    """As marshmallow's `And` of them: every validator passes (raises nothing; a plain function
    may also refuse by returning False)."""
    for validator in validators:
        try:
            result = validator(value)
        except ValidationError:
            return False
        if result is False and not isinstance(validator, Validator):
            return False
    return True
