"""``candlewax notify``: alerts topic → Telegram, WeCom group robots and JSON webhooks.

- :mod:`sinks.notify.text` renders alerts (English, Chinese) into each platform's markup and
  fits them into its size limit on safe boundaries (pure functions).
- :mod:`sinks.notify.channels` talks to the platforms and classifies every answer
  (delivered, rate limited, try again, rejected); rate limits are in :mod:`sinks.notify.ratelimit`.
- :mod:`sinks.notify.config` reads the ``[candlewax.notify]`` table and the credentials.
- :mod:`sinks.notify.store` remembers delivered alert ids (SQLite) across restarts.
- :mod:`sinks.notify.notifier` is the consumer group: routing, per-destination queues and
  digests, retries, dead letters, and offset commits only after delivery.
"""
