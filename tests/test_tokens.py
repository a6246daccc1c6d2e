"""The prompt bound a budget holds: never below what a byte-level tokenizer can make."""

from __future__ import annotations

from arbstr_trio.tokens import estimate_prompt_tokens, prompt_token_bound


def user(content: object) -> dict[str, object]:
    return {"role": "user", "content": content}


def test_the_bound_counts_bytes_so_no_script_can_beat_it() -> None:
    # Four characters a token is fair for English; CJK text can be a token per
    # character, three UTF-8 bytes each. The bound must cover both.
    english, chinese = [user("word " * 100)], [user("字" * 100)]
    assert prompt_token_bound(english) >= 500
    assert prompt_token_bound(chinese) >= 300
    assert estimate_prompt_tokens(chinese) < 100 < prompt_token_bound(chinese)


def test_every_message_and_tool_adds_to_the_bound() -> None:
    one = prompt_token_bound([user("hi")])
    two = prompt_token_bound([user("hi"), user("hi")])
    assert two - one >= 2 + 4  # the text, and a message's special tokens
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    assert prompt_token_bound([user("hi")], tools) > one + len("lookup")


def test_an_image_is_held_at_the_largest_high_detail_charge() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}}
    with_image = prompt_token_bound([user([{"type": "text", "text": "what is this"}, image])])
    without = prompt_token_bound([user([{"type": "text", "text": "what is this"}])])
    # Not the 10 kB of base64: an image is billed by its tiles, not its encoding.
    assert with_image - without == 1_445


def test_the_bound_is_never_below_the_estimate() -> None:
    for messages in ([user("")], [user("a")], [user("hello " * 1000)], [user([])]):
        assert prompt_token_bound(messages) >= estimate_prompt_tokens(messages)


def test_files_audio_functions_and_schemas_count_toward_the_bound() -> None:
    pdf = {"type": "file", "file": {"file_data": "data:application/pdf;base64," + "J" * 30_000}}
    assert prompt_token_bound([user([pdf])]) > 30_000  # not below a bare "hi"
    functions = [{"name": "lookup", "description": "d" * 500, "parameters": {}}]
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"x": "y" * 500}}}
    bare = prompt_token_bound([user("hi")])
    assert prompt_token_bound([user("hi")], functions) > bare + 500
    assert prompt_token_bound([user("hi")], schema) > bare + 500
