"""The reader's web side (Starlette): sign-up, confirm, unsubscribe, preferences, and the
output folder's feeds and archive pages."""

from syndicate.web.app import create_app

__all__ = ["create_app"]
