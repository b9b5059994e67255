import marshmallow as ma
import pytest

from shared.schemas import (
    LONE_SURROGATE,
    NUL_CHARACTER,
    NoControlCharacters,
    Schema,
    text_problem,
    unstorable_text,
)


class Contact(Schema):
    name = ma.fields.String(required=True)


class Organization(Schema):
    name = ma.fields.String(required=True)
    kind = ma.fields.String(validate=ma.validate.OneOf(("enterprise", "university")))
    contacts = ma.fields.List(ma.fields.Nested(Contact))
    tags = ma.fields.List(ma.fields.String())
    code = ma.fields.String(data_key="creditCode")


def errors_of(schema: ma.Schema, data) -> dict:
    with pytest.raises(ma.ValidationError) as raised:
        schema.load(data)
    return raised.value.normalized_messages()


def test_text_a_database_can_store_has_no_problem():
    assert text_problem("淄博示例氢能材料有限公司 ℃ 😀\n\t") is None


def test_nul_and_lone_surrogates_cannot_be_stored():
    assert text_problem("a\x00b") == NUL_CHARACTER
    assert text_problem("\ud800") == LONE_SURROGATE
    assert text_problem("x\udfff") == LONE_SURROGATE


def test_every_unstorable_string_is_named_by_its_dotted_path():
    data = {"name": "ok", "contacts": [{"name": "ok"}, {"name": "b\x00"}], "range": {"unit": "\ud800"}}
    assert unstorable_text(data) == {"contacts.1.name": [NUL_CHARACTER], "range.unit": [LONE_SURROGATE]}


def test_keys_are_checked_too():
    assert unstorable_text({"meta": {"a\x00": 1}}) == {"meta.a\x00": [NUL_CHARACTER]}


def test_a_string_on_its_own_is_named_schema():
    assert unstorable_text("\x00") == {"_schema": [NUL_CHARACTER]}


def test_deeply_nested_input_does_not_exhaust_the_stack():
    data: list = ["\x00"]
    for _ in range(50_000):
        data = [data]
    assert list(unstorable_text(data).values()) == [[NUL_CHARACTER]]


def test_every_schema_refuses_unstorable_text_naming_the_field():
    assert errors_of(Organization(), {"name": "示例\x00公司"}) == {"name": [NUL_CHARACTER]}
    assert errors_of(Organization(), {"name": "ok", "tags": ["a", "\ud800"]}) == {"tags.1": [LONE_SURROGATE]}


def test_the_field_is_named_as_the_client_sent_it():
    assert errors_of(Organization(), {"name": "ok", "creditCode": "9\x00"}) == {"creditCode": [NUL_CHARACTER]}


def test_nested_schemas_name_their_own_fields_once():
    errors = errors_of(Organization(), {"name": "ok", "contacts": [{"name": "ok"}, {"name": "\x00"}]})
    assert errors == {"contacts": {1: {"name": [NUL_CHARACTER]}}}


def test_other_bad_fields_are_named_at_the_same_time():
    errors = errors_of(Organization(), {"name": "\x00", "kind": "company"})
    assert set(errors) == {"name", "kind"}


def test_a_field_that_failed_its_own_validation_is_not_named_twice():
    schema = Organization.from_dict({"name": ma.fields.String(validate=NoControlCharacters())})()
    assert errors_of(schema, {"name": "a\x00"}) == {"name": ["must not contain control characters"]}


def test_a_field_whose_text_is_not_stored_may_be_left_unchecked():
    class Filter(Schema):
        UNSTORED_TEXT_FIELDS = ("organization_id",)

        organization_id = ma.fields.String()
        q = ma.fields.String()

    assert Filter().load({"organization_id": "x\x00"}) == {"organization_id": "x\x00"}
    assert errors_of(Filter(), {"organization_id": "x\x00", "q": "\x00"}) == {"q": [NUL_CHARACTER]}


def test_a_nested_plain_schema_is_checked_by_its_parent():
    class Plain(ma.Schema):
        name = ma.fields.String()

    schema = Organization.from_dict({"name": ma.fields.String(), "plain": ma.fields.Nested(Plain)})()
    assert errors_of(schema, {"plain": {"name": "\x00"}}) == {"plain.name": [NUL_CHARACTER]}


def test_valid_text_loads_unchanged():
    data = {"name": "示例大学", "contacts": [{"name": "王工"}], "tags": ["氢能"], "creditCode": "91370300"}
    assert Organization().load(data) == {**{k: v for k, v in data.items() if k != "creditCode"},
                                         "code": "91370300"}


def test_control_characters_are_refused_except_those_allowed():
    single_line = NoControlCharacters(error="one line only")
    multi_line = NoControlCharacters(allow="\t\n\r")
    assert single_line("压力表 A-1") == "压力表 A-1"
    assert multi_line("第一行\n第二行\t完") == "第一行\n第二行\t完"
    for bad in ("a\nb", "a\tb", "a\x00b", "a\x07b"):
        with pytest.raises(ma.ValidationError, match="one line only"):
            single_line(bad)
    with pytest.raises(ma.ValidationError):
        multi_line("bell\x07")
