"""What the proxy knows about each provider's health: breakers, rate limits, permits."""
