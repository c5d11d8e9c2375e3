"""Running rounds on devices: the per-run settings, the compiled round program, the server's
aggregation and update, client-state storage, evaluation, placement, and the plain reference."""
