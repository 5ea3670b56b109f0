from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushgate.domain.errors import InvalidInput
from pushgate.domain.templates import Placeholder, parse_template, validate_trackers


def test_reference_example_renders() -> None:
    template = parse_template("{email} has signed up from {country}", ["email", "country"])
    assert template.placeholders == ("email", "country")
    rendered = template.render({"email": "ann@example.com", "country": "NL"})
    assert rendered == "ann@example.com has signed up from NL"


def test_double_braces_are_literal_braces() -> None:
    template = parse_template("{{x}} {email} }}", ["email"])
    assert template.render({"email": "a"}) == "{x} a }"


@pytest.mark.parametrize(
    "message",
    ["{0.__class__}", "{email!r}", "{email:>10}", "{email.__dict__}", "{}", "{ email }"],
)
def test_format_spec_tricks_are_unknown_placeholders(message: str) -> None:
    with pytest.raises(InvalidInput, match="not one of the event's trackers"):
        parse_template(message, ["email"])


@pytest.mark.parametrize("message", ["{email", "hello {", "a } b", "{a{email}}"])
def test_unbalanced_braces_are_rejected_with_a_hint(message: str) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        parse_template(message, ["email", "a"])
    assert "literal brace" in excinfo.value.message or "not one of" in excinfo.value.message


def test_missing_value_names_the_tracker() -> None:
    template = parse_template("{email} from {country}", ["email", "country"])
    with pytest.raises(InvalidInput, match="country"):
        template.render({"email": "a"})


def test_unused_trackers_are_not_required() -> None:
    template = parse_template("hello {email}", ["email", "country"])
    assert template.render({"email": "a"}) == "hello a"


@pytest.mark.parametrize("names", [["bad name"], ["a{b}"], [""], ["x" * 65], ["a", "a"]])
def test_invalid_tracker_names(names: list[str]) -> None:
    with pytest.raises(InvalidInput):
        validate_trackers(names)


@given(value=st.text(max_size=200))
def test_values_are_inserted_verbatim(value: str) -> None:
    template = parse_template("<{email}>", ["email"])
    assert template.render({"email": value}) == f"<{value}>"


@given(text=st.text(alphabet="{}ab_", max_size=30))
def test_parser_never_crashes_unexpectedly(text: str) -> None:
    try:
        template = parse_template(text, ["a", "b"])
    except InvalidInput:
        return
    rendered = template.render({"a": "A", "b": "B"})
    names = [part.name for part in template.parts if isinstance(part, Placeholder)]
    assert set(names) <= {"a", "b"}
    literal = "".join(part for part in template.parts if isinstance(part, str))
    assert len(rendered) == len(literal) + len(names)
