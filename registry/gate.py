"""The promotion gate, promotion, forcing and rollback, each decision tagged on its version.

The caller computes the figures (champion and candidate on the gate subjects: same sequences,
same newest independent judge) and hands both over; `verdict` is a pure function of the two
figure sets and the policy. Decisions leave tags on the version: `gate.decision` (promoted,
refused, forced, rolled_back), `gate.rule`, `gate.reason`, `gate.actor`, `gate.time`,
`gate.figures` (what was compared), and `gate.log` (every decision on that version, as JSON).
A promotion without the caller's figures (the CLI) never overturns the gate's latest refusal
of a version: it restates it (rule `refused_before`) unless forced.
The registered model's `champion.history` tag lists the versions that held `champion`, oldest
first: rollback moves the alias back one step, past versions deleted from the registry since.
The tags are written before the alias moves, so a champion always carries the decision that
made it one (a failure in between leaves the decision tagged and the alias where it was).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow.entities.model_registry import ModelVersion

from model.evaluate.summary import figure_at
from model.settings import GateSettings as GatePolicy
from model.settings import get_settings
from registry.access import actor
from registry.versions import (
    CHAMPION,
    RegistryError,
    alias_version,
    client,
    get_version,
    json_tag,
    set_alias,
    set_version_tags,
    version_exists,
)

HISTORY_TAG = "champion.history"
HISTORY_KEEP = 200
NIGHTLY_ACTOR = "nightly flow"
REFUSED_BEFORE = "refused_before"


def default_policy() -> GatePolicy:
    """The gate policy configured in model.settings (POSECOACH_GATE_* overrides): margins (how
    much worse than the champion is tolerated), the class-collapse rules and the first model's
    floors. Every candidate's independently judged correction must also beat the same judge's
    verdict on the uncorrected inputs by more than `min_correction_gain` (None: no check).
    A class collapses when its accuracy is at or below `class_floor` (None: no absolute check)
    or more than `class_drop` below the champion's."""
    return get_settings().gate


@dataclass(frozen=True)
class GateFigures:
    """What the gate compares: macro accuracy, independently judged correction success (over
    all gate sequences) and each class's accuracy."""

    macro: float
    correction: float
    per_class: dict[str, float] = field(default_factory=dict)
    uncorrected: float = math.nan

    @classmethod
    def from_evaluation(cls, figures: Mapping[str, Any]) -> GateFigures:
        """Read the metrics' Evaluation.to_dict(); a figure absent or None reads as NaN."""
        per_class = {
            row["class"]: _number(row.get("accuracy")) for row in figures.get("per_class") or []
        }
        return cls(
            macro=_number(figures.get("macro")),
            correction=_number(figure_at(figures, "correction.independent.all")),
            per_class=per_class,
            uncorrected=_number(figure_at(figures, "correction.uncorrected.all")),
        )

    def has_nan(self) -> list[str]:
        """Names of the figures that are NaN."""
        named = {"macro": self.macro, "correction": self.correction,
                 **{f"class {k}": v for k, v in self.per_class.items()}}
        return [k for k, v in named.items() if math.isnan(v)]

    def to_dict(self) -> dict:
        """JSON-safe: NaN figures become None."""
        def plain(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {"macro": plain(self.macro), "correction": plain(self.correction),
                "uncorrected": plain(self.uncorrected),
                "per_class": {k: plain(v) for k, v in self.per_class.items()}}


def _number(value: Any) -> float:
    """A figure as a float; anything that is not a number reads as NaN."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


@dataclass(frozen=True)
class Verdict:
    passed: bool
    rule: str
    reason: str


def verdict(candidate: GateFigures, champion: GateFigures | None,
            policy: GatePolicy | None = None) -> Verdict:
    """Whether the candidate may replace the champion (None: there is none yet), and why."""
    policy = policy or default_policy()
    nan = candidate.has_nan()
    if nan:
        return Verdict(False, "no_nan", f"candidate figures are NaN: {', '.join(nan)}")
    floor = policy.class_floor
    low = [k for k, v in candidate.per_class.items() if floor is not None and v <= floor]
    if low:
        return Verdict(False, "class_collapse",
                       f"classes at or below accuracy {floor:.2f}: {', '.join(low)}")
    gain = policy.min_correction_gain
    if (gain is not None and not math.isnan(candidate.uncorrected)
            and candidate.correction <= candidate.uncorrected + gain):
        return Verdict(False, "correction_helps", f"independent correction "
                       f"{candidate.correction:.3f} does not improve on the uncorrected inputs "
                       f"({candidate.uncorrected:.3f} judged correct as they are) by more "
                       f"than {gain:.3f}")
    if champion is None:
        if candidate.macro < policy.floor_macro:
            return Verdict(False, "floor_macro", f"first model: macro accuracy "
                           f"{candidate.macro:.3f} below the floor {policy.floor_macro:.3f}")
        if candidate.correction < policy.floor_correction:
            return Verdict(False, "floor_correction", f"first model: independent correction "
                           f"{candidate.correction:.3f} below the floor "
                           f"{policy.floor_correction:.3f}")
        return Verdict(True, "above_floors", "first model, above the absolute floors")
    if candidate.macro < champion.macro - policy.macro_margin:
        return Verdict(False, "macro_accuracy", f"macro accuracy {candidate.macro:.3f} vs "
                       f"champion {champion.macro:.3f} (margin {policy.macro_margin:.3f})")
    if candidate.correction < champion.correction - policy.correction_margin:
        return Verdict(False, "independent_correction", f"independent correction "
                       f"{candidate.correction:.3f} vs champion {champion.correction:.3f} "
                       f"(margin {policy.correction_margin:.3f})")
    dropped = [
        f"{k} {v:.3f} vs {champion.per_class[k]:.3f}"
        for k, v in candidate.per_class.items()
        if k in champion.per_class and v < champion.per_class[k] - policy.class_drop
    ]
    if dropped:
        return Verdict(False, "class_collapse", f"classes far below the champion "
                       f"(more than {policy.class_drop:.2f}): {'; '.join(dropped)}")
    return Verdict(True, "not_worse", "not worse than the champion within the margins")


@dataclass
class Decision:
    """One decision on one version, as tagged on it."""

    name: str
    version: str
    decision: str
    rule: str
    reason: str
    actor: str
    time: str
    champion_before: str | None
    champion_after: str | None
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.decision in ("promoted", "forced")

    def to_dict(self) -> dict:
        return asdict(self)


def default_actor() -> str:
    """Who asks, when nobody says: the user the MLflow server authenticates, else the person
    logged in (registry.access.actor, made safe as a tag value)."""
    return actor()


def _now() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="seconds")


def _tag_decision(decision: Decision) -> None:
    mv = get_version(decision.name, decision.version)
    log = json_tag(mv, "gate.log", [])
    entry = decision.to_dict()
    set_version_tags(decision.name, decision.version, {
        "gate.decision": decision.decision,
        "gate.rule": decision.rule,
        "gate.reason": decision.reason,
        "gate.actor": decision.actor,
        "gate.time": decision.time,
        "gate.figures": json.dumps(decision.figures),
        "gate.log": json.dumps([*log, entry]),
    })


def champion_history(name: str) -> list[str]:
    """Versions that held `champion`, oldest first (consecutive repeats removed)."""
    raw = client().get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in raw.split(",") if v]


def _set_history(name: str, history: list[str]) -> None:
    client().set_registered_model_tag(name, HISTORY_TAG, ",".join(history[-HISTORY_KEEP:]))


def stored_figures(name: str, version: str | int) -> GateFigures:
    """The gate figures recorded on a version when it was registered."""
    return GateFigures.from_evaluation(json_tag(get_version(name, version), "gate_figures", {}))


def _last_refusal(mv: ModelVersion) -> dict | None:
    """The version's latest gate comparison (its `gate.log` entry) when that refused it, else
    None. Restating an earlier refusal (rule `refused_before`) compares nothing anew, and
    forcing or rolling back overrides a refusal without withdrawing it."""
    compared = [entry for entry in json_tag(mv, "gate.log", [])
                if entry.get("decision") in ("promoted", "refused")
                and entry.get("rule") != REFUSED_BEFORE]
    return compared[-1] if compared and compared[-1]["decision"] == "refused" else None


def _restated(refusal: dict) -> tuple[Verdict, dict[str, Any]]:
    """An earlier refusal, as the verdict of a promotion that brings no figures of its own."""
    figures = refusal.get("figures") or {}
    reason = figures.get("gate_reason") or refusal["reason"]
    then = refusal.get("champion_before")
    against = f"against champion version {then}" if then else "with no champion"
    return Verdict(False, REFUSED_BEFORE, (
        f"refused by the gate on {refusal['time']} ({refusal['actor']}, {against}): "
        f"{refusal['rule']}: {reason}")), figures


def _compared(name: str, version: str, current: str | None, candidate: Mapping[str, Any] | None,
              champion: Mapping[str, Any] | None, policy: GatePolicy
              ) -> tuple[Verdict, dict[str, Any]]:
    """The gate's verdict on the given figures (else those recorded at registration), and
    what it compared."""
    cand = (GateFigures.from_evaluation(candidate) if candidate is not None
            else stored_figures(name, version))
    champ = None
    if current is not None:
        champ = (GateFigures.from_evaluation(champion) if champion is not None
                 else stored_figures(name, current))
    result = verdict(cand, champ, policy)
    return result, {"candidate": cand.to_dict(),
                    "champion": None if champ is None else champ.to_dict(),
                    "champion_version": current, "policy": policy.to_dict(),
                    "gate_reason": result.reason}


def promote(
    name: str,
    version: str | int,
    *,
    candidate: Mapping[str, Any] | None = None,
    champion: Mapping[str, Any] | None = None,
    force: bool = False,
    reason: str | None = None,
    actor: str | None = None,
    policy: GatePolicy | None = None,
) -> Decision:
    """Move `champion` to `version` if the gate lets it (or if forced, which needs a reason).

    `candidate` / `champion` are the gate-subject figures (Evaluation.to_dict()) that the
    caller computed on the same sequences with the same judge. Without them, a version whose
    latest gate comparison refused it stays refused (rule `refused_before`, naming that
    refusal); any other is judged on the figures recorded on each version at registration.
    Returns the tagged decision.
    """
    version = str(version)
    if force and not (reason and reason.strip()):
        raise ValueError("forcing a promotion needs a reason")
    mv = get_version(name, version)
    current = alias_version(name, CHAMPION)
    if current == version:
        raise RegistryError(f"{name}: version {version} already is the champion")
    refusal = _last_refusal(mv) if candidate is None else None
    result, figures = (_restated(refusal) if refusal is not None else
                       _compared(name, version, current, candidate, champion,
                                 policy or default_policy()))
    kind = "promoted" if result.passed else "forced" if force else "refused"
    decision = Decision(
        name=name, version=version, decision=kind, rule=result.rule,
        reason=result.reason if kind == "refused" else reason or result.reason,
        actor=actor or default_actor(), time=_now(), champion_before=current,
        champion_after=version if kind != "refused" else current, figures=figures,
    )
    _tag_decision(decision)
    if decision.promoted:
        set_alias(name, CHAMPION, version)
        history = champion_history(name)
        if current is not None and (not history or history[-1] != current):
            history.append(current)
        _set_history(name, [*history, version])
    return decision


def _newest_registered(name: str, history: list[str]) -> tuple[str | None, list[str]]:
    """The newest version in `history` still registered, and the newer ones passed over
    because they were deleted from the registry (newest first)."""
    deleted = []
    for version in reversed(history):
        if version_exists(name, version):
            return version, deleted
        deleted.append(version)
    return None, deleted


def rollback(name: str, *, actor: str | None = None, reason: str | None = None) -> Decision:
    """Give `champion` back to the newest earlier champion still registered (those deleted
    are skipped, and named in the decision's figures); both versions are tagged."""
    history = champion_history(name)
    current = alias_version(name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name}: there is no champion to roll back")
    if history and history[-1] == current:
        history = history[:-1]
    previous, deleted = _newest_registered(name, history)
    if previous is None and deleted:
        raise RegistryError(
            f"{name}: cannot roll back from version {current}: the earlier champions in "
            f"{HISTORY_TAG} (versions {', '.join(history)}) were all deleted from the "
            "registry; promote a version instead")
    if previous is None:
        raise RegistryError(f"{name}: version {current} is the first champion; "
                            "there is no previous one to roll back to")
    decision = Decision(
        name=name, version=current, decision="rolled_back", rule="rollback",
        reason=reason or "rolled back by request", actor=actor or default_actor(), time=_now(),
        champion_before=current, champion_after=previous,
        figures={"from_version": current, "to_version": previous, "skipped_deleted": deleted},
    )
    _tag_decision(decision)
    _tag_decision(Decision(**{**decision.to_dict(), "version": previous}))
    set_alias(name, CHAMPION, previous)
    _set_history(name, history[:len(history) - len(deleted)])
    return decision
