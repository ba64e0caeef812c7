"""Telling people: a submission that failed for good, a delivery that stalled and recovered,
announced once each through the configured channels (Bitrix24 notifications, e-mail, a chat
webhook), rate-limited per channel. No SQL and no Bitrix24 client: the assembly hands in what
to read and how to notify. Alerts carry ids, forms, error codes, counts and times, never
personal data, and sending them never holds up delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Literal, Protocol

import aiosmtplib
import httpx

from app.metrics import Metrics

log = logging.getLogger("app.alerts")

SEND_TIMEOUT_SECONDS = 15.0
RATE_WINDOW = timedelta(hours=1)
QUEUE_SIZE = 1000  # alerts waiting to be sent; beyond it they are counted as held back
REMEMBERED_FAILURES = 10_000  # failures already announced, for deduplication
IDS_PER_ALERT = 10  # failed submissions named in one alert; the rest are counted
PRODUCT = "b24-form-gateway"

Kind = Literal["failed", "stalled", "recovered"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: Kind
    subject: str
    text: str


@dataclass(frozen=True, slots=True)
class Failure:
    """A submission that failed for good: what an alert may say about it."""

    submission_id: str
    form_id: str
    error_code: str | None
    attempts: int


class ChannelError(Exception):
    """A channel could not send; `code` is safe to log (no secret, no address)."""

    def __init__(self, code: str, *, hint: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.hint = hint


class Channel(Protocol):
    name: str

    async def send(self, alert: Alert) -> None:
        """Send the alert or raise (ChannelError, or any error of the transport)."""


# ----------------------------------------------------------------------------- channels


class BitrixChannel:
    """`im.notify.system.add` to chosen portal users (docs/bitrix24.md §13), through a
    callable the assembly builds on the gateway's Bitrix24 client."""

    name = "bitrix"

    def __init__(
        self, notify: Callable[[int, str], Awaitable[None]], user_ids: Sequence[int]
    ) -> None:
        self._notify = notify
        self._user_ids = tuple(user_ids)

    async def send(self, alert: Alert) -> None:
        # BB code [B] is the portal's own markup for notifications.
        message = f"[B]{alert.subject}[/B]\n{alert.text}"
        for user_id in self._user_ids:
            await self._notify(user_id, message)


class EmailChannel:
    """One message to ALERT_SMTP_TO through an SMTP server (aiosmtplib)."""

    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
    ) -> None:
        self._host, self._port = host, port
        self._sender, self._recipients = sender, tuple(recipients)
        self._username, self._password = username, password
        self._starttls = starttls

    async def send(self, alert: Alert) -> None:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = ", ".join(self._recipients)
        message["Subject"] = alert.subject
        message.set_content(alert.text)
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                start_tls=self._starttls,
                timeout=SEND_TIMEOUT_SECONDS,
            )
        except aiosmtplib.SMTPResponseException as exc:
            raise ChannelError(f"smtp_{exc.code}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            # The exception's text may name the server or an address: only its class is said.
            raise ChannelError(type(exc).__name__) from None


class WebhookChannel:
    """A JSON POST that both a Slack incoming webhook (`text`) and a Telegram bot's
    sendMessage (`chat_id`, `text`) accept."""

    name = "webhook"

    def __init__(self, url: str, *, chat_id: str | None = None) -> None:
        self._url = url
        self._chat_id = chat_id

    async def send(self, alert: Alert) -> None:
        body: dict[str, str] = {"text": f"{alert.subject}\n{alert.text}"}
        if self._chat_id is not None:
            body["chat_id"] = self._chat_id
        try:
            async with httpx.AsyncClient(
                timeout=SEND_TIMEOUT_SECONDS, follow_redirects=False
            ) as client:
                response = await client.post(self._url, json=body)
        except httpx.HTTPError as exc:
            # httpx puts the URL (a secret: it holds the token) into its messages.
            raise ChannelError(type(exc).__name__) from None
        if not response.is_success:
            raise ChannelError(f"http_{response.status_code}")


# ----------------------------------------------------------------------------- the alerter


@dataclass(slots=True)
class _Limit:
    """One channel's sliding hour: when its recent alerts went, and how many were held back."""

    sent: deque[datetime] = field(default_factory=deque)
    held_back: int = 0
    held_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the stall check reads from the store."""

    oldest_due: datetime | None  # since when the longest-waiting due submission waits
    waiting: int  # accepted and delivering
    failed: int


class Alerter:
    """Turns events into alerts, at most once each, and sends them from its own task.

    `failed()` is called by the worker and returns at once; `run()` sends what was queued and
    checks for a stall every `check_seconds` while `leading()` says this process delivers (so
    that replicas do not announce the same stall each).
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        backlog: Callable[[datetime], Awaitable[Backlog]],
        stall_after: timedelta,
        max_per_hour: int,
        leading: Callable[[], bool] = lambda: True,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.channels = tuple(channels)
        self._backlog = backlog
        self.stall_after = stall_after
        self.max_per_hour = max_per_hour
        self._leading = leading
        self._metrics = metrics
        self._clock = clock
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._announced: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._limits = {channel.name: _Limit() for channel in self.channels}
        self._stalled_since: datetime | None = None

    @property
    def check_seconds(self) -> float:
        """How often the backlog is looked at: often enough to notice a stall within a
        quarter of its threshold, never more than twice a second or less than twice a minute."""
        return min(30.0, max(0.5, self.stall_after.total_seconds() / 4))

    @property
    def stalled(self) -> bool:
        return self._stalled_since is not None

    # --- events ---------------------------------------------------------------------------

    def failed(self, failures: Sequence[Failure]) -> None:
        """Submissions that failed for good (one worker pass): one alert naming those not
        announced before."""
        new = []
        for failure in failures:
            key = (failure.submission_id, failure.attempts)
            if key in self._announced:
                continue
            self._announced[key] = None
            if len(self._announced) > REMEMBERED_FAILURES:
                self._announced.popitem(last=False)
            new.append(failure)
        if new:
            self._enqueue(failure_alert(new, now=self._clock()))

    async def check_stall(self) -> None:
        """Announce a stall when it begins and its end once it is over."""
        now = self._clock()
        backlog = await self._backlog(now)
        waited = now - backlog.oldest_due if backlog.oldest_due is not None else None
        if waited is not None and waited >= self.stall_after:
            if self._stalled_since is None:
                assert backlog.oldest_due is not None  # noqa: S101 - implied by `waited`
                self._stalled_since = backlog.oldest_due
                log.error(
                    "alerts.delivery_stalled",
                    extra={"waited_s": int(waited.total_seconds()), "waiting": backlog.waiting},
                )
                self._enqueue(stall_alert(backlog, waited=waited, now=now))
        elif self._stalled_since is not None:
            since, self._stalled_since = self._stalled_since, None
            log.warning("alerts.delivery_recovered", extra={"waiting": backlog.waiting})
            self._enqueue(recovery_alert(backlog, stalled_since=since, now=now))

    def _enqueue(self, alert: Alert) -> None:
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            now = self._clock()
            for channel in self.channels:
                limit = self._limits[channel.name]
                limit.held_back += 1
                limit.held_since = limit.held_since or now
                self._count(channel.name, "suppressed")

    # --- sending --------------------------------------------------------------------------

    async def run(self) -> None:
        """Send queued alerts and watch for stalls until cancelled."""
        names = ",".join(channel.name for channel in self.channels)
        log.info("alerts.started", extra={"channels": names})
        checker = asyncio.create_task(self._watch(), name="alerts-stall-check")
        try:
            while True:
                alert = await self._queue.get()
                await self.send(alert)
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            if not self._leading():
                continue
            try:
                await self.check_stall()
            except Exception:  # the store is away: the next round tries again
                log.exception("alerts.stall_check_failed")

    async def drain(self) -> None:
        """Send everything queued now (tests, and a clean shutdown)."""
        while not self._queue.empty():
            await self.send(self._queue.get_nowait())

    async def send(self, alert: Alert) -> None:
        """One alert to every channel at once, each within its own hourly limit."""
        await asyncio.gather(*(self._send_one(channel, alert) for channel in self.channels))

    async def _send_one(self, channel: Channel, alert: Alert) -> None:
        now = self._clock()
        limit = self._limits[channel.name]
        while limit.sent and now - limit.sent[0] >= RATE_WINDOW:
            limit.sent.popleft()
        if len(limit.sent) >= self.max_per_hour:
            limit.held_back += 1
            limit.held_since = limit.held_since or now
            self._count(channel.name, "suppressed")
            log.warning("alerts.held_back", extra={"channel": channel.name, "kind": alert.kind})
            return
        limit.sent.append(now)
        outgoing = alert
        held = limit.held_back
        if held:
            since = limit.held_since or now
            outgoing = Alert(
                alert.kind,
                alert.subject,
                f"{alert.text}\n\n{held} earlier alert(s) since {_time(since)} were held back "
                f"(at most {self.max_per_hour} an hour per channel); see the admin API or "
                "`b24-form-gateway submissions list --status failed`.",
            )
        try:
            await asyncio.wait_for(channel.send(outgoing), timeout=SEND_TIMEOUT_SECONDS * 2)
        except Exception as exc:
            code = exc.code if isinstance(exc, ChannelError) else type(exc).__name__
            extra: dict[str, object] = {
                "channel": channel.name,
                "kind": alert.kind,
                "error_code": code,
            }
            if isinstance(exc, ChannelError) and exc.hint:
                extra["detail"] = exc.hint
            log.warning("alerts.channel_failed", extra=extra)
            self._count(channel.name, "failed")
            return
        limit.held_back, limit.held_since = 0, None
        self._count(channel.name, "sent")
        log.info("alerts.sent", extra={"channel": channel.name, "kind": alert.kind})

    def _count(self, channel: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.alerts.labels(channel=channel, result=result).inc()


# ----------------------------------------------------------------------------- the texts


def failure_alert(failures: Sequence[Failure], *, now: datetime) -> Alert:
    count = len(failures)
    shown = failures[:IDS_PER_ALERT]
    lines = [
        f"- {f.submission_id} (form {f.form_id}): {f.error_code or 'unknown error'} "
        f"after {f.attempts} attempt(s)"
        for f in shown
    ]
    if count > len(shown):
        lines.append(f"- and {count - len(shown)} more")
    noun = "submission" if count == 1 else "submissions"
    text = (
        f"{count} {noun} failed for good at {_time(now)} and will not be retried by "
        "themselves:\n" + "\n".join(lines) + "\n\nDetails and retry: "
        "`b24-form-gateway submissions show ID`, `submissions retry ID` "
        "(or GET /admin/submissions/ID, POST /admin/submissions/ID/retry)."
    )
    return Alert("failed", f"[{PRODUCT}] {count} {noun} failed", text)


def stall_alert(backlog: Backlog, *, waited: timedelta, now: datetime) -> Alert:
    text = (
        f"Delivery to Bitrix24 is stalled: a due submission has waited "
        f"{_minutes(waited)} to be tried (since {_time(backlog.oldest_due or now)}). "
        f"{backlog.waiting} submission(s) wait, {backlog.failed} failed. Nothing is lost; "
        "they are delivered when the portal answers and a worker runs. See /readyz."
    )
    return Alert("stalled", f"[{PRODUCT}] delivery stalled", text)


def recovery_alert(backlog: Backlog, *, stalled_since: datetime, now: datetime) -> Alert:
    text = (
        f"Delivery to Bitrix24 has recovered at {_time(now)} after a stall since "
        f"{_time(stalled_since)} ({_minutes(now - stalled_since)}). "
        f"{backlog.waiting} submission(s) still wait, {backlog.failed} failed."
    )
    return Alert("recovered", f"[{PRODUCT}] delivery recovered", text)


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _minutes(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min"
