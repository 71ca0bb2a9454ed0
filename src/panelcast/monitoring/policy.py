"""The retraining decision, one pure function shared by the backtest and the production cycle.

After each labelled period the caller summarises what it knows in an :class:`Observation`
(the champion's live error, the drift verdict, its best rule's error over the same rows,
the same per segment) and :func:`decide` says what to do, in plain words:

- ``never``: nothing;
- ``every``: a full retrain every ``every_periods`` periods (trigger ``schedule``);
- ``on_alarm``: a full retrain when drift or the error alarm fires, at most one every
  ``backtest.min_periods_between`` periods (triggers ``drift``, ``error``, ``drift+error``);
- ``on_error`` (cost-aware): a full retrain when the error alarm fires (trigger
  ``error``) or when the champion's best rule beat it over the error window by more than
  ``rule_margin_pct`` percent (trigger ``rules``); drift only fills :attr:`Decision.look`.
  The cooldown doubles after each challenger kept in a row (``kept_in_a_row``): a refused
  challenger says retraining did not help, so the next try waits longer (at most
  :data:`MAX_BACKOFF` times the cooldown). With ``per_segment``, when no full retrain is
  due, the routed segments whose own window WAPE exceeds ``error_factor`` times their own
  validation WAPE are refitted alone (trigger ``segments``), each at most once per
  cooldown (``segment_since_refit``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..core.config import BacktestSpec, PolicySpec

logger = logging.getLogger(__name__)

#: The longest wait after challengers kept in a row, in cooldowns (``on_error``).
MAX_BACKOFF = 8


@dataclass(frozen=True)
class Observation:
    """What the caller knows after period ``period`` was labelled (see :func:`decide`)."""

    period: int  # the period just labelled (calendar integer)
    since_retrain: int  # periods since the last retrain (or since the first deployment)
    drifted: bool  # the drift verdict on the latest drift window
    # live WAPE over the error window > error_factor x validation WAPE
    error_alarm: bool
    window_wape: float | None  # the champion's live WAPE over the error window
    rule_window_wape: float | None  # the champion's best rule's WAPE over the same rows
    validation_wape: float  # the champion's validation WAPE
    segment_window_wape: Mapping[str, float] = field(default_factory=dict)
    segment_rule_window_wape: Mapping[str, float] = field(default_factory=dict)
    segment_validation_wape: Mapping[str, float] = field(default_factory=dict)
    #: segments with a model of their own (a per-segment refit is possible)
    routed_segments: frozenset[str] = frozenset()
    #: challengers kept (not promoted) in a row since the last promotion (``on_error``
    #: backs off: 0 when unknown)
    kept_in_a_row: int = 0
    #: per segment, periods since its last own refit (absent: ``since_retrain``)
    segment_since_refit: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What to do: a full retrain, a refit of some segments alone, or nothing."""

    retrain: bool  # a full retrain (a challenger for the whole deployment)
    reason: str  # plain words
    trigger: str  # "schedule", "drift", "error", "drift+error", "rules", "segments" or ""
    segments: tuple[str, ...] = ()  # per-segment refit only (retrain False)
    look: str = ""  # drift noted as a reason to look, for on_error


def cooldown(spec: BacktestSpec) -> int:
    """The fewest periods between two retrains (and two refits of one segment)."""
    return max(spec.min_periods_between, 1)


def backoff(spec: BacktestSpec, kept_in_a_row: int) -> int:
    """The cooldown of ``on_error`` after ``kept_in_a_row`` challengers kept in a row."""
    return cooldown(spec) * min(2 ** max(kept_in_a_row, 0), MAX_BACKOFF)


def decide(policy: PolicySpec, spec: BacktestSpec, obs: Observation) -> Decision:
    """The decision of ``policy`` (with the thresholds of ``spec``) on ``obs``."""
    if policy.kind == "never":
        return Decision(False, "the policy never retrains", "")
    if policy.kind == "every":
        if obs.since_retrain >= policy.every_periods:
            return Decision(
                True,
                f"{obs.since_retrain} period(s) since the last retrain: the schedule retrains "
                f"every {policy.every_periods}",
                "schedule",
            )
        return Decision(False, "not due on the schedule", "")
    if policy.kind == "on_alarm":
        return _on_alarm(spec, obs)
    if policy.kind == "on_error":
        return _on_error(policy, spec, obs)
    raise ValueError(
        f"unknown policy kind {policy.kind!r}; expected never, every, on_alarm or on_error."
    )


def _alarm_words(spec: BacktestSpec, obs: Observation) -> str:
    return (
        f"live WAPE {_num(obs.window_wape)} over the last {spec.error_window_periods} "
        f"period(s) is above {spec.error_factor:g} x the validation WAPE "
        f"{_num(obs.validation_wape)}"
    )


def _on_alarm(spec: BacktestSpec, obs: Observation) -> Decision:
    trigger = "+".join(
        name for name, fired in (("drift", obs.drifted), ("error", obs.error_alarm)) if fired
    )
    if not trigger:
        return Decision(False, "neither drift nor the error alarm", "")
    if obs.since_retrain < cooldown(spec):
        return Decision(
            False,
            f"{trigger} fired but the last retrain was {obs.since_retrain} period(s) ago "
            f"(< {cooldown(spec)})",
            "",
        )
    words = []
    if obs.drifted:
        words.append("the latest drift window drifted")
    if obs.error_alarm:
        words.append(_alarm_words(spec, obs))
    return Decision(True, " and ".join(words), trigger)


def _rules_beat(margin_pct: float, model: float | None, rule: float | None) -> bool:
    """The rule's WAPE, raised by ``margin_pct`` percent, is below the model's."""
    if model is None or rule is None:
        return False
    return rule * (1 + margin_pct / 100) < model


def _on_error(policy: PolicySpec, spec: BacktestSpec, obs: Observation) -> Decision:
    look = (
        f"the latest {spec.drift_window_periods} period(s) drifted from the champion's "
        "reference: worth a look (not a reason to retrain)"
        if obs.drifted
        else ""
    )
    rules = _rules_beat(policy.rule_margin_pct, obs.window_wape, obs.rule_window_wape)
    wait = backoff(spec, obs.kept_in_a_row)
    if obs.error_alarm or rules:
        words = [_alarm_words(spec, obs)] if obs.error_alarm else []
        if rules:
            words.append(
                f"the best rule's WAPE {_num(obs.rule_window_wape)} beat the champion's "
                f"{_num(obs.window_wape)} over the last {spec.error_window_periods} "
                f"period(s) (margin {policy.rule_margin_pct:g}%)"
            )
        reason = " and ".join(words)
        if obs.since_retrain >= wait:
            return Decision(True, reason, "error" if obs.error_alarm else "rules", look=look)
        held = f"{reason}, but the last retrain was {obs.since_retrain} period(s) ago (< {wait}" + (
            f" after {obs.kept_in_a_row} challenger(s) kept in a row)" if obs.kept_in_a_row else ")"
        )
    else:
        held = "the live error is within its alarm and no rule beat the champion"
    if policy.per_segment:
        segments = _degraded_segments(spec, obs)
        if segments:
            return Decision(
                False,
                f"{held}; segment(s) {', '.join(segments)}: own live WAPE above "
                f"{spec.error_factor:g} x own validation WAPE, refitted alone",
                "segments",
                segments,
                look,
            )
    return Decision(False, held, "", look=look)


def _degraded_segments(spec: BacktestSpec, obs: Observation) -> tuple[str, ...]:
    """Routed segments whose own window WAPE exceeds ``error_factor`` times their own
    validation WAPE, not refitted (nor retrained) within the cooldown, in name order."""
    out = []
    for seg in sorted(obs.routed_segments):
        wape, val = obs.segment_window_wape.get(seg), obs.segment_validation_wape.get(seg)
        if wape is None or val is None or not wape > spec.error_factor * val:
            continue
        if obs.segment_since_refit.get(seg, obs.since_retrain) >= cooldown(spec):
            out.append(seg)
    return tuple(out)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
