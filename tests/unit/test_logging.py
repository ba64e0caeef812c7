"""Log lines: JSON without uvicorn's coloured copy of its message, nor any ANSI code."""

from __future__ import annotations

import json
import logging

import pytest

from app.observability import configure_logging


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_uvicorn_lines_carry_no_colour_codes_nor_uvicorn_only_keys(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(fmt=fmt)
    # A uvicorn.Config built by an earlier test may have disabled or raised uvicorn's logger.
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.disabled = False
    uvicorn_error.setLevel(logging.INFO)
    try:
        # What uvicorn logs when it starts: its message, and the same with ANSI colours.
        logging.getLogger("uvicorn.error").info(
            "Started server process [%d]",
            42,
            extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"},
        )
    finally:
        logging.getLogger().handlers[:] = []
    line = capsys.readouterr().err.strip()
    assert "\x1b" not in line and "\\u001b" not in line
    assert "color_message" not in line
    if fmt == "json":
        assert json.loads(line)["event"] == "Started server process [42]"
