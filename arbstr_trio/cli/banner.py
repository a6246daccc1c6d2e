"""The banner ``serve`` prints on stdout once it accepts connections."""

from __future__ import annotations

from arbstr_trio import __version__
from arbstr_trio.config.models import Config

__all__ = ["announce"]


def announce(url: str, config: Config, *, mock_urls: str | None, workers: int = 1) -> None:
    """The banner on stdout; ``mock_urls`` (None: no mocks) names the mock providers."""
    # One write, so whoever reads our stdout gets the whole banner at once.
    lines = [f"arbstr-trio {__version__} listening on {url}"]
    if workers > 1:
        lines[0] += f" ({workers} workers)"
    if mock_urls is not None:
        first = config.providers[0]
        model = first.models[0] if first.models else "mock-model"
        body = f'{{"model": "{model}", "messages": [{{"role": "user", "content": "hello"}}]}}'
        lines.append(f"  mock providers: {mock_urls}")
        lines.append(
            f"  try: curl -s {url}/v1/chat/completions "
            f"-H 'content-type: application/json' -d '{body}'"
        )
    print("\n".join(lines), flush=True)
