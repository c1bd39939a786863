"""The reliability suite (issue 13): hostile input, injected faults, coexistence, concurrency,
no gap during replacement, idempotence - over every registered scenario and backend."""
