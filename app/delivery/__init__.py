"""Delivery: the plan (submission -> Bitrix24 commands), the retry policy, and the worker."""

from app.delivery.retry import RetryPolicy
from app.delivery.worker import Worker, WorkerConfig

__all__ = ["RetryPolicy", "Worker", "WorkerConfig"]
