"""arbstr-trio: an OpenAI-compatible LLM routing proxy on Trio."""

__version__ = "0.1.0"
