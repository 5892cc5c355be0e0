"""Replay and backfill: re-run a window of ``tickets.ingress`` (or a file) through today's
pipeline on the batch lane, priced before it spends (``ticketflow replay``)."""
