"""The admin API (`/admin/submissions...`, bearer ADMIN_TOKEN) and the `submissions` CLI commands.

Reads and changes submissions only through `app.store`; main.py hands in everything else.
"""

from app.admin.cli import add_commands
from app.admin.routes import install
from app.admin.service import AdminContext

__all__ = ["AdminContext", "add_commands", "install"]
