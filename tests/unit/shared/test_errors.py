from shared.errors import flatten_errors


def test_webargs_location_level_is_flattened_away():
    assert flatten_errors({"json": {"name": ["Missing data for required field."]}}) == {
        "name": ["Missing data for required field."]}


def test_nested_fields_are_named_with_dots():
    messages = {"json": {"range": {"unit": ["Unknown unit."]}, "contacts": {0: {"email": ["Not a valid email."]}}}}
    assert flatten_errors(messages) == {"range.unit": ["Unknown unit."], "contacts.0.email": ["Not a valid email."]}


def test_query_errors_are_named_by_parameter():
    assert flatten_errors({"query": {"page_size": ["Must be at most 500."]}}) == {
        "page_size": ["Must be at most 500."]}


def test_schema_level_errors_keep_their_key():
    assert flatten_errors({"json": {"_schema": ["Invalid input type."]}}) == {"_schema": ["Invalid input type."]}
