"""Protobuf -> JSON the way TF Serving prints status and metadata (C++ ``MessageToJsonString``).

Options as TF Serving sets them: ``add_whitespace`` (1-space indent, a final
newline), ``always_print_fields_with_no_presence``, and optionally
``preserve_proto_field_names``. Fields come in field-number order, int64
values as strings, enums by name, ``Int64Value`` wrappers as their value.
"""

from __future__ import annotations

import base64
import math

from google.protobuf import descriptor
from google.protobuf.message import Message

from serving.server.json_write import quote

_FD = descriptor.FieldDescriptor
_QUOTED_INTEGERS = {_FD.TYPE_INT64, _FD.TYPE_UINT64, _FD.TYPE_SINT64}
_QUOTED_INTEGERS |= {_FD.TYPE_FIXED64, _FD.TYPE_SFIXED64}
_WRAPPERS = {
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
}


def message_to_json(message: Message, preserve_proto_field_names: bool = False) -> str:
    """C++ ``MessageToJsonString`` with TF Serving's REST options."""
    printer = _Printer(preserve_proto_field_names)
    printer.message(message, 0)
    printer.out.append("\n")
    return "".join(printer.out)


class _Printer:
    """Writes one message; ``depth`` is the indentation level of the current container."""

    def __init__(self, preserve_names: bool) -> None:
        self.preserve_names = preserve_names
        self.out: list[str] = []

    def newline(self, depth: int) -> None:
        self.out.append("\n" + " " * depth)

    def message(self, message: Message, depth: int) -> None:
        full_name = message.DESCRIPTOR.full_name
        if full_name in _WRAPPERS:
            self.scalar(message.DESCRIPTOR.fields_by_name["value"], message.value)
            return
        self.out.append("{")
        first = True
        fields = sorted(message.DESCRIPTOR.fields, key=lambda field: field.number)
        for field in fields:
            if not self.should_print(message, field):
                continue
            if not first:
                self.out.append(",")
            first = False
            self.newline(depth + 1)
            name = field.name if self.preserve_names else field.json_name
            self.out.append(quote(name) + ": ")
            self.field_value(message, field, depth + 1)
        if not first:
            self.newline(depth)
        self.out.append("}")

    @staticmethod
    def should_print(message: Message, field: descriptor.FieldDescriptor) -> bool:
        if field.is_repeated:
            return True  # always_print_fields_with_no_presence
        if field.has_presence:
            return message.HasField(field.name)
        return True

    def field_value(self, message: Message, field: descriptor.FieldDescriptor, depth: int):
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            self.out.append("{")
            entries = list(value.items())
            for index, (key, item) in enumerate(entries):
                if index:
                    self.out.append(",")
                self.newline(depth + 1)
                self.out.append(quote(str(key).lower() if isinstance(key, bool) else str(key)))
                self.out.append(": ")
                self.single(value_field, item, depth + 1)
            if entries:
                self.newline(depth)
            self.out.append("}")
        elif field.is_repeated:
            self.out.append("[")
            for index, item in enumerate(value):
                if index:
                    self.out.append(",")
                self.newline(depth + 1)
                self.single(field, item, depth + 1)
            if len(value):
                self.newline(depth)
            self.out.append("]")
        else:
            self.single(field, value, depth)

    def single(self, field: descriptor.FieldDescriptor, value, depth: int) -> None:
        if field.type == _FD.TYPE_MESSAGE:
            self.message(value, depth)
        else:
            self.scalar(field, value)

    def scalar(self, field: descriptor.FieldDescriptor, value) -> None:
        kind = field.type
        if kind == _FD.TYPE_ENUM:
            enum_value = field.enum_type.values_by_number.get(value)
            self.out.append(quote(enum_value.name) if enum_value else str(value))
        elif kind in _QUOTED_INTEGERS:
            self.out.append(f'"{value}"')
        elif kind == _FD.TYPE_BOOL:
            self.out.append("true" if value else "false")
        elif kind == _FD.TYPE_STRING:
            self.out.append(quote(value))
        elif kind == _FD.TYPE_BYTES:
            self.out.append(quote(base64.b64encode(value).decode("ascii")))
        elif kind in (_FD.TYPE_FLOAT, _FD.TYPE_DOUBLE):
            if math.isnan(value):
                self.out.append('"NaN"')
            elif math.isinf(value):
                self.out.append('"Infinity"' if value > 0 else '"-Infinity"')
            else:
                self.out.append(repr(float(value)).removesuffix(".0"))
        else:
            self.out.append(str(value))
