from collections import Counter

import pytest

from proxy.upstream.keypool import KeyPool, NoKeyAvailable, UpstreamKey


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_weights_share_requests_in_proportion_and_interleaved() -> None:
    a, b = UpstreamKey("key-aaaa-0001", weight=3), UpstreamKey("key-bbbb-0002", weight=1)
    pool = KeyPool([a, b])
    picks = [pool.acquire() for _ in range(8)]
    assert Counter(k.label for k in picks) == {a.label: 6, b.label: 2}
    assert picks[:4].count(b) == 1  # smooth: never a run of all of a's turns first


def test_resting_key_skipped_until_its_time_passes() -> None:
    clock = Clock()
    a, b = UpstreamKey("key-aaaa-0001"), UpstreamKey("key-bbbb-0002")
    pool = KeyPool([a, b], clock=clock)
    pool.rest(a, 10)
    assert {pool.acquire().label for _ in range(4)} == {b.label}
    clock.now = 11
    assert {pool.acquire().label for _ in range(4)} == {a.label, b.label}


def test_all_resting_tells_when_one_comes_back() -> None:
    clock = Clock()
    a, b = UpstreamKey("key-aaaa-0001"), UpstreamKey("key-bbbb-0002")
    pool = KeyPool([a, b], clock=clock)
    pool.rest(a, 10)
    pool.rest(b, 4)
    with pytest.raises(NoKeyAvailable) as raised:
        pool.acquire()
    assert raised.value.retry_in == 4


def test_all_disabled_never_comes_back() -> None:
    a = UpstreamKey("key-aaaa-0001")
    pool = KeyPool([a])
    pool.disable(a)
    with pytest.raises(NoKeyAvailable) as raised:
        pool.acquire()
    assert raised.value.retry_in is None


def test_state_never_shows_secrets() -> None:
    pool = KeyPool([UpstreamKey("sk-ant-very-secret-9999")])
    assert "very-secret" not in repr(pool.state())
    assert "very-secret" not in repr(pool.keys)
