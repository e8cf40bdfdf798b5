"""Plain aiokafka consumers: inference worker, result writer (and later webhooks, usage sink, autoscaler)."""
