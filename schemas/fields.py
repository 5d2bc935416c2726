"""Marshmallow building blocks shared by the SparkLoop schemas.

Error messages are marshmallow's defaults or fixed strings: none of them quotes the input,
because payloads carry personal data and validation errors are stored and shown.
"""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields


class OpenSchema(Schema):
    """SparkLoop adds fields without notice, so unknown keys are accepted and kept."""

    class Meta:
        unknown = INCLUDE


class TrimmedString(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


class NormalisedEmail(fields.Email):
    """A validated email address, trimmed and lower-cased before validation."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip().lower()


class LooseEmail(TrimmedString):
    """An email in an undocumented payload: normalised, but its format is not enforced."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).lower()


class StrictInteger(fields.Integer):
    """Only JSON integers; marshmallow's Number already refuses booleans."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)


class Identifier(fields.Field):
    """An id of unknown type in an undocumented payload: a string (trimmed) or an integer."""

    # Not a ClassVar: marshmallow declares it on Field without ClassVar, and only reads it.
    default_error_messages = {"invalid": "Not a valid identifier (string or integer)."}  # noqa: RUF012

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self.make_error("invalid")
