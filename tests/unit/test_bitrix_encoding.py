"""Batch command encoding (docs/bitrix24.md §1.2, §5.1) and error classification (§3)."""

import json
from pathlib import Path

import pytest

from app.bitrix import (
    ConfigError,
    NotExecuted,
    OperationTimeLimit,
    OutcomeUnknown,
    RateLimited,
    Ref,
    Refused,
    RejectedError,
    TransientError,
    Unavailable,
    classify,
    command,
)

RESPONSES = Path(__file__).parents[1] / "fixtures" / "responses.jsonl"


def test_values_are_encoded_once_so_plus_and_ampersand_survive() -> None:
    text = command(
        "crm.lead.add",
        {"fields": {"PHONE": [{"VALUE": "+49 170&1", "VALUE_TYPE": "WORK"}], "OPENED": True}},
    )
    assert text == (
        "crm.lead.add?fields[PHONE][0][VALUE]=%2B49%20170%261"
        "&fields[PHONE][0][VALUE_TYPE]=WORK&fields[OPENED]=Y"
    )


def test_trace_json_and_non_ascii_are_percent_encoded() -> None:
    text = command("crm.lead.add", {"fields": {"TRACE": '{"a":"ü #"}'}})
    assert text == "crm.lead.add?fields[TRACE]=%7B%22a%22%3A%22%C3%BC%20%23%22%7D"


def test_back_references_are_written_literally() -> None:
    text = command("crm.deal.add", {"fields": {"CONTACT_ID": Ref("contact")}})
    assert text == "crm.deal.add?fields[CONTACT_ID]=$result[contact]"
    assert str(Ref("list", ("0", "ID"))) == "$result[list][0][ID]"


def fixture(what: str) -> dict[str, object]:
    for line in RESPONSES.read_text().splitlines():
        row = json.loads(line)
        if what in row["what"]:
            return dict(row)
    raise LookupError(what)


@pytest.mark.parametrize(
    ("what", "cls"),
    [
        ("request limit exceeded", RateLimited),
        ("wrong webhook secret", ConfigError),
        ("without the crm scope", ConfigError),
        ("plain http", ConfigError),
        ("unknown method", ConfigError),
        ("crm.lead.get of a missing id", RejectedError),
        ("TRACE that is not JSON", RejectedError),
    ],
)
def test_recorded_errors_fall_in_their_class(what: str, cls: type) -> None:
    row = fixture(what)
    body = row["body"]
    assert isinstance(body, dict)
    error = classify(body["error"], body["error_description"], http_status=row["http"])
    assert type(error) is cls


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        ("OPERATION_TIME_LIMIT", 429, OperationTimeLimit),
        ("OPERATION_TIME_LIMIT", None, OperationTimeLimit),
        ("INTERNAL_SERVER_ERROR", 500, OutcomeUnknown),
        (None, 502, OutcomeUnknown),
        ("SOMETHING_NEW", 503, Unavailable),
        ("SOMETHING_NEW", 403, ConfigError),
        ("ERROR_CORE", 500, OutcomeUnknown),
        (None, 413, Refused),
        (None, 414, Refused),
        ("", None, RejectedError),
        ("ERROR_CORE", 400, RejectedError),
        ("ACCESS_DENIED", 403, ConfigError),
        ("PORTAL_DELETED", 410, ConfigError),
    ],
)
def test_code_first_then_status(code: str | None, status: int | None, cls: type) -> None:
    assert type(classify(code, "x", http_status=status)) is cls


@pytest.mark.parametrize("status", [200, 401, 403, 404, 413, 429, 500, 502, 503, 504])
def test_a_page_that_is_not_the_portals_json_is_never_a_configuration_verdict(
    status: int,
) -> None:
    """A proxy's or WAF's HTML page of any status is transient; 4xx and 503 ran nothing."""
    error = classify(None, "html", http_status=status, portal_json=False)
    assert isinstance(error, TransientError)
    if 400 <= status < 500 or status == 503:
        assert isinstance(error, NotExecuted)
    else:
        assert isinstance(error, OutcomeUnknown) and not error.settled


@pytest.mark.parametrize("status", [500, None])
def test_a_sql_error_is_an_unknown_outcome_the_portal_has_finished(status: int | None) -> None:
    """ERROR_CORE "SQL query error!" (HTTP 500, or inside a batch): the write may have been
    committed, and the answer came back, so a look-up can follow at once."""
    error = classify("ERROR_CORE", "SQL query error!", http_status=status)
    assert isinstance(error, OutcomeUnknown) and error.settled
    assert type(classify("ERROR_CORE", "Wrong ID", http_status=status and 400)) is RejectedError
