"""What a verdict may say, given the scale at which its run measured the claim.

A chapter's rule (its ``verdicts``, built on the tests in :mod:`dropnotes.stats`) turns measured numbers into a
*rule verdict*: a text that starts with ``reproduced``, ``partly``, ``not reproduced``, ``inconclusive``,
``not converged`` or ``not measured``.
What that verdict may claim depends on the run's scale, and this module decides it, the same way for every
chapter and for both signs:

* a run **at the paper's setting** (nothing cut from it, at least :data:`MIN_SEEDS` seeds) keeps its rule
  verdict: *reproduced*, *partly* or *not reproduced*;
* a run **below it** (any shortfall: model, data, schedule, seeds) reads at most *direction at reduced
  scale* (the paper's sign, significant), *opposite at reduced scale* (the other sign, significant) or
  *inconclusive*. A *level* claim (the paper's number itself) measured below the paper's setting reads
  *not at paper scale*, whether the level was met or missed.

So a small run can never confirm what it could not refute, and never refute what it could not confirm.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum

import pandas as pd

# The book's verdict rules, versioned apart from the chapters' protocols (which define what a run trains): a stored
# verdict table made under older rules is never shown as it is; the chapter judges the record again from its stored
# numbers (its ``rejudge``), or it reads *not judged*. 1: best validation epoch before the last quarter, the larger
# of a seed and an unpaired binomial SE times t. 2: the plateau test per arm (stats.plateau, stats.blocks), paired
# comparisons on the same test examples with seed variance (stats.compare_examples), interval rules for levels and
# "does not beat" claims.
RULES = 2
MIN_SEEDS = 3  # fewer seeds: the SE holds test-set noise only, and a verdict can be a direction at most


class Outcome(str, Enum):
    """A verdict's category, the one word the scorecard counts."""

    REPRODUCED = "reproduced"
    PARTLY = "partly"
    NOT_REPRODUCED = "not reproduced"
    DIRECTION = "direction at reduced scale"
    OPPOSITE = "opposite at reduced scale"
    INCONCLUSIVE = "inconclusive"
    NOT_AT_SCALE = "not at paper scale"
    NOT_CONVERGED = "not converged"
    NOT_TRAINED = "not trained"  # a net at chance or diverged: never evidence
    NOT_JUDGED = "not judged"  # the record lacks what the rule needs (curves, per-example correctness)
    NOT_MEASURED = "not measured"
    NEEDS_GPU = "needs a GPU"  # no laptop setting can test the claim (the chapter gives the estimate)
    SUPERSEDED = "superseded"


OUTCOMES = tuple(o.value for o in Outcome)
# What a claim is: the paper's own claim, a hypothesis of this book, or a practitioners' rule without an ablation
# behind it. Only paper claims are counted as reproductions of the literature.
KINDS = ("paper claim", "our test", "rule of thumb", "setup check")
# What the rule tests: a sign, an equality (TOST), the paper's number, or a timing (repeated measurements of one
# setting, where seeds play no part).
TESTS = ("direction", "equivalence", "level", "timing")


OPTIONAL = ("setting", "part", "effect", "low", "high", "paper_effect", "margin", "unit", "decide")


@dataclass(frozen=True)
class Verdict:
    """One row of a chapter's closing table, as its rule reads the measurement (before :func:`judge` reads it at
    the run's scale): the claim and where it comes from, the paper's value and ours, the rule's verdict (a text
    that starts with an :class:`Outcome`), what kind of claim it is (:data:`KINDS`), what the rule tests
    (:data:`TESTS`), the paper setting it is judged against (one of the chapter's ``PAPER_SETTINGS``; None: the
    first) and, where a chapter has several parts judged apart, its part."""

    claim: str
    source: str
    paper: str
    ours: str
    verdict: str
    kind: str = "paper claim"
    test: str = "direction"
    setting: str | None = None
    part: str | None = None
    # The numbers behind the verdict, for the forest plot and the power statement (None where a row has none):
    # the measured effect, signed so that > 0 is the paper's direction, with its 95 % interval; the paper's own
    # effect on the same scale; the margin of an equivalence (TOST) or "does not beat" claim, or the convergence
    # tolerance; the unit all of them are in; and, for an undecided row, what would decide it (computed).
    effect: float | None = None
    low: float | None = None
    high: float | None = None
    paper_effect: float | None = None
    margin: float | None = None
    unit: str | None = None
    decide: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {self.kind!r}")
        if self.test not in TESTS:
            raise ValueError(f"test must be one of {', '.join(map(repr, TESTS))}, got {self.test!r}")
        rule_outcome(self.verdict)  # a verdict states its outcome first

    def row(self) -> dict:
        """The table row: every field, the optional ones only where they are set."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in OPTIONAL}


def verdict_table(verdicts: Iterable[Verdict]) -> pd.DataFrame:
    """A chapter's closing table from its :class:`Verdict` rows (what :func:`judge` reads)."""
    rows = []
    for v in verdicts:
        if not isinstance(v, Verdict):
            raise TypeError(f"a verdict table is made of Verdict rows, got {type(v).__name__}")
        rows.append(v.row())
    return pd.DataFrame(rows)


def rule_outcome(text: str) -> Outcome:
    """The outcome a rule's verdict text states (its leading words); ``ValueError`` if it states none."""
    v = str(text).strip()
    for outcome in sorted(Outcome, key=lambda o: -len(o.value)):  # longest first: "not reproduced" before "reproduced"
        if v.startswith(outcome.value):
            return outcome
    raise ValueError(f"verdict must start with one of {', '.join(map(repr, OUTCOMES))}, got {text!r}")


def scaled(rule: str, cut: Sequence[str], test: str = "direction") -> tuple[Outcome, str]:
    """The outcome and the verdict text that a rule verdict ``rule`` may read at a run's scale. ``cut``: what
    the run fell short of (:func:`dropnotes.stats.shortfall`, plus too few seeds); ``test``: what the rule
    tests (see :data:`TESTS`). The text keeps the rule's own words after the outcome when they differ."""
    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(map(repr, TESTS))}, got {test!r}")
    raw = rule_outcome(rule)
    if not cut or raw in (Outcome.INCONCLUSIVE, Outcome.NOT_CONVERGED, Outcome.NOT_MEASURED, Outcome.NOT_AT_SCALE,
                          Outcome.NOT_TRAINED, Outcome.NOT_JUDGED,
                          Outcome.SUPERSEDED, Outcome.DIRECTION, Outcome.OPPOSITE):
        return raw, str(rule)
    if test == "level":
        outcome = Outcome.NOT_AT_SCALE
    elif raw is Outcome.REPRODUCED:
        outcome = Outcome.DIRECTION
    elif raw is Outcome.NOT_REPRODUCED:
        outcome = Outcome.OPPOSITE
    else:  # "partly": a mixed result below the paper's setting decides nothing
        outcome = Outcome.INCONCLUSIVE
    return outcome, f"{outcome.value} (the rule read: {rule})"


def seeds_cut(n_seeds: int) -> list[str]:
    """The shortfall of a run with fewer than :data:`MIN_SEEDS` seeds (empty with enough)."""
    n = int(n_seeds)
    return [] if n >= MIN_SEEDS else [f"{n} seed{'s' if n != 1 else ''}: test noise only"]


def judge(table: pd.DataFrame, cuts: dict[str, list[str]] | list[str], n_seeds: int) -> pd.DataFrame:
    """A chapter's verdict table with every rule verdict read at the run's scale (a new frame).

    ``cuts``: the run's shortfall against each of the chapter's paper settings (setting name -> list), or one
    list for every row; a row names its setting in a ``setting`` column (default: the first). Adds the
    columns ``rule_verdict`` (the rule's own text), ``scale`` (``paper scale`` or what was cut), ``outcome``,
    and fills ``kind`` (default *paper claim*) and ``test`` (default *direction*)."""
    out = table.copy()
    if "rule_verdict" in out:  # already judged: judge the rule's own verdict again
        out["verdict"] = out["rule_verdict"]
    settings = cuts if isinstance(cuts, dict) else {"": list(cuts)}
    first = next(iter(settings)) if settings else ""
    for col, default in (("kind", KINDS[0]), ("test", TESTS[0]), ("setting", first)):
        out[col] = out[col].fillna(default) if col in out else default
    verdicts, outcomes, scales = [], [], []
    for _, row in out.iterrows():
        if row["kind"] not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {row['kind']!r}")
        name = row["setting"] if row["setting"] in settings else first
        cut = [*settings.get(name, []), *([] if row["test"] == "timing" else seeds_cut(n_seeds))]
        outcome, text = scaled(row["verdict"], cut, row["test"])
        verdicts.append(text)
        outcomes.append(outcome.value)
        scales.append("; ".join(cut) if cut else "paper scale")
    out["rule_verdict"] = table["rule_verdict"] if "rule_verdict" in table else table["verdict"]
    out["verdict"], out["outcome"], out["scale"] = verdicts, outcomes, scales
    return out


def counted(kinds: Iterable[str]) -> list[bool]:
    """Which rows a count of the literature's claims includes: paper claims only."""
    return [k == "paper claim" for k in kinds]
