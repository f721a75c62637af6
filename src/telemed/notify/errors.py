"""How a transport says that trying again cannot help."""

from __future__ import annotations


class DeliveryRefused(Exception):
    """The provider refused this message for good (unknown mailbox, invalid number, content
    rejected): the delivery fails at once instead of being retried. Any other exception from a
    sender counts as transient and is retried with backoff."""
