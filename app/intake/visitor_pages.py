"""The pages a visitor without JavaScript sees after posting a form: thanks, or what to fix and
a way back, in the form's language (English and Russian built in, any text replaceable per form
in the forms file). Pure: text in, HTML out; every value is escaped.
"""

# Russian texts are Cyrillic on purpose: not look-alike letters.
# ruff: noqa: RUF001

from __future__ import annotations

import html
import re
from collections.abc import Mapping

from app.settings import normalise_origin

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "thank_you_title": "Thank you!",
        "thank_you": "We have received your request and will be in touch soon.",
        "error_title": "Please check the form",
        "error": "Your request was not sent.",
        "back": "Back to the form",
    },
    "ru": {
        "thank_you_title": "Спасибо!",
        "thank_you": "Мы получили вашу заявку и скоро свяжемся с вами.",
        "error_title": "Проверьте форму",
        "error": "Заявка не отправлена.",
        "back": "Вернуться к форме",
    },
}

# What went wrong, by status, when no field is named.
_REASONS: dict[str, dict[int, str]] = {
    "en": {
        400: "The form could not be read.",
        403: "This page may not send this form.",
        409: "This request was already sent with other content.",
        413: "The form is too large.",
        415: "The form was sent in a format that is not accepted.",
        422: "Some fields need your attention:",
        429: "Too many requests from your connection. Please try again later.",
        503: "The service is busy. Please try again in a few minutes.",
    },
    "ru": {
        400: "Не удалось прочитать форму.",
        403: "С этой страницы нельзя отправить эту форму.",
        409: "Эта заявка уже была отправлена с другим содержимым.",
        413: "Форма слишком большая.",
        415: "Форма отправлена в неподдерживаемом формате.",
        422: "Проверьте поля:",
        429: "Слишком много заявок с вашего подключения. Попробуйте позже.",
        503: "Сервис занят. Попробуйте через несколько минут.",
    },
}

_FIELD_NAMES = {
    "ru": {
        "name": "Имя",
        "last_name": "Фамилия",
        "second_name": "Отчество",
        "phone": "Телефон",
        "email": "E-mail",
        "message": "Сообщение",
        "company": "Компания",
    },
}

# The intake's field messages (forms.missing_required, routes._invalid_contacts) in Russian.
_FIELD_MESSAGES = {
    "ru": {
        "this field is required": "обязательное поле",
        "not a valid email address": "неверный адрес e-mail",
        "not a valid phone number (5 to 20 digits)": "неверный номер телефона (от 5 до 20 цифр)",
    },
}
_ONE_OF = re.compile(r"^one of (?P<names>.+) is required$")

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;"
    "line-height:1.5}ul{padding-left:1.2rem}a{color:#0b5cad}"
)


def texts_for(language: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """The form's texts: its language's built-in ones, each replaceable by the forms file."""
    return TEXTS.get(language, TEXTS["en"]) | dict(overrides)


def thank_you_page(*, language: str, overrides: Mapping[str, str]) -> str:
    texts = texts_for(language, overrides)
    body = f"<h1>{_e(texts['thank_you_title'])}</h1><p>{_e(texts['thank_you'])}</p>"
    return _page(language, texts["thank_you_title"], body)


def error_page(
    *,
    language: str,
    overrides: Mapping[str, str],
    status: int,
    errors: Mapping[str, str] | None,
    back: str | None,
) -> str:
    """What to fix (the form's own field names only: the caller filters them) and a link back
    to the page the visitor came from, when it is known and allowed."""
    texts = texts_for(language, overrides)
    reasons = _REASONS.get(language, _REASONS["en"])
    parts = [f"<h1>{_e(texts['error_title'])}</h1>", f"<p>{_e(texts['error'])}</p>"]
    parts.append(f"<p>{_e(reasons.get(status, reasons[400]))}</p>")
    if errors:
        items = "".join(
            f"<li><strong>{_e(_field(language, name))}</strong>: {_e(_message(language, text))}"
            "</li>"
            for name, text in errors.items()
        )
        parts.append(f"<ul>{items}</ul>")
    if back is not None:
        parts.append(f'<p><a href="{_e(back)}">{_e(texts["back"])}</a></p>')
    return _page(language, texts["error_title"], "".join(parts))


def back_link(referer: str | None, allowed: frozenset[str] | None) -> str | None:
    """The page the post came from, if it is an http(s) URL on one of the form's allowed
    origins (any origin when none are configured); never anything else."""
    origin = normalise_origin(referer) if referer else None
    if origin is None or (allowed is not None and origin not in allowed):
        return None
    return referer


def _field(language: str, name: str) -> str:
    names = _FIELD_NAMES.get(language, {})
    return " / ".join(names.get(part, part) for part in name.split("|"))


def _message(language: str, text: str) -> str:
    messages = _FIELD_MESSAGES.get(language)
    if messages is None:
        return text
    if (match := _ONE_OF.match(text)) is not None:
        names = [_field(language, n.strip()) for n in match["names"].split(",")]
        return "заполните одно из полей: " + ", ".join(names)
    return messages.get(text, text)


def _page(language: str, title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="{_e(language)}"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)
