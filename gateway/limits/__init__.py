"""Rate limits (GCRA), concurrent in-flight limits and token quotas for `POST /v1/requests` (docs/limits.md)."""
