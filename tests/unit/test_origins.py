"""Origins: the per-form allowed list, the Origin/Referer check, redirects kept on-origin."""

from pathlib import Path

import pytest
from starlette.datastructures import Headers

from app.forms import Form, FormsError, load_forms
from app.intake.origins import OriginPolicy, check_redirects, request_origin
from app.settings import Settings, SettingsError, normalise_origin

FORMS = {
    "contact": Form(id="contact"),
    "partner": Form(id="partner", allowed_origins=("https://partner.example",)),
}


def test_a_form_allows_the_global_origins_plus_its_own() -> None:
    policy = OriginPolicy(("https://shop.example",), FORMS)
    assert policy.allowed("contact") == {"https://shop.example"}
    assert policy.allowed("partner") == {"https://shop.example", "https://partner.example"}
    assert policy.allowed(None) == {"https://shop.example"}  # other paths, unknown forms


def test_without_any_list_every_origin_may_post_and_a_form_list_restricts_that_form() -> None:
    policy = OriginPolicy((), FORMS)
    assert policy.allowed("contact") is None
    assert policy.allowed("partner") == {"https://partner.example"}
    assert not policy.denies("contact", Headers({"origin": "https://anything.example"}))
    assert policy.denies("partner", Headers({"origin": "https://anything.example"}))


@pytest.mark.parametrize(
    ("headers", "denied"),
    [
        ({"origin": "https://shop.example"}, False),
        ({"origin": "HTTPS://SHOP.EXAMPLE:443"}, False),  # same origin, written differently
        ({"origin": "https://shop.example:8443"}, True),
        ({"origin": "http://shop.example"}, True),
        ({"origin": "https://evil.example"}, True),
        ({"origin": "null"}, True),
        ({"origin": "https://partner.example"}, True),  # another form's origin
        ({"referer": "https://shop.example/landing?utm_source=x"}, False),
        ({"referer": "https://evil.example/shop.example"}, True),
        ({"referer": "not a url"}, True),
        # Origin wins over Referer.
        ({"origin": "https://evil.example", "referer": "https://shop.example/"}, True),
        ({}, False),  # neither header: not a cross-site browser post
    ],
)
def test_posts_are_checked_by_origin_else_referer(headers: dict[str, str], denied: bool) -> None:
    policy = OriginPolicy(("https://shop.example",), FORMS)
    assert policy.denies("contact", Headers(headers)) is denied


def test_request_origin_reads_origin_then_referer() -> None:
    assert request_origin(Headers({"referer": "https://a.example:8080/x"})) == (
        "https://a.example:8080"
    )
    assert request_origin(Headers({})) is None


def test_a_redirect_off_the_forms_origins_stops_start_up() -> None:
    forms = {"contact": Form(id="contact", redirect_url="https://evil.example/thanks")}
    with pytest.raises(FormsError, match=r"\[forms.contact\] redirect_url"):
        check_redirects(forms, OriginPolicy(("https://shop.example",), forms))
    forms = {"contact": Form(id="contact", error_redirect_url="https://evil.example/oops")}
    with pytest.raises(FormsError, match="error_redirect_url"):
        check_redirects(forms, OriginPolicy(("https://shop.example",), forms))
    ok = {
        "contact": Form(
            id="contact",
            redirect_url="https://shop.example/thanks",
            error_redirect_url="https://partner.example/oops",
            allowed_origins=("https://partner.example",),
        )
    }
    check_redirects(ok, OriginPolicy(("https://shop.example",), ok))
    # With no origins configured anywhere, any absolute URL from the forms file is allowed.
    check_redirects(forms, OriginPolicy((), forms))


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("https://Example.COM", "https://example.com"),
        ("https://example.com:443/", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("http://example.com:8080", "http://example.com:8080"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("null", None),
        ("ftp://example.com", None),
        ("https://example.com:99999", None),
    ],
)
def test_origins_are_normalised_as_browsers_send_them(value: str, origin: str | None) -> None:
    assert normalise_origin(value) == origin


@pytest.mark.parametrize(
    "value",
    ["https://a.example/path", "a.example", "https://a.example?x=1", "https://u:p@a.example"],
)
def test_allowed_origins_must_be_origins(value: str) -> None:
    with pytest.raises(SettingsError, match="ALLOWED_ORIGINS"):
        Settings.load(ALLOWED_ORIGINS=value, _env_file=None)


def test_a_forms_file_declares_the_front_door_keys(tmp_path: Path) -> None:
    path = tmp_path / "forms.toml"
    path.write_text(
        "[forms.partner]\n"
        'allowed_origins = ["https://Partner.example:443/", "http://localhost:3000"]\n'
        'error_redirect_url = "https://partner.example/oops"\n'
        "min_fill_seconds = 2.5\n"
        "captcha = false\n"
    )
    form = load_forms(path)["partner"]
    assert form.allowed_origins == ("https://partner.example", "http://localhost:3000")
    assert form.error_redirect_url == "https://partner.example/oops"
    assert (form.min_fill_seconds, form.captcha) == (2.5, False)
    default = load_forms(None)["contact"]
    assert (default.allowed_origins, default.min_fill_seconds, default.captcha) == ((), 0, True)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('allowed_origins = ["https://a.example/landing"]', "allowed_origins"),
        ('allowed_origins = "https://a.example"', "allowed_origins"),
        ('error_redirect_url = "/oops"', "error_redirect_url"),
        ("min_fill_seconds = -1", "min_fill_seconds"),
        ("min_fill_seconds = 7200", "min_fill_seconds"),
    ],
)
def test_bad_front_door_keys_name_the_form_and_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "forms.toml"
    path.write_text(f"[forms.partner]\n{text}\n")
    with pytest.raises(FormsError) as err:
        load_forms(path)
    assert "[forms.partner]" in str(err.value) and key in str(err.value)
