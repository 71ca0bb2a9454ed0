"""The retraining decision (monitoring.policy.decide), kind by kind and edge by edge."""

from dataclasses import replace

import pytest

from panelcast.core.config import BacktestSpec, PolicySpec
from panelcast.monitoring.policy import MAX_BACKOFF, Decision, Observation, backoff, decide

from .test_backtest import small_spec


@pytest.fixture(scope="module")
def spec() -> BacktestSpec:
    return small_spec([PolicySpec("never", "never")])


#: A quiet period: the live error at the validation error, the rule worse, no drift.
QUIET = Observation(
    period=100,
    since_retrain=10,
    drifted=False,
    error_alarm=False,
    window_wape=0.06,
    rule_window_wape=0.08,
    validation_wape=0.06,
)
ON_ERROR = PolicySpec("on_error", "on_error")
PER_SEGMENT = PolicySpec("seg", "on_error", per_segment=True)


def test_never_never_retrains(spec):
    loud = replace(QUIET, drifted=True, error_alarm=True, since_retrain=99)
    assert decide(PolicySpec("never", "never"), spec, loud) == Decision(
        False, "the policy never retrains", ""
    )


def test_every_follows_the_schedule_only(spec):
    every = PolicySpec("every_12", "every", 12)
    assert not decide(every, spec, replace(QUIET, since_retrain=11, error_alarm=True)).retrain
    due = decide(every, spec, replace(QUIET, since_retrain=12))
    assert due.retrain and due.trigger == "schedule" and "every 12" in due.reason


@pytest.mark.parametrize(
    ("drifted", "alarm", "trigger"),
    [(True, False, "drift"), (False, True, "error"), (True, True, "drift+error")],
)
def test_on_alarm_retrains_on_drift_or_error_after_the_cooldown(spec, drifted, alarm, trigger):
    policy = PolicySpec("on_alarm", "on_alarm")
    obs = replace(QUIET, drifted=drifted, error_alarm=alarm, window_wape=0.2)
    decision = decide(policy, spec, obs)
    assert decision.retrain and decision.trigger == trigger
    assert not decide(policy, spec, replace(obs, since_retrain=2)).retrain  # cooldown 3
    assert decide(policy, spec, replace(obs, since_retrain=3)).retrain
    assert not decide(policy, spec, QUIET).retrain


def test_on_alarm_cooldown_is_at_least_one_period(spec):
    policy = PolicySpec("on_alarm", "on_alarm")
    no_wait = spec.model_copy(update={"min_periods_between": 0})
    obs = replace(QUIET, drifted=True)
    assert not decide(policy, no_wait, replace(obs, since_retrain=0)).retrain
    assert decide(policy, no_wait, replace(obs, since_retrain=1)).retrain


def test_on_error_retrains_on_the_error_alarm_in_plain_words(spec):
    obs = replace(
        QUIET, error_alarm=True, window_wape=0.112, validation_wape=0.061, rule_window_wape=0.2
    )
    decision = decide(ON_ERROR, spec, obs)
    assert decision.retrain and decision.trigger == "error" and not decision.segments
    assert decision.reason == (
        "live WAPE 0.112 over the last 3 period(s) is above 1.5 x the validation WAPE 0.061"
    )


def test_on_error_drift_alone_is_a_reason_to_look_not_to_retrain(spec):
    decision = decide(ON_ERROR, spec, replace(QUIET, drifted=True))
    assert not decision.retrain and decision.trigger == "" and "drifted" in decision.look
    assert decide(ON_ERROR, spec, QUIET).look == ""
    both = decide(ON_ERROR, spec, replace(QUIET, drifted=True, error_alarm=True))
    assert both.retrain and both.trigger == "error" and both.look  # drift noted, not the cause


def test_on_error_retrains_when_the_rule_beat_the_champion_by_the_margin(spec):
    beaten = replace(QUIET, window_wape=0.10, rule_window_wape=0.09)
    decision = decide(ON_ERROR, spec, beaten)
    assert decision.retrain and decision.trigger == "rules" and "best rule" in decision.reason
    # 0.09 x 1.2 = 0.108 is not below 0.10: a 20 % margin keeps the champion
    assert not decide(PolicySpec("m", "on_error", rule_margin_pct=20), spec, beaten).retrain
    assert decide(PolicySpec("m", "on_error", rule_margin_pct=10), spec, beaten).retrain  # 0.099
    assert not decide(ON_ERROR, spec, replace(beaten, rule_window_wape=None)).retrain
    assert not decide(ON_ERROR, spec, replace(beaten, window_wape=None)).retrain


def test_on_error_waits_for_the_cooldown_and_backs_off_after_kept_challengers(spec):
    obs = replace(QUIET, error_alarm=True, window_wape=0.2)
    assert not decide(ON_ERROR, spec, replace(obs, since_retrain=2)).retrain
    assert decide(ON_ERROR, spec, replace(obs, since_retrain=3)).retrain
    kept = replace(obs, since_retrain=5, kept_in_a_row=1)  # now 6 periods
    held = decide(ON_ERROR, spec, kept)
    assert not held.retrain and "1 challenger(s) kept in a row" in held.reason
    assert decide(ON_ERROR, spec, replace(kept, since_retrain=6)).retrain
    assert [backoff(spec, k) for k in range(6)] == [3, 6, 12, 24, 24, 24]
    assert MAX_BACKOFF == 8


def test_per_segment_refits_the_degraded_routed_segments_alone(spec):
    obs = replace(
        QUIET,
        segment_window_wape={"A": 0.20, "B": 0.07, "C": 0.30, "G": 0.5},
        segment_validation_wape={"A": 0.10, "B": 0.06, "C": 0.10, "G": 0.1},
        routed_segments=frozenset({"A", "B", "C"}),  # G is on the global model
    )
    decision = decide(PER_SEGMENT, spec, obs)
    assert decision == Decision(False, decision.reason, "segments", ("A", "C"))
    assert "A, C" in decision.reason
    assert not decide(ON_ERROR, spec, obs).segments  # per_segment off
    # A was refitted 2 periods ago (< 3): C alone
    recent = replace(obs, segment_since_refit={"A": 2, "C": 3})
    assert decide(PER_SEGMENT, spec, recent).segments == ("C",)
    # the last full retrain was 2 periods ago: no segment is due either
    assert decide(PER_SEGMENT, spec, replace(obs, since_retrain=2)).segments == ()
    # a segment without its validation WAPE is left alone
    assert decide(PER_SEGMENT, spec, replace(obs, segment_validation_wape={"A": 0.1})).segments == (
        "A",
    )


def test_a_full_retrain_takes_precedence_over_segments(spec):
    obs = replace(
        QUIET,
        error_alarm=True,
        window_wape=0.2,
        segment_window_wape={"A": 0.3},
        segment_validation_wape={"A": 0.1},
        routed_segments=frozenset({"A"}),
    )
    full = decide(PER_SEGMENT, spec, obs)
    assert full.retrain and full.segments == ()
    cooling = decide(PER_SEGMENT, spec, replace(obs, since_retrain=5, kept_in_a_row=1))
    assert not cooling.retrain and cooling.segments == ("A",) and cooling.trigger == "segments"


def test_an_unknown_kind_is_refused(spec):
    odd = PolicySpec.model_construct(name="odd", kind="sometimes")
    with pytest.raises(ValueError, match="unknown policy kind 'sometimes'"):
        decide(odd, spec, QUIET)
