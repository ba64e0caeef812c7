"""`b24-form-gateway check`: the webhook, its scope, and every field the forms write, asked of the
emulator as a real server (and of the built-in one in sandbox mode); exit 0 when all is well, 1
when a check fails, 2 for bad settings. The webhook URL is never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.main import cli
from tests.conftest import PORTAL_SECRET, Portal

Check = Callable[..., tuple[int, str]]

FORMS = """
[forms.contact]
entity = "lead"
[forms.contact.defaults]
SOURCE_ID = "WEB"
[forms.contact.fields]
city = "UF_CRM_CITY"
district = "UF_CRM_DISTRICT"

[forms.order]
entity = "deal"
[forms.order.defaults]
CATEGORY_ID = 0
ASSIGNED_BY_ID = 1
[forms.order.fields]
budget = "OPPORTUNITY"
"""


@pytest.fixture
def check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Check:
    """Run `check` in-process with these settings (and no .env); returns (exit code, output)."""
    for name in ("B24_WEBHOOK_URL", "FORMS_FILE", "ADMIN_TOKEN", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*, webhook: str | None, forms: str | None = FORMS) -> tuple[int, str]:
        if webhook is None:
            monkeypatch.delenv("B24_WEBHOOK_URL", raising=False)
        else:
            monkeypatch.setenv("B24_WEBHOOK_URL", webhook)
        if forms is None:
            monkeypatch.delenv("FORMS_FILE", raising=False)
        else:
            (tmp_path / "forms.toml").write_text(forms)
            monkeypatch.setenv("FORMS_FILE", str(tmp_path / "forms.toml"))
        capsys.readouterr()
        code = cli(["check"])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


@pytest.fixture
def custom_fields(portal: Portal) -> Iterator[Portal]:
    """The portal has UF_CRM_CITY on leads; the config outlives the portal's reset."""
    portal.control("config", {"user_fields": {"lead": ["UF_CRM_CITY"]}})
    try:
        yield portal
    finally:
        portal.control(
            "config",
            {"user_fields": {}, "required_fields": {}, "scopes": ["crm", "user", "basic"]},
        )


def lines_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_a_mapped_field_missing_on_the_portal_fails_the_check_naming_it(
    custom_fields: Portal, check: Check
) -> None:
    code, out = check(webhook=custom_fields.webhook_url)
    assert code == 1
    [missing] = lines_with(out, "UF_CRM_DISTRICT")
    assert missing.startswith("[FAIL]") and "form contact -> lead" in missing
    assert "UF_CRM_CITY" not in missing
    assert lines_with(out, "webhook: works")[0].startswith("[ok]")
    assert lines_with(out, "crm.lead.fields")[0].startswith("[ok]")
    for entity in ("deal", "contact", "company"):  # a deal form needs all three
        assert lines_with(out, f"crm.{entity}.fields")[0].startswith("[ok]")
    assert lines_with(out, "form order -> deal")[0].startswith("[ok]")
    assert out.splitlines()[-1] == "FAILED: 1 check"
    assert "127.0.0.1" in out and PORTAL_SECRET not in out and "/rest/" not in out


def test_everything_in_place_passes_with_exit_0(custom_fields: Portal, check: Check) -> None:
    forms = FORMS.replace('district = "UF_CRM_DISTRICT"\n', "")
    code, out = check(webhook=custom_fields.webhook_url, forms=forms)
    assert code == 0, out
    assert not lines_with(out, "[FAIL]") and not lines_with(out, "[warn]")
    assert out.splitlines()[-1] == "all passed"
    requests = custom_fields.state()["requests"]
    assert [r["method"] for r in requests] == [
        "profile",
        "scope",
        "crm.company.fields",
        "crm.contact.fields",
        "crm.deal.fields",
        "crm.lead.fields",
    ]


def test_a_required_field_the_form_does_not_always_send_is_reported(
    custom_fields: Portal, check: Check
) -> None:
    forms = FORMS.replace('district = "UF_CRM_DISTRICT"\n', "")
    custom_fields.control("config", {"required_fields": {"lead": ["UF_CRM_CITY", "COMMENTS"]}})
    code, out = check(webhook=custom_fields.webhook_url, forms=forms)
    assert code == 1
    [comments] = lines_with(out, "COMMENTS")
    assert comments.startswith("[FAIL]") and "form contact -> lead" in comments
    [city] = lines_with(out, "UF_CRM_CITY")
    assert city.startswith("[warn]")  # custom fields: enforced only by a portal setting (§6.1)

    # A form that always sends them: a default, and a mapped field the form requires.
    fixed = forms.replace(
        '[forms.contact.defaults]\nSOURCE_ID = "WEB"\n',
        'required = ["city"]\n[forms.contact.defaults]\nSOURCE_ID = "WEB"\nCOMMENTS = "web"\n',
    )
    code, out = check(webhook=custom_fields.webhook_url, forms=fixed)
    assert code == 0, out


def test_a_wrong_secret_reports_that_the_webhook_does_not_work(
    custom_fields: Portal, check: Check
) -> None:
    wrong = custom_fields.webhook_url.replace(PORTAL_SECRET, "not-the-secret")
    code, out = check(webhook=wrong)
    assert code == 1
    [webhook] = lines_with(out, "webhook:")
    assert webhook.startswith("[FAIL]") and "does not work" in webhook
    assert "INVALID_CREDENTIALS" in webhook and "B24_WEBHOOK_URL" in webhook
    assert lines_with(out, "[skip]")
    assert "not-the-secret" not in out


def test_a_webhook_without_the_crm_scope_is_reported(custom_fields: Portal, check: Check) -> None:
    custom_fields.control("config", {"scopes": ["user"]})
    code, out = check(webhook=custom_fields.webhook_url)
    assert code == 1
    [scope] = lines_with(out, "scope:")
    assert scope.startswith("[FAIL]") and "lacks `crm`" in scope and "user" in scope
    assert not lines_with(out, ".fields:")


def test_an_unreachable_portal_fails_the_check(check: Check) -> None:
    code, out = check(webhook="http://127.0.0.1:9/rest/1/some-secret/")
    assert code == 1
    assert lines_with(out, "webhook:")[0].startswith("[FAIL]")
    assert "some-secret" not in out


def test_bad_settings_or_forms_exit_2_naming_them(check: Check) -> None:
    code, out = check(webhook="https://portal.example/rest/1/")
    assert code == 2 and "B24_WEBHOOK_URL" in out
    code, out = check(webhook=None, forms='[forms.x]\nentity = "invoice"\n')
    assert code == 2 and "forms.toml" in out and "[forms.x]" in out and "entity" in out


def test_sandbox_mode_checks_the_built_in_emulator_and_says_so(check: Check) -> None:
    code, out = check(webhook=None)
    assert lines_with(out, "target:")[0].startswith("[ok]") and "sandbox" in out
    # The sandbox knows the standard fields, not the portal's custom ones: a warning only.
    assert code == 0, out
    [custom] = lines_with(out, "UF_CRM_CITY")
    assert custom.startswith("[warn]") and "sandbox" in custom


def test_the_installed_command_runs_in_an_empty_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B24_", "FORMS_FILE"))}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "b24-form-gateway"), "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sandbox" in result.stdout and result.stdout.endswith("all passed\n")
    assert not (tmp_path / "data").exists()  # a check touches no database
