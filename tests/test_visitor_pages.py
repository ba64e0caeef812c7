"""A visitor without JavaScript: a page saying what to fix with a way back, and a thank-you
page, in the form's language (English, Russian) with the form's own texts; never raw JSON."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from tests.conftest import Gateway, Portal

MakeGateway = Callable[..., Awaitable[Gateway]]
HTML = {"Accept": "text/html,application/xhtml+xml", "Referer": "https://shop.example/contact"}
FORMS = """
[forms.contact]
allowed_origins = ["https://shop.example"]

[forms.zayavka]
language = "ru"
required = ["name", "phone|email"]
[forms.zayavka.texts]
thank_you = "Менеджер перезвонит в течение часа."
"""


async def gateway_with_forms(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path, **settings: object
) -> Gateway:
    forms = tmp_path / "forms.toml"
    forms.write_text(FORMS, encoding="utf-8")
    return await make_gateway(portal, FORMS_FILE=str(forms), **settings)


async def post(gateway: Gateway, form: str, data: dict[str, str], **headers: str) -> httpx.Response:
    async with gateway.client() as client:
        return await client.post(f"/forms/{form}", data=data, headers=HTML | headers)


def text_of(page: str) -> str:
    body = page.split("<body>", 1)[1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


async def test_a_missing_field_gets_a_page_naming_it_with_a_link_back(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await gateway_with_forms(portal, make_gateway, tmp_path)
    response = await post(gateway, "contact", {"name": "Ann", "made_up<b>": "x"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<html lang="en">' in page
    assert "Please check the form" in text_of(page)
    assert "phone / email" in text_of(page) and "one of phone, email is required" in page
    assert '<a href="https://shop.example/contact">Back to the form</a>' in page
    assert "made_up" not in page  # a name the client chose never appears
    assert "{" not in text_of(page)  # no JSON


async def test_a_back_link_leads_only_to_the_forms_own_origins(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await gateway_with_forms(portal, make_gateway, tmp_path)
    for referer in ("https://evil.example/", "javascript:alert(1)", "not a url"):
        response = await post(
            gateway, "contact", {"name": "Ann"}, Origin="https://shop.example", Referer=referer
        )
        assert response.status_code == 422
        assert "<a " not in response.text


async def test_a_russian_form_answers_in_russian_with_its_own_thank_you_text(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await gateway_with_forms(portal, make_gateway, tmp_path)
    refused = await post(gateway, "zayavka", {"phone": "+79001234567"})
    assert refused.status_code == 422
    assert '<html lang="ru">' in refused.text
    assert "Проверьте форму" in refused.text and "Имя" in refused.text
    assert "обязательное поле" in refused.text
    accepted = await post(gateway, "zayavka", {"name": "Анна", "phone": "+79001234567"})
    assert accepted.status_code == 200
    assert '<html lang="ru">' in accepted.text
    assert "Спасибо!" in accepted.text and "Менеджер перезвонит в течение часа." in accepted.text


async def test_refused_origin_and_rate_limit_get_pages_too(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await gateway_with_forms(portal, make_gateway, tmp_path, RATE_LIMIT_PER_IP="1/minute")
    foreign = await post(gateway, "contact", {"phone": "+15550001"}, Origin="https://evil.example")
    assert foreign.status_code == 403 and "may not send this form" in foreign.text
    first = await post(gateway, "zayavka", {"name": "Анна", "phone": "+79001234567"})
    assert first.status_code == 200
    again = await post(gateway, "zayavka", {"name": "Анна", "phone": "+79001234567"})
    assert again.status_code == 429
    assert again.headers["content-type"].startswith("text/html")
    assert int(again.headers["retry-after"]) > 0
    assert "Слишком много заявок" in again.text


async def test_a_client_asking_for_json_still_gets_json(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await gateway_with_forms(portal, make_gateway, tmp_path)
    async with gateway.client() as client:
        response = await client.post("/forms/contact", data={"name": "Ann"})
    assert response.status_code == 422
    assert response.json()["errors"] == {"phone|email": "one of phone, email is required"}
