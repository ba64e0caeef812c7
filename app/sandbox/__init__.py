"""A faithful in-memory Bitrix24 incoming-webhook REST emulator (docs/bitrix24.md §11.1), for
sandbox mode, the demo and the tests. Standalone: it imports nothing from the rest of `app`.
"""

from app.sandbox.app import create_emulator_app
from app.sandbox.emulator import Emulator, EmulatorConfig
from app.sandbox.guard import SameOriginOnly

__all__ = ["Emulator", "EmulatorConfig", "SameOriginOnly", "create_emulator_app"]
