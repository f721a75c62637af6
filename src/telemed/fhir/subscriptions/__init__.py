"""R4 Subscriptions (R4 §2.46 / Subscription): criteria matched at write time into an outbox in the
writing transaction; delivery queued with retries; channels rest-hook and websocket."""
