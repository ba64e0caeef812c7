"""PHP `json_encode` shapes for REST answers (docs/bitrix24.md §5.3): an empty map becomes `[]` and
a map keyed exactly "0".."n-1" becomes a list. Applied to REST bodies only, never to the control
API.
"""

from __future__ import annotations


def php_json(value: object) -> object:
    if isinstance(value, dict):
        if not value:
            return []
        converted = {str(k): php_json(v) for k, v in value.items()}
        if all(key == str(i) for i, key in enumerate(converted)):
            return list(converted.values())
        return converted
    if isinstance(value, list | tuple):
        return [php_json(v) for v in value]
    return value
