"""`b24-form-gateway check`: the webhook, its scope, every field the forms write, each record's
identity marker (`--create-fields`) and a renamed portal, asked of the emulator as a real server
(and of the built-in one in sandbox mode); exit 0 when all is well, 1 when a check fails, 2 for
bad settings. The webhook URL is never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.main import cli
from tests.conftest import PORTAL_SECRET, Portal, new_portal
from tests.servers import RunningServer, free_port

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
    monkeypatch.delenv("QUOTE_ORIGIN_FIELD", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(
        *, webhook: str | None, forms: str | None = FORMS, args: tuple[str, ...] = ()
    ) -> tuple[int, str]:
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
        code = cli(["check", *args])
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
    # Custom fields: enforced only by a portal setting (docs/bitrix24.md §6.1).
    assert city.startswith("[warn]")

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


# --------------------------------------------------------------------------- identity markers

QUOTE_FORMS = """
[forms.estimate]
entity = "quote"
required = ["email"]

[forms.contact]
entity = "lead"
"""
MARKER = "UF_CRM_B24FG_ORIGIN"
NO_MARKER = (
    "[FAIL] form estimate -> quote: cannot be delivered exactly once: the portal has no custom "
    "field UF_CRM_B24FG_ORIGIN to recognise a quote after a lost answer; run "
    "`b24-form-gateway check --create-fields` (needs CRM admin rights)"
)


def methods(portal: Portal) -> list[str]:
    return [r["method"] for r in portal.state()["requests"]]


def test_each_record_a_form_creates_names_its_identity_marker(
    custom_fields: Portal, check: Check
) -> None:
    forms = FORMS.replace('district = "UF_CRM_DISTRICT"\n', "")
    code, out = check(webhook=custom_fields.webhook_url, forms=forms)
    assert code == 0, out
    for where in ("contact -> lead", "order -> deal", "order -> contact", "order -> company"):
        [line] = lines_with(out, f"form {where}: identity marker")
        assert line == f"[ok]   form {where}: identity marker ORIGINATOR_ID + ORIGIN_ID"


def test_a_quote_form_needs_the_marker_field_on_the_portal(portal: Portal, check: Check) -> None:
    code, out = check(webhook=portal.webhook_url, forms=QUOTE_FORMS)
    assert code == 1
    assert NO_MARKER in out.splitlines()
    assert out.splitlines()[-1] == "FAILED: 1 check"
    assert lines_with(out, "form contact -> lead: identity marker")[0].startswith("[ok]")
    assert "crm.quote.userfield.add" not in methods(portal)  # only with --create-fields
    assert PORTAL_SECRET not in out


def test_create_fields_creates_the_quote_marker_field_once(portal: Portal, check: Check) -> None:
    forms = QUOTE_FORMS + '\n[forms.big_estimate]\nentity = "quote"\n'
    code, out = check(webhook=portal.webhook_url, forms=forms, args=("--create-fields",))
    assert code == 0, out
    for form in ("estimate", "big_estimate"):
        [line] = lines_with(out, f"form {form} -> quote: identity marker")
        assert (
            line == f"[ok]   form {form} -> quote: identity marker {MARKER} (custom field) created"
        )
    adds = [r for r in portal.state()["requests"] if r["method"] == "crm.quote.userfield.add"]
    assert len(adds) == 1  # one field, however many forms use it
    assert PORTAL_SECRET not in out

    # The portal has it now (FIELD_NAME B24FG_ORIGIN became UF_CRM_B24FG_ORIGIN): a plain check
    # passes and creates nothing.
    code, out = check(webhook=portal.webhook_url, forms=forms)
    assert code == 0, out
    [line] = lines_with(out, "form estimate -> quote: identity marker")
    assert line == f"[ok]   form estimate -> quote: identity marker {MARKER} (custom field) exists"
    assert methods(portal).count("crm.quote.userfield.add") == 1


def test_a_refused_field_creation_fails_with_the_portals_message(
    portal: Portal, check: Check
) -> None:
    portal.faults(
        fail_methods={
            "crm.quote.userfield.add": {
                "count": 5,
                "status": 403,
                "error": "ACCESS_DENIED",
                "description": "Access denied.",
            }
        }
    )
    code, out = check(webhook=portal.webhook_url, forms=QUOTE_FORMS, args=("--create-fields",))
    assert code == 1
    [line] = lines_with(out, "form estimate -> quote")
    assert line.startswith("[FAIL]") and "could not be created" in line
    assert "ACCESS_DENIED" in line and "Access denied." in line
    assert PORTAL_SECRET not in out and "/rest/" not in out


def test_the_marker_field_is_the_quote_origin_field_setting(
    custom_fields: Portal, check: Check, monkeypatch: pytest.MonkeyPatch
) -> None:
    custom_fields.control("config", {"user_fields": {"quote": ["UF_CRM_SITE_ORIGIN"]}})
    monkeypatch.setenv("QUOTE_ORIGIN_FIELD", "UF_CRM_SITE_ORIGIN")
    code, out = check(webhook=custom_fields.webhook_url, forms=QUOTE_FORMS)
    assert code == 0, out
    [line] = lines_with(out, "form estimate -> quote: identity marker")
    assert line.startswith("[ok]") and "UF_CRM_SITE_ORIGIN (custom field) exists" in line


def test_a_form_that_maps_onto_the_marker_field_fails(custom_fields: Portal, check: Check) -> None:
    custom_fields.control("config", {"user_fields": {"quote": [MARKER]}})
    forms = QUOTE_FORMS.replace(
        'required = ["email"]\n',
        f'required = ["email"]\n[forms.estimate.fields]\nref = "{MARKER}"\n',
    )
    code, out = check(webhook=custom_fields.webhook_url, forms=forms)
    assert code == 1
    [line] = lines_with(out, "mapping writes")
    assert line.startswith("[FAIL] form estimate -> quote") and MARKER in line


def test_in_the_sandbox_a_missing_marker_field_is_a_warning(check: Check) -> None:
    code, out = check(webhook=None, forms=QUOTE_FORMS)
    assert code == 0, out
    [line] = lines_with(out, "form estimate -> quote: identity marker")
    assert line.startswith("[warn]") and "built-in emulator" in line and "--create-fields" in line

    code, out = check(webhook=None, forms=QUOTE_FORMS, args=("--create-fields",))
    assert code == 0, out
    [line] = lines_with(out, "form estimate -> quote: identity marker")
    assert line.startswith("[ok]") and line.endswith("created")


def test_a_renamed_portal_is_reported_with_its_new_host_never_the_secret(check: Check) -> None:
    old = new_portal()
    new = RunningServer(old.server.app)  # the same portal, reached under its new name
    new.start()
    try:
        old.faults(moved_to=new.url)
        code, out = check(webhook=old.webhook_url, forms='[forms.contact]\nentity = "lead"\n')
        assert code == 0, out
        [line] = lines_with(out, "portal:")
        assert line == (
            f"[warn] portal: 127.0.0.1:{old.server.port} redirects to 127.0.0.1:{new.port} "
            "(the portal was renamed); update B24_WEBHOOK_URL to "
            f"http://127.0.0.1:{new.port}/rest/1/<secret>/"
        )
        assert PORTAL_SECRET not in out
    finally:
        new.stop()
        old.server.stop()


def test_check_refuses_what_serve_refuses_a_redirect_off_the_allowed_origins(
    check: Check, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://shop.example")
    forms = '[forms.contact]\nredirect_url = "https://elsewhere.example/thanks"\n'
    code, output = check(webhook=None, forms=forms)
    assert code == 2
    assert "redirect_url" in output and "https://elsewhere.example" in output


def test_check_reports_the_database_and_its_schema_without_changing_it(
    check: Check, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    database = tmp_path / "gateway.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    code, output = check(webhook=None, forms=None)
    assert code == 0
    assert "[ok]   database:" in output and "no gateway schema yet" in output
    assert not database.exists()  # check creates nothing
    assert cli(["migrate"]) == 0
    code, output = check(webhook=None, forms=None)
    assert "[ok]   database:" in output and "schema up to date" in output


def test_check_fails_an_unreachable_database_in_plain_words(
    check: Check, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://gateway:pw-s3cr3t@127.0.0.1:{free_port()}/g")
    code, output = check(webhook=None, forms=None)
    assert code == 1
    assert "[FAIL] database: cannot use PostgreSQL" in output and "connection refused" in output
    assert "s3cr3t" not in output


def test_alerts_to_portal_users_need_the_im_scope_and_check_says_so(
    custom_fields: Portal, check: Check, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERT_BITRIX_USER_IDS", "1,7")
    code, out = check(webhook=custom_fields.webhook_url)
    assert code == 1
    [alerts] = lines_with(out, "alerts:")
    assert alerts.startswith("[FAIL]") and "needs the webhook's `im` scope" in alerts
    custom_fields.control("config", {"scopes": ["crm", "user", "im", "basic"]})
    code, out = check(webhook=custom_fields.webhook_url)
    [alerts] = lines_with(out, "alerts:")
    assert alerts == "[ok]   alerts: the webhook may notify users 1, 7 (im granted)"
