"""Kite sessions: the store in Secrets Manager, the scheduled and on-demand actions, events."""
