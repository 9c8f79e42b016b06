"""Outgoing webhooks: the receivers staff register and the delivery of the outbox."""
