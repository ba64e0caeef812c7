"""How many submissions a pass of chains takes: room for the next pass's look-ups."""

from __future__ import annotations

import pytest

from app.delivery.worker import pass_size


@pytest.mark.parametrize(
    ("most", "creates", "lookups", "size"),
    [
        (50, 5.0, 6 / 50, 48),  # 240 commands: the last request keeps 10 for 6 look-ups
        (50, 1.0, 0.0, 50),  # leads fill requests exactly; nothing to leave room for
        (9, 5.0, 2 / 9, 9),  # 45 commands, room 5 for 2
        (50, 3.0, 0.1, 48),  # 144 commands leave 6 for the 5 of 48 submissions
    ],
)
def test_pass_size_leaves_room_for_the_next_pass_look_ups(
    most: int, creates: float, lookups: float, size: int
) -> None:
    assert pass_size(most, creates_per_job=creates, lookups_per_job=lookups) == size
