"""Per-method injected failures: one step of a batch fails as the portal would answer."""

from app.sandbox import Emulator, EmulatorConfig


def test_an_injected_method_failure_is_counted_down_and_applies_inside_batch() -> None:
    emulator = Emulator(EmulatorConfig(rate_per_second=0))
    emulator.update_faults(
        {
            "fail_methods": {
                "crm.deal.add": {
                    "count": 1,
                    "status": 429,
                    "error": "OPERATION_TIME_LIMIT",
                    "description": "Method is blocked due to operation time limit.",
                }
            }
        }
    )
    status, body = emulator.handle(
        "batch",
        {
            "halt": "1",
            "cmd": {
                "c": "crm.contact.add?fields[NAME]=A",
                "d": "crm.deal.add?fields[CONTACT_ID]=$result[c]",
            },
        },
    )
    assert status == 200
    outer = body["result"]
    assert isinstance(outer, dict)
    assert outer["result"] == {"c": 1}
    assert outer["result_error"] == {
        "d": {
            "error": "OPERATION_TIME_LIMIT",
            "error_description": "Method is blocked due to operation time limit.",
        }
    }
    status, body = emulator.handle("crm.deal.add", {"fields": {"TITLE": "x"}})
    assert (status, body["result"]) == (200, 1)
