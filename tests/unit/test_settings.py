"""Settings: defaults, and bad values stop start-up with a message naming the variable."""

from pathlib import Path

import pytest

from app.settings import Settings, SettingsError


def test_defaults_are_sandbox_mode_with_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("B24_WEBHOOK_URL", raising=False)
    settings = Settings.load(_env_file=None)
    assert settings.sandbox
    assert settings.DATABASE_URL == "sqlite+aiosqlite:///./data/gateway.db"
    assert settings.WORKER is True
    assert settings.RATE_LIMIT_PER_IP == "30/minute"
    assert (settings.HOST, settings.PORT) == ("127.0.0.1", 8000)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.bitrix24.com/rest/1/abc123/",
        "https://example.bitrix24.com/rest/1/abc123",
        "http://127.0.0.1:9000/rest/1/abc123/",
        "http://localhost/rest/7/abc/",
    ],
)
def test_webhook_urls_accepted(url: str) -> None:
    settings = Settings.load(B24_WEBHOOK_URL=url, _env_file=None)
    assert not settings.sandbox
    assert settings.B24_WEBHOOK_URL is not None
    assert settings.B24_WEBHOOK_URL.get_secret_value().endswith("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://example.bitrix24.com/rest/1/topsecret/",
        "ftp://example.bitrix24.com/rest/1/topsecret/",
        "https://example.bitrix24.com/topsecret/",
        "https://example.bitrix24.com/rest/topsecret/",
        "https://example.bitrix24.com/rest/1/topsecret/?x=1",
    ],
)
def test_bad_webhook_urls_are_refused_without_echoing_the_secret(url: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.load(B24_WEBHOOK_URL=url, _env_file=None)
    assert "B24_WEBHOOK_URL" in str(err.value)
    assert "topsecret" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("WORKER", "perhaps"),
        ("RATE_LIMIT_PER_IP", "lots"),
        ("RATE_LIMIT_MAX_CLIENTS", "0"),
        ("DATABASE_URL", "mysql://x"),
        ("FORMS_FILE", "/nonexistent/forms.toml"),
        ("BITRIX_RATE_PER_SECOND", "0"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        Settings.load(_env_file=None)
    assert name in str(err.value)


def test_allowed_origins_is_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://a.example, https://b.example/")
    settings = Settings.load(_env_file=None)
    assert settings.ALLOWED_ORIGINS == ("https://a.example", "https://b.example")


def test_rate_limit_storage_is_a_redis_url_refused_without_echoing_its_password() -> None:
    url = "redis://:pa55word@cache.internal:6379/0"
    stored = Settings.load(RATE_LIMIT_STORAGE_URL=url, _env_file=None).RATE_LIMIT_STORAGE_URL
    assert stored is not None and stored.get_secret_value() == url
    assert "pa55word" not in repr(stored)
    with pytest.raises(SettingsError) as err:
        Settings.load(RATE_LIMIT_STORAGE_URL="http://:pa55word@cache.internal/", _env_file=None)
    assert "RATE_LIMIT_STORAGE_URL" in str(err.value) and "pa55word" not in str(err.value)


def test_rate_limit_zero_turns_it_off() -> None:
    assert Settings.load(RATE_LIMIT_PER_IP="0", _env_file=None).RATE_LIMIT_PER_IP == "0"


ENV_EXAMPLE = Path(__file__).parents[2] / ".env.example"


def test_env_example_lists_every_setting() -> None:
    listed = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert listed == set(Settings.model_fields)


def test_env_example_as_a_dotenv_starts_in_sandbox_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text(ENV_EXAMPLE.read_text())
    settings = Settings.load(_env_file=dotenv)
    assert settings.sandbox
    assert settings.FORMS_FILE is None
    assert settings.ALLOWED_ORIGINS == ()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:pw@db.example:5432/app", "postgresql+asyncpg://u:pw@db.example:5432/app"),
        ("postgresql://u:pw@db/app", "postgresql+asyncpg://u:pw@db/app"),
        (
            "postgresql://u:pw@db/app?sslmode=require",
            "postgresql+asyncpg://u:pw@db/app?ssl=require",
        ),
        ("sqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
        ("postgresql+asyncpg://u@db/app", "postgresql+asyncpg://u@db/app"),
    ],
)
def test_database_urls_as_platforms_hand_them_out_are_understood(given: str, expected: str) -> None:
    assert expected == Settings.load(DATABASE_URL=given).DATABASE_URL


def test_an_unknown_database_scheme_is_refused_without_echoing_the_password() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.load(DATABASE_URL="mysql://u:hunter2@db/app")
    assert "DATABASE_URL" in str(err.value) and "postgresql://" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_log_level_and_format_in_any_case() -> None:
    settings = Settings.load(LOG_LEVEL="info", LOG_FORMAT="JSON")
    assert (settings.LOG_LEVEL, settings.LOG_FORMAT) == ("INFO", "json")


def test_messages_speak_plainly_without_pydantic_prefixes() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.load(ALLOWED_ORIGINS="nope")
    assert "Value error" not in str(err.value)
    assert str(err.value) == (
        "invalid setting: ALLOWED_ORIGINS: 'nope' is not an origin like https://www.example.com"
    )
