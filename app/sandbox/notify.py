"""`im.notify.system.add` (docs/bitrix24.md §13): system notifications to portal users, kept
in the emulator's store so tests and the viewer can show what the gateway told people.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.sandbox.errors import RestError
from app.sandbox.params import Params, as_int, php_string

# im.notify.system.add answers these with HTTP 400 (docs: "HTTP Status: 400, 403").
_USER_ID_EMPTY = ("USER_ID_EMPTY", "User ID can't be empty")
_MESSAGE_EMPTY = ("MESSAGE_EMPTY", "Message can't be empty")


@dataclass
class Notification:
    id: int
    user_id: int
    message: str
    message_out: str | None
    tag: str | None
    sub_tag: str | None
    created_at: str

    def snapshot(self) -> dict[str, object]:
        return {
            "ID": self.id,
            "USER_ID": self.user_id,
            "MESSAGE": self.message,
            "MESSAGE_OUT": self.message_out,
            "TAG": self.tag,
            "SUB_TAG": self.sub_tag,
            "DATE_CREATE": self.created_at,
        }


def system_add(
    notifications: list[Notification],
    params: Params,
    *,
    allocate_id: Callable[[], int],
    created_at: str,
) -> int:
    """Add one notification and return its id. A TAG already in use by the same user's
    notifications replaces them (the docs: "other notifications will be removed")."""
    # Parameter names in any case: the im module's REST handlers upper-case the keys first
    # (the docs write them in upper case; lower-case callers are not refused) [OURS].
    upper = {str(key).upper(): value for key, value in params.items()}
    user_id = as_int(upper.get("USER_ID"))
    if user_id is None or user_id <= 0:
        raise RestError(400, *_USER_ID_EMPTY)
    message = php_string(upper.get("MESSAGE")).strip()
    if not message:
        raise RestError(400, *_MESSAGE_EMPTY)
    tag = php_string(upper.get("TAG")) or None
    if tag is not None:
        notifications[:] = [n for n in notifications if not (n.user_id == user_id and n.tag == tag)]
    new_id = allocate_id()
    notifications.append(
        Notification(
            id=new_id,
            user_id=user_id,
            message=message,
            message_out=php_string(upper.get("MESSAGE_OUT")) or None,
            tag=tag,
            sub_tag=php_string(upper.get("SUB_TAG")) or None,
            created_at=created_at,
        )
    )
    return new_id
