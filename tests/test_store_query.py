"""Query parameters of /v1/stats and /v1/requests: pure parsing, every mistake a named 400."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbstr_trio.errors import ClientError
from arbstr_trio.store.query import (
    MAX_BUCKETS,
    MAX_LIMIT,
    Cursor,
    Filters,
    Sort,
    Window,
    parse_instant,
    parse_list_query,
    parse_stats_query,
)

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z
DAY = 86_400.0


def refused(params: list[tuple[str, str]], *, listing: bool = False) -> ClientError:
    parse = parse_list_query if listing else parse_stats_query
    with pytest.raises(ClientError) as caught:
        parse(params, NOW)
    assert caught.value.status_code() == 400
    return caught.value


# --- instants -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", "2024-05-01T00:00:00+00:00"),  # date only: midnight UTC
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12:00:00z", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12:00:00", "2024-05-01T12:00:00+00:00"),  # naive: UTC
        ("2024-05-01 12:00", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T07:30:00-04:30", "2024-05-01T12:00:00+00:00"),
        ("20240501T140000+0200", "2024-05-01T12:00:00+00:00"),  # basic format
        ("2024-05-01T12:00:00.250Z", "2024-05-01T12:00:00.250000+00:00"),
        ("2024-05-01T12:00:00,250Z", "2024-05-01T12:00:00.250000+00:00"),
        ("2024-W18-3", "2024-05-01T00:00:00+00:00"),  # ISO week date
        # An unencoded '+' in a query string arrives as a space.
        ("2024-05-01T14:00:00 02:00", "2024-05-01T12:00:00+00:00"),
    ],
)
def test_iso_8601_forms_are_read_as_instants(text: str, expected: str) -> None:
    assert parse_instant(text) == datetime.fromisoformat(expected).timestamp()


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(9000, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        ),
    )
)
def test_any_aware_isoformat_reads_back_as_the_same_instant(moment: datetime) -> None:
    assert parse_instant(moment.isoformat()) == moment.timestamp()
    utc = moment.astimezone(UTC)
    assert parse_instant(utc.isoformat().replace("+00:00", "Z")) == moment.timestamp()


@pytest.mark.parametrize("text", ["yesterday", "2024-05", "2024-13-01", "1714564800", "12:00"])
def test_what_is_not_iso_8601_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"isoformat|must be in"):
        parse_instant(text)


# --- the window -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "span"),
    [("last_1h", 3600.0), ("last_24h", DAY), ("last_7d", 7 * DAY), ("last_30d", 30 * DAY)],
)
def test_a_range_preset_ends_now(preset: str, span: float) -> None:
    query = parse_stats_query([("range", preset)], NOW)
    assert query.window == Window(since=NOW - span, until=NOW, preset=preset)


def test_stats_without_a_window_cover_the_last_24_hours_and_say_so() -> None:
    assert parse_stats_query([], NOW).window == Window(
        since=NOW - DAY, until=NOW, preset="last_24h"
    )


def test_stats_since_alone_runs_to_now_and_until_alone_covers_the_day_before() -> None:
    since = parse_stats_query([("since", "2024-04-01")], NOW).window
    assert since == Window(since=parse_instant("2024-04-01"), until=NOW)
    until = parse_stats_query([("until", "2024-04-01")], NOW).window
    assert until == Window(since=parse_instant("2024-03-31"), until=parse_instant("2024-04-01"))


def test_a_listing_without_a_window_is_the_whole_log() -> None:
    assert parse_list_query([], NOW).window == Window()
    assert parse_list_query([("until", "2024-04-01")], NOW).window == Window(
        until=parse_instant("2024-04-01")
    )


def test_the_same_instant_in_two_offsets_is_the_same_window() -> None:
    a = parse_stats_query([("since", "2024-05-01T10:00:00+02:00")], NOW).window
    b = parse_stats_query([("since", "2024-05-01T08:00:00Z")], NOW).window
    assert a == b


@pytest.mark.parametrize("other", ["since", "until"])
def test_range_with_since_or_until_is_refused_naming_range(other: str) -> None:
    error = refused([("range", "last_1h"), (other, "2024-05-01")])
    assert error.param == "range"


def test_since_not_before_until_is_refused_naming_since() -> None:
    error = refused([("since", "2024-05-01T12:00Z"), ("until", "2024-05-01T14:00+02:00")])
    assert error.param == "since"
    assert "earlier than until" in error.message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("range", "last_2h"),
        ("since", "not-a-date"),
        ("until", "2024-02-30"),
        ("streaming", "yes"),
        ("success", "maybe"),
        ("group_by", "status"),
        ("bucket", "minute"),
    ],
)
def test_a_bad_stats_value_is_refused_naming_its_parameter(name: str, value: str) -> None:
    error = refused([(name, value)])
    assert error.param == name
    assert error.code == "invalid_parameter"
    assert value in error.message


# --- parameters in general ------------------------------------------------------------


@pytest.mark.parametrize("name", ["provder", "sort", "limit", "status", "error_type", "RANGE"])
def test_an_unknown_stats_parameter_is_refused_by_name(name: str) -> None:
    error = refused([(name, "1")])
    assert error.param == name
    assert error.code == "unknown_parameter"


LISTING_PARAMS = {
    *("range", "since", "until", "model", "provider", "policy", "streaming", "success"),
    *("status", "error_type", "sort", "limit", "cursor"),
}


@given(st.text(min_size=1).filter(lambda name: name not in LISTING_PARAMS))
def test_any_unknown_listing_parameter_is_refused_by_name(name: str) -> None:
    error = refused([(name, "x")], listing=True)
    assert error.param == name
    assert error.code == "unknown_parameter"


def test_a_parameter_given_twice_is_refused() -> None:
    error = refused([("model", "a"), ("model", "b")])
    assert error.param == "model"
    assert "more than once" in error.message


def test_an_empty_value_is_refused_not_ignored() -> None:
    assert refused([("provider", "")]).param == "provider"


def test_filters_are_read() -> None:
    query = parse_stats_query(
        [
            ("model", "gpt-4o"),
            ("provider", "alpha"),
            ("policy", "cheap"),
            ("streaming", "TRUE"),
            ("success", "0"),
            ("group_by", "tier"),
            ("bucket", "day"),
        ],
        NOW,
    )
    assert query.filters == Filters(
        model="gpt-4o", provider="alpha", policy="cheap", streaming=True, success=False
    )
    assert query.filters.given() == {
        "model": "gpt-4o",
        "provider": "alpha",
        "policy": "cheap",
        "streaming": True,
        "success": False,
    }
    assert (query.group_by, query.bucket) == ("tier", "day")


def test_too_many_buckets_are_refused_naming_bucket() -> None:
    error = refused([("since", "2020-01-01"), ("bucket", "hour")])  # some 38,000 hours
    assert error.param == "bucket"
    assert str(MAX_BUCKETS) in error.message
    # The same window in days, and a month in hours, are fine.
    assert parse_stats_query([("since", "2020-01-01"), ("bucket", "day")], NOW).bucket == "day"
    assert parse_stats_query([("range", "last_30d"), ("bucket", "hour")], NOW).bucket == "hour"


# --- listing --------------------------------------------------------------------------


def test_listing_defaults() -> None:
    query = parse_list_query([], NOW)
    assert (query.sort, query.limit, query.after) == (Sort("started_at", True), 50, None)


@pytest.mark.parametrize(
    ("text", "sort"),
    [
        ("started_at", Sort("started_at", False)),
        ("-latency_ms", Sort("latency_ms", True)),
        ("cost_msat", Sort("cost_msat", False)),
        ("-ttfb_ms", Sort("ttfb_ms", True)),
    ],
)
def test_sort_takes_whitelisted_columns_with_an_optional_minus(text: str, sort: Sort) -> None:
    assert parse_list_query([("sort", text)], NOW).sort == sort


@pytest.mark.parametrize("text", ["model", "--latency_ms", "+latency_ms", "id", "latency_ms;"])
def test_any_other_sort_is_refused_naming_sort(text: str) -> None:
    assert refused([("sort", text)], listing=True).param == "sort"


@pytest.mark.parametrize("text", ["0", "501", "-1", "ten", "1.5", "١٠"])
def test_limit_must_be_1_to_500(text: str) -> None:
    error = refused([("limit", text)], listing=True)
    assert error.param == "limit"


def test_limit_and_listing_filters_are_read() -> None:
    query = parse_list_query(
        [("limit", str(MAX_LIMIT)), ("status", "502"), ("error_type", "stream_truncated")], NOW
    )
    assert query.limit == MAX_LIMIT
    assert query.filters == Filters(status=502, error_type="stream_truncated")


@pytest.mark.parametrize("text", ["99", "600", "abc"])
def test_status_must_be_an_http_status(text: str) -> None:
    assert refused([("status", text)], listing=True).param == "status"


@given(
    st.sampled_from(["started_at", "-started_at", "latency_ms", "-cost_msat", "ttfb_ms"]),
    st.one_of(
        st.none(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    st.integers(0, 2**62),
)
def test_a_cursor_round_trips(spec: str, value: int | float | None, row_id: int) -> None:
    sort = parse_list_query([("sort", spec)], NOW).sort
    cursor = Cursor(sort, value, row_id)
    query = parse_list_query([("sort", spec), ("cursor", cursor.encode())], NOW)
    assert query.after == cursor


@pytest.mark.parametrize(
    "text", ["garbage", "W10", "WyJ4Il0", Cursor(Sort("nope", True), 1, 2).encode(), "e30"]
)
def test_a_cursor_not_given_out_is_refused_naming_cursor(text: str) -> None:
    assert refused([("cursor", text)], listing=True).param == "cursor"


def test_a_cursor_with_another_sort_is_refused_naming_cursor() -> None:
    cursor = Cursor(Sort("latency_ms", True), 5, 9).encode()
    error = refused([("cursor", cursor)], listing=True)  # the default sort is -started_at
    assert error.param == "cursor"
    assert "sort=-latency_ms" in error.message


@pytest.mark.parametrize(
    ("param", "text"), [("until", "0001-01-01"), ("since", "0001-01-01T00:00:00+01:00")]
)
def test_an_instant_no_answer_could_show_is_refused_naming_it(param: str, text: str) -> None:
    error = refused([(param, text)], listing=True)
    assert error.param == param
    assert "between 1970 and 9999" in error.message


def test_a_cursor_past_what_sqlite_can_bind_is_refused_naming_cursor() -> None:
    sort = parse_list_query([], NOW).sort
    for cursor in (Cursor(sort, 1, 2**63), Cursor(sort, 2**63, 1)):
        assert refused([("cursor", cursor.encode())], listing=True).param == "cursor"
