"""`GET /embed.js` without a browser: size, headers, ETag/304, CORS; the served file in sync with
its readable source; the sandbox demo page using it; and what the gateway does with the
attribution fields embed.js sends (the browser itself: tests/test_browser.py)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from app.embed import minify
from tests.conftest import Gateway, Portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]
SIZE_LIMIT_BYTES = 3072  # docs/design.md: under 3,072 bytes uncompressed


async def get(
    gateway: Gateway, path: str = "/embed.js", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with gateway.client() as client:
        response = await client.get(path, headers=headers)
    return response.status_code, dict(response.headers), response.content


async def test_embed_js_is_small_cacheable_javascript(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    status, headers, body = await get(gateway, **{"Accept-Encoding": "identity"})
    assert status == 200
    assert "content-encoding" not in headers
    assert headers["content-type"].split(";")[0] == "text/javascript"
    assert len(body) < SIZE_LIMIT_BYTES
    assert int(headers["content-length"]) == len(body)
    cache_control = [part.strip() for part in headers["cache-control"].split(",")]
    assert "public" in cache_control
    max_age = next(int(p.split("=")[1]) for p in cache_control if p.startswith("max-age="))
    assert max_age >= 3600
    assert re.fullmatch(r'"[0-9a-f]{8,}"', headers["etag"])
    assert headers["x-content-type-options"] == "nosniff"
    # Nothing is fetched from elsewhere: no URL in the script at all.
    assert b"http" not in body and b"//" not in body


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", '"stale", {etag}', "*"],
    ids=["exact", "weak", "in-a-list", "star"],
)
async def test_a_matching_if_none_match_gets_304_without_a_body(
    portal: Portal, make_gateway: MakeGateway, if_none_match: str
) -> None:
    gateway = await make_gateway(portal)
    _, first, _ = await get(gateway)
    status, headers, body = await get(
        gateway, **{"If-None-Match": if_none_match.format(etag=first["etag"])}
    )
    assert status == 304
    assert body == b""
    assert headers["etag"] == first["etag"]
    assert headers["cache-control"] == first["cache-control"]


async def test_a_stale_etag_gets_the_script_again(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    status, _, body = await get(gateway, **{"If-None-Match": '"an-older-version"'})
    assert status == 200
    assert body == minify.MINIFIED.read_bytes()


async def test_head_answers_the_headers_only(portal: Portal, make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(portal)
    async with gateway.client() as client:
        response = await client.head("/embed.js", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["etag"]
    assert int(response.headers["content-length"]) == minify.MINIFIED.stat().st_size


async def test_cors_echoes_any_origin_when_allowed_origins_is_unset(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    for origin in ("https://landing.example", "http://127.0.0.1:5173"):
        _, headers, _ = await get(gateway, Origin=origin)
        assert headers["access-control-allow-origin"] == origin


async def test_cors_answers_only_the_allowed_origins_when_they_are_set(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal, ALLOWED_ORIGINS="https://shop.example")
    _, allowed, _ = await get(gateway, Origin="https://shop.example")
    assert allowed["access-control-allow-origin"] == "https://shop.example"
    status, other, body = await get(gateway, Origin="https://elsewhere.example")
    # A <script src> needs no CORS: the script is served to any page, just not readable by
    # fetch() from an origin that is not allowed.
    assert status == 200 and body
    assert "access-control-allow-origin" not in other


@pytest.mark.skipif(
    not minify.available(), reason="terser not installed: npm ci --prefix tools/js (.ci/run does)"
)
def test_the_served_script_is_what_terser_makes_of_the_source() -> None:
    """embed.min.js is committed; after an edit of embed.js run `python -m app.embed.minify`."""
    source = minify.SOURCE.read_text(encoding="utf-8")
    assert minify.MINIFIED.read_text(encoding="utf-8") == minify.minify(source), (
        "app/embed/embed.min.js is out of date: run `python -m app.embed.minify`"
    )


@pytest.mark.parametrize("accept", ["gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.8", "*"])
async def test_embed_js_is_served_gzip_compressed_to_clients_that_accept_it(
    portal: Portal, make_gateway: MakeGateway, accept: str
) -> None:
    gateway = await make_gateway(portal)
    async with gateway.client() as client:
        response = await client.get("/embed.js", headers={"Accept-Encoding": accept})
        plain = await client.get("/embed.js", headers={"Accept-Encoding": "identity"})
    assert response.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in response.headers["vary"].lower()
    assert response.content == minify.MINIFIED.read_bytes()  # httpx decodes it
    sent = int(response.headers["content-length"])
    assert sent == response.num_bytes_downloaded < 0.7 * len(response.content)
    # Each representation has its own validator, and each revalidates.
    assert response.headers["etag"] != plain.headers["etag"]
    async with gateway.client() as client:
        again = await client.get(
            "/embed.js",
            headers={"Accept-Encoding": accept, "If-None-Match": response.headers["etag"]},
        )
    assert again.status_code == 304


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "deflate", ""])
async def test_embed_js_is_plain_when_gzip_is_not_accepted(
    portal: Portal, make_gateway: MakeGateway, accept: str
) -> None:
    gateway = await make_gateway(portal)
    async with gateway.client() as client:
        response = await client.get("/embed.js", headers={"Accept-Encoding": accept})
    assert "content-encoding" not in response.headers
    assert response.content == minify.MINIFIED.read_bytes()


async def test_the_sandbox_demo_page_uses_embed_js_with_a_stub_tracker(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(None)  # sandbox mode
    status, _, body = await get(gateway, "/")
    page = body.decode()
    assert status == 200 and "Sandbox mode" in page
    assert '<script src="embed.js" defer></script>' in page
    # The stand-in tracker is a served file: the page's CSP allows no inline script.
    assert '<script src="demo-tracker.js" defer></script>' in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    status, _, tracker = await get(gateway, "/demo-tracker.js")
    assert status == 200 and b"window.b24Tracker" in tracker and b"getTrace" in tracker
    assert re.search(r"<form [^>]*data-b24-gateway", page)
    assert 'name="trace"' not in page  # embed.js adds it at submit, from the tracker
    assert "data-b24-success" in page and "data-b24-error" in page


def write_forms(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "forms.toml"
    path.write_text(text, encoding="utf-8")
    return path


ATTRIBUTION = {
    "utm_source": "newsletter",
    "utm_medium": "email",
    "utm_campaign": "spring",
    "gclid": "Cj0KCQ-g",
    "yclid": "4242",
    "fbclid": "IwAR-f",
    "referrer": "https://www.bing.com/",
    "landing_page": "https://shop.example/?utm_source=newsletter&gclid=Cj0KCQ-g",
}


async def test_attribution_fields_become_comments_lines_by_default(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    async with gateway.client() as client:
        response = await client.post(
            "/forms/contact", data={"phone": "+15550001111", "submission_id": "k-1", **ATTRIBUTION}
        )
    submission_id = response.json()["id"]
    [lead] = await wait_for(
        lambda: [r for r in portal.records("lead") if r.get("ORIGIN_ID") == submission_id]
    )
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"], lead["UTM_CAMPAIGN"]) == (
        "newsletter",
        "email",
        "spring",
    )
    lines = lead["COMMENTS"].splitlines()
    for name in ("gclid", "yclid", "fbclid", "referrer", "landing_page"):
        assert f"{name}: {ATTRIBUTION[name]}" in lines
    assert not any(line.startswith(("utm_", "submission_id")) for line in lines)


async def test_attribution_fields_go_to_the_bitrix_fields_a_form_maps_them_to(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    forms = write_forms(
        tmp_path,
        """
[forms.contact.fields]
gclid = "UF_CRM_GCLID"
referrer = "UF_CRM_REFERRER"
landing_page = "SOURCE_DESCRIPTION"
""",
    )
    # The portal keeps a custom field's value only if it has that field (docs/bitrix24.md §6.1).
    portal.control("config", {"user_fields": {"lead": ["UF_CRM_GCLID", "UF_CRM_REFERRER"]}})
    gateway = await make_gateway(portal, FORMS_FILE=forms)
    async with gateway.client() as client:
        response = await client.post("/forms/contact", data={"phone": "+1555000111", **ATTRIBUTION})
    submission_id = response.json()["id"]
    [lead] = await wait_for(
        lambda: [r for r in portal.records("lead") if r.get("ORIGIN_ID") == submission_id]
    )
    assert lead["UF_CRM_GCLID"] == ATTRIBUTION["gclid"]
    assert lead["UF_CRM_REFERRER"] == ATTRIBUTION["referrer"]
    assert lead["SOURCE_DESCRIPTION"] == ATTRIBUTION["landing_page"]
    assert lead["UTM_SOURCE"] == "newsletter"
    lines = lead["COMMENTS"].splitlines()
    assert "yclid: 4242" in lines and "fbclid: IwAR-f" in lines
    assert not any(line.startswith(("gclid", "referrer", "landing_page")) for line in lines)
