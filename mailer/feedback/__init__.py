"""What comes back from readers' mail systems, gathered in one place.

Provider webhooks, bounces and unsubscribe requests by email all end as the same few events
applied to subscriber state; each kind of signal has its own module here, and each provider
its own module under ``providers/`` exposing ``verify`` and ``parse``.
"""
