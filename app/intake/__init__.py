"""The HTTP edge for submissions: body parsing, validation, origin check, answers."""

from app.intake.routes import IntakeContext, router

__all__ = ["IntakeContext", "router"]
