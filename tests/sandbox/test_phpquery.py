"""PHP `parse_str` semantics (docs/bitrix24.md §1.2) and PHP `json_encode` shapes (§5.3)."""

from __future__ import annotations

from typing import Any

import pytest

from app.sandbox.phpjson import php_json
from app.sandbox.phpquery import parse_pairs, parse_str


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a=1&b=2", {"a": "1", "b": "2"}),
        # A raw + is a space; only %2B is a plus: the phone number trap of §1.2.
        ("phone=+79991234567", {"phone": " 79991234567"}),
        ("phone=%2B79991234567", {"phone": "+79991234567"}),
        ("t=a%20b+c", {"t": "a b c"}),
        ("x=a%26b%3Dc%23d", {"x": "a&b=c#d"}),
        ("name=%D0%90%D0%BD%D0%BD%D0%B0", {"name": "Анна"}),
        ("flag", {"flag": ""}),
        ("&&a=1&", {"a": "1"}),
        ("a=1&a=2", {"a": "2"}),
        ("  a=1", {"a": "1"}),
        ("=1&[x]=2", {}),
    ],
)
def test_scalars_decode_like_php(query: str, expected: dict[str, Any]) -> None:
    assert parse_str(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("fields[TITLE]=Shop", {"fields": {"TITLE": "Shop"}}),
        (
            "fields[PHONE][0][VALUE]=%2B4917&fields[PHONE][0][VALUE_TYPE]=WORK"
            "&fields[PHONE][1][VALUE]=555",
            {
                "fields": {
                    "PHONE": {
                        "0": {"VALUE": "+4917", "VALUE_TYPE": "WORK"},
                        "1": {"VALUE": "555"},
                    }
                }
            },
        ),
        ("a[b][c]=1&a[b][d]=2", {"a": {"b": {"c": "1", "d": "2"}}}),
        ("a[]=x&a[]=y", {"a": {"0": "x", "1": "y"}}),
        ("a[5]=x&a[]=y", {"a": {"5": "x", "6": "y"}}),
        ("a[x]=1&a[]=2", {"a": {"x": "1", "0": "2"}}),
        ("a[][n]=1&a[][n]=2", {"a": {"0": {"n": "1"}, "1": {"n": "2"}}}),
        (
            "ENTITIES[0][TYPE]=DEAL&ENTITIES[0][ID]=7",
            {"ENTITIES": {"0": {"TYPE": "DEAL", "ID": "7"}}},
        ),
        # Later scalars replace arrays and arrays replace scalars, as in PHP.
        ("a=1&a[b]=2", {"a": {"b": "2"}}),
        ("a[b]=2&a=1", {"a": "1"}),
        # Encoded brackets are decoded before the name is split.
        ("a%5Bb%5D=1", {"a": {"b": "1"}}),
    ],
)
def test_brackets_nest_and_append(query: str, expected: dict[str, Any]) -> None:
    assert parse_str(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # Dots and spaces in the base name become underscores; inside brackets they stay.
        ("a.b=1&c d=2", {"a_b": "1", "c_d": "2"}),
        ("a[b.c d]=1", {"a": {"b.c d": "1"}}),
        # An unterminated first bracket is part of the name; a later one is dropped.
        ("a[b=1", {"a_b": "1"}),
        ("a[b][c=1", {"a": {"b": "1"}}),
        # Text after a closing bracket that does not open another one is ignored.
        ("a[b]c=1", {"a": {"b": "1"}}),
    ],
)
def test_odd_names_are_mangled_like_php(query: str, expected: dict[str, Any]) -> None:
    assert parse_str(query) == expected


def test_decoded_pairs_from_multipart_nest_the_same_way() -> None:
    pairs = [("fields[TITLE]", "a+b"), ("fields[EMAIL][0][VALUE]", "x@y.z"), ("list[]", "1")]
    assert parse_pairs(pairs) == {
        "fields": {"TITLE": "a+b", "EMAIL": {"0": {"VALUE": "x@y.z"}}},
        "list": {"0": "1"},
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, []),
        ({"0": "a", "1": "b"}, ["a", "b"]),
        ({"1": "b", "0": "a"}, {"1": "b", "0": "a"}),
        ({"0": "a", "2": "c"}, {"0": "a", "2": "c"}),
        (
            {"result": {}, "result_error": {"0": {"error": ""}}},
            {"result": [], "result_error": [{"error": ""}]},
        ),
        ({"CONTACT": [1, 2]}, {"CONTACT": [1, 2]}),
        ([{}, {"x": {}}], [[], {"x": []}]),
        (5, 5),
    ],
)
def test_php_json_turns_empty_and_index_keyed_maps_into_lists(value: Any, expected: Any) -> None:
    assert php_json(value) == expected
