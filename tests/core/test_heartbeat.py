"""core.heartbeat: a claim kept alive while a build runs, and told when lost."""

import threading

from hgext_luigi.core import heartbeat


def test_it_beats_until_stopped_and_closes_in_its_own_thread():
    beats, closed_in = [], []
    hb = heartbeat.Heartbeat("t", 0.01, lambda: beats.append(1),
                             close=lambda: closed_in.append(threading.current_thread()))
    with hb:
        while len(beats) < 3:
            pass
    assert hb.lost is None and closed_in == [hb]


def test_a_claim_taken_over_stops_the_beat_even_with_keep_going():
    calls = []

    def beat():
        calls.append(1)
        return False  # another worker holds the lease now

    hb = heartbeat.Heartbeat("t", 0.01, beat, keep_going=True)
    hb.start()
    hb.join(5)
    assert not hb.is_alive() and calls == [1]
    assert hb.lost == "the claim was taken over"


def test_a_failing_beat_is_noted_and_tried_again_with_keep_going():
    calls = []

    def beat():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("database is locked")

    with heartbeat.Heartbeat("t", 0.01, beat, keep_going=True) as hb:
        while len(calls) < 4:
            pass
    assert hb.lost == "database is locked"  # said, though later beats worked


def test_a_failing_beat_stops_it_without_keep_going():
    def beat():
        raise RuntimeError("TaskTimedOut")

    hb = heartbeat.Heartbeat("t", 0.01, beat)
    hb.start()
    hb.join(5)
    assert not hb.is_alive() and hb.lost == "TaskTimedOut"
