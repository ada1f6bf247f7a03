"""Who may do what, how often and how many times: tokens and passwords, rate limits, idempotency keys."""
