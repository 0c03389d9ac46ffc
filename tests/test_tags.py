"""The `retry: N` tag: parsing is tolerant, writing is exact."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import retry


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], 0),
        (["nightly", "experiment-7"], 0),
        (["retry: 1"], 1),
        (["retry:2"], 2),
        (["  retry :  3  "], 3),
        (["Retry: 4"], 4),
        (["retry: 0"], 0),
        (["retry: 1", "retry: 3", "retry: 2"], 3),
        (["retry: x", "retry:", "retry: -1", "retry: 1.5", "retries: 9", "retry: 2"], 2),
        (["my retry: 5", "retry: 5 times"], 0),
        (["retry: ٣"], 0),  # Arabic-Indic digit: not a count we wrote
        ([None, 7, {"retry": 1}, "retry: 1"], 1),
        (["retry: 99999999999999999999"], 10**9),
    ],
)
def test_retry_number_reads_the_highest_valid_tag(tags: list[object], expected: int) -> None:
    assert retry.retry_number(tags) == expected


def test_retry_tags_replace_old_retry_tags_and_keep_the_rest() -> None:
    tags = ["nightly", "retry: 1", "Retry:1", "retry: x", "gpu"]
    assert retry.retry_tags(tags, 2) == ["nightly", "retry: x", "gpu", "retry: 2"]


def test_format_is_exactly_what_the_ui_shows() -> None:
    assert retry.format_retry_tag(3) == "retry: 3"


@given(st.lists(st.one_of(st.text(), st.sampled_from(["retry: 1", "retry:22", " RETRY : 7 "]))))
def test_parser_never_raises_and_never_goes_negative(tags: list[str]) -> None:
    assert retry.retry_number(tags) >= 0


@given(st.integers(min_value=0, max_value=retry.MAX_RETRIES), st.lists(st.text()))
def test_parser_round_trips_its_own_tag(number: int, other: list[str]) -> None:
    tags = retry.retry_tags(other, number)
    assert retry.retry_number(tags) == number
    assert tags.count(retry.format_retry_tag(number)) == 1
