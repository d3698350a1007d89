"""Next-best-action's arithmetic on its own: band lifts, their shrinkage, and the per-band order."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle import config
from lifecycle.config import Decision, Program
from lifecycle.engine.decision import UNSCORED, Counts, Estimate, band_of, expected_value, ranking, shrink, why
from lifecycle.model.ledger import reason_kind
from lifecycle.paths import PROJECT_ROOT

NBA = Decision(mode="next_best_action", bands=5, min_evidence=200)


def _program(program_id: str, priority: int) -> Program:
    shipped = PROJECT_ROOT / "config"
    program = config.load_program(
        shipped / "programs" / f"{program_id}.yml", config.load_segments(shipped / "segments.yml")
    )
    return program.model_copy(update={"priority": priority})


PROGRAMS = [_program("winback", 60), _program("upsell", 40), _program("education", 30)]


def test_counts_give_the_treatment_minus_holdout_rate_and_nan_without_a_group():
    counts = Counts(treatment_n=200, treatment_conversions=40, holdout_n=100, holdout_conversions=10)
    assert counts.lift == pytest.approx(0.10)
    assert 0 < counts.variance < 0.01
    assert math.isnan(Counts(treatment_n=10, treatment_conversions=1).lift)
    assert Counts(treatment_n=10).variance == math.inf


def test_bands_with_plenty_of_evidence_keep_their_own_lift():
    per_band = {
        1: Counts(5000, 500, 5000, 500),  # no lift
        2: Counts(5000, 1500, 5000, 500),  # +20 points
    }
    estimate = shrink("winback", per_band)
    assert estimate.overall == pytest.approx(0.10)
    assert estimate.lift_in(1) == pytest.approx(0.0, abs=0.01)
    assert estimate.lift_in(2) == pytest.approx(0.20, abs=0.01)
    assert estimate.evidence == 10_000


def test_thin_bands_are_shrunk_to_the_overall_lift():
    # Same raw lifts as above, but 10 contacts a group: the spread is within the noise.
    per_band = {1: Counts(10, 1, 10, 1), 2: Counts(10, 3, 10, 1)}
    estimate = shrink("winback", per_band)
    assert estimate.lift_in(1) == pytest.approx(estimate.overall)
    assert estimate.lift_in(2) == pytest.approx(estimate.overall)


def test_a_thin_band_next_to_thick_ones_moves_most_of_the_way_to_the_overall_lift():
    per_band = {
        1: Counts(4000, 400, 4000, 400),
        2: Counts(4000, 1200, 4000, 400),
        3: Counts(10, 4, 10, 2),  # raw lift +20 points on 20 contacts, as band 2's on 8,000
    }
    estimate = shrink("winback", per_band)
    assert estimate.lift_in(2) == pytest.approx(0.20, abs=0.01)
    assert abs(estimate.lift_in(3) - estimate.overall) < 0.5 * abs(0.20 - estimate.overall)


def test_an_unscored_or_unmeasured_band_gets_the_overall_lift():
    estimate = shrink("winback", {UNSCORED: Counts(100, 30, 100, 10), 1: Counts(100, 20, 0, 0)})
    assert estimate.bands == {}
    assert estimate.lift_in(UNSCORED) == estimate.lift_in(4) == estimate.overall


def test_deciles_group_into_bands():
    assert [band_of(d, 5) for d in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [band_of(d, 1) for d in (1, 10)] == [1, 1]
    assert band_of(None, 5) == UNSCORED


def test_without_evidence_the_order_is_priority():
    none: dict[str, Estimate | None] = {p.id: None for p in PROGRAMS}
    assert ranking(PROGRAMS, none, NBA, 3) == ["winback", "upsell", "education"]


def test_with_evidence_the_higher_expected_value_wins_in_each_band():
    found: dict[str, Estimate | None] = {
        "winback": Estimate("winback", 0.05, {1: 0.0, 5: 0.10}, 500),
        "upsell": Estimate("upsell", 0.05, {1: 0.08, 5: 0.0}, 500),
        "education": None,
    }
    assert ranking(PROGRAMS, found, NBA, 5) == ["winback", "upsell", "education"]
    assert ranking(PROGRAMS, found, NBA, 1) == ["upsell", "winback", "education"]
    # A band without its own estimate: the overall lifts tie, priority breaks the tie.
    assert ranking(PROGRAMS, found, NBA, 3) == ["winback", "upsell", "education"]
    # Value per conversion scales the expected value.
    valued = Decision(mode="next_best_action", value={"winback": 0.5})
    assert ranking(PROGRAMS, found, valued, 3) == ["upsell", "winback", "education"]
    assert expected_value(found["winback"], valued, 5) == pytest.approx(0.05)


def test_a_program_without_evidence_keeps_its_place_in_priority_order():
    found: dict[str, Estimate | None] = {
        "winback": Estimate("winback", 0.01, {}, 500),
        "upsell": None,
        "education": Estimate("education", 0.09, {}, 500),
    }
    assert ranking(PROGRAMS, found, NBA, 2) == ["education", "upsell", "winback"]


estimates = st.fixed_dictionaries(
    {
        p.id: st.one_of(
            st.none(),
            st.builds(
                Estimate,
                st.just(p.id),
                st.floats(-0.2, 0.4),
                st.dictionaries(st.integers(1, 5), st.sampled_from([-0.1, 0.0, 0.05, 0.1])),
                st.just(300),
            ),
        )
        for p in PROGRAMS
    }
)


@settings(max_examples=200, deadline=None)
@given(found=estimates, band=st.integers(0, 5), order=st.permutations(PROGRAMS))
def test_the_order_does_not_depend_on_the_order_programs_are_given_in(found, band, order):
    expected = ranking(PROGRAMS, found, NBA, band)
    assert ranking(order, found, NBA, band) == expected
    assert sorted(expected) == sorted(p.id for p in PROGRAMS)
    # Programs without evidence hold their priority places.
    by_priority = [p.id for p in PROGRAMS]
    assert all(expected[i] == pid for i, pid in enumerate(by_priority) if found[pid] is None)


def test_the_ledger_detail_names_both_programs_and_their_expected_values():
    text = why("winback", "upsell", {"winback": 0.0312, "upsell": None}, 4)
    assert text == "; next-best-action: winback (EV 0.0312) over upsell (priority), band 4"
    assert why("a", "b", {"a": 1.0, "b": 0.5}, UNSCORED).endswith("unscored")


def test_the_lift_is_the_effect_on_messaged_contacts():
    # +5 points intent to treat with half the treatment group messaged: +10 points per message.
    counts = Counts(treatment_n=1000, treatment_conversions=150, holdout_n=1000, holdout_conversions=100)
    half = Counts(1000, 150, 1000, 100, treatment_messaged=500)
    assert half.exposure == 0.5
    assert half.lift == pytest.approx(2 * counts.lift) == pytest.approx(0.10)
    assert half.variance == pytest.approx(4 * counts.variance)
    assert not Counts(1000, 150, 1000, 100, treatment_messaged=0).measured
    assert (half + half).messaged == 1000 and (half + half).lift == pytest.approx(0.10)


def test_the_figures_group_a_yielded_message_under_its_cap_reason():
    detail = why("winback", "upsell", {"winback": 0.03, "upsell": 0.01}, 2)
    assert reason_kind("frequency_cap_email: 3 per 7d" + detail) == "frequency_cap_email: 3 per 7d"
    assert reason_kind("frequency_cap_email: 3 per 7d") == "frequency_cap_email: 3 per 7d"
    assert reason_kind(None) is None
