"""KPI and lift computation: the lift math against hand-computed values, interval coverage, edge
cases, A/B verdicts, and program outcomes / KPIs on hand-made CRMs run through the real pipeline."""

from __future__ import annotations

import math
import statistics
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from lifecycle import paths
from lifecycle.reporting import measurement
from lifecycle.reporting.measurement import ab_verdict, lift
from tests.conftest import AS_OF
from tests.support.journey import run_program


def test_lift_matches_hand_computed_values_for_30_of_100_vs_20_of_100():
    newcombe = lift(30, 100, 20, 100)
    assert newcombe.treatment_rate == pytest.approx(0.30) and newcombe.control_rate == pytest.approx(0.20)
    assert newcombe.absolute == pytest.approx(0.10)
    assert newcombe.relative == pytest.approx(0.50)
    # Wilson 30/100 = (0.21895, 0.39585), 20/100 = (0.13337, 0.28883); Newcombe combines them.
    assert newcombe.ci_low == pytest.approx(-0.02025, abs=5e-5)
    assert newcombe.ci_high == pytest.approx(0.21673, abs=5e-5)
    # Pooled z = 0.10 / sqrt(0.25 * 0.75 * 2 / 100) = 1.63299 -> two-sided p = 0.10247.
    assert newcombe.p_value == pytest.approx(0.10247, abs=5e-5)
    assert not newcombe.significant and not newcombe.insufficient_data
    wald = lift(30, 100, 20, 100, method="wald")
    # 0.10 +- 1.95996 * sqrt(0.3 * 0.7 / 100 + 0.2 * 0.8 / 100) = 0.10 +- 0.11922
    assert (wald.ci_low, wald.ci_high) == (
        pytest.approx(-0.01922, abs=5e-5),
        pytest.approx(0.21922, abs=5e-5),
    )
    assert wald.p_value == newcombe.p_value


def test_a_large_difference_is_significant_and_a_wider_confidence_widens_the_interval():
    result = lift(300, 1000, 200, 1000)
    assert result.significant and result.ci_low > 0 and result.p_value < 1e-6
    wider = lift(300, 1000, 200, 1000, confidence=0.99)
    assert wider.ci_low < result.ci_low and wider.ci_high > result.ci_high


@pytest.mark.parametrize(("method", "n"), [("newcombe", 40), ("newcombe", 400), ("wald", 400)])
def test_the_95_percent_interval_covers_the_true_difference_about_95_percent_of_the_time(method, n):
    rng = np.random.default_rng(11)
    treated = rng.binomial(n, 0.30, size=2000)
    control = rng.binomial(n, 0.20, size=2000)
    covered = [
        (r.ci_low <= 0.10 <= r.ci_high)
        for r in (lift(int(t), n, int(c), n, min_n=1, method=method) for t, c in zip(treated, control, strict=True))
    ]
    assert 0.93 <= np.mean(covered) <= 0.975


def test_zero_conversions_in_both_groups_give_no_lift_and_a_finite_interval_around_zero():
    result = lift(0, 50, 0, 50)
    assert result.absolute == 0 and math.isnan(result.relative)
    assert -0.1 < result.ci_low < 0 < result.ci_high < 0.1
    assert result.p_value == 1.0 and not result.significant


def test_a_comparison_group_without_conversions_has_no_relative_lift_but_a_bounded_interval():
    result = lift(50, 50, 0, 50)
    assert result.absolute == 1.0 and math.isnan(result.relative)
    assert 0 < result.ci_low < result.ci_high <= 1.0 and result.significant


def test_empty_or_tiny_groups_are_insufficient_data_without_dividing_by_zero():
    empty = lift(0, 0, 3, 10)
    assert empty.insufficient_data and math.isnan(empty.treatment_rate) and math.isnan(empty.absolute)
    assert empty.control_rate == pytest.approx(0.3)
    tiny = lift(9, 10, 1, 10)
    assert tiny.insufficient_data and not tiny.significant
    assert tiny.absolute == pytest.approx(0.8) and tiny.ci_low > 0


def test_impossible_counts_are_refused():
    with pytest.raises(ValueError, match="between 0 and n"):
        lift(11, 10, 1, 10)
    with pytest.raises(ValueError, match="confidence"):
        lift(1, 10, 1, 10, confidence=95)


def test_the_effect_among_messaged_divides_the_intent_to_treat_lift_by_the_exposure():
    itt = lift(300, 1000, 200, 1000)
    messaged = itt.among_messaged(0.5)
    assert messaged.absolute == pytest.approx(0.2)
    assert (messaged.ci_low, messaged.ci_high) == (
        pytest.approx(itt.ci_low * 2),
        pytest.approx(itt.ci_high * 2),
    )
    assert messaged.p_value == itt.p_value
    assert itt.among_messaged(0).insufficient_data


@pytest.mark.parametrize(
    ("counts", "verdict"),
    [
        ({"A": (20, 100), "B": (30, 100)}, "no winner yet"),
        ({"A": (100, 1000), "B": (200, 1000)}, "B wins (+10.0 pts)"),
        ({"A": (260, 1000), "B": (200, 1000)}, "A wins (+6.0 pts)"),
        ({"A": (100, 1000), "B": (200, 1000), "C": (190, 1000)}, "no winner yet"),
        ({"A": (100, 1000), "B": (0, 0)}, "no winner yet"),
        ({"A": (5, 10), "B": (0, 10)}, "no winner yet"),
    ],
)
def test_the_ab_verdict_waits_until_the_interval_of_the_difference_excludes_zero(counts, verdict):
    assert ab_verdict(counts) == verdict


def test_deliverability_rates_count_only_messages_that_reached_a_provider():
    statuses = pd.DataFrame(
        [
            ("p", "sent", 4),
            ("p", "delivered", 3),
            ("p", "opened", 1),
            ("p", "clicked", 1),
            ("p", "bounced", 1),
            ("p", "dry_run", 7),
            ("p", "suppressed", 5),
            ("q", "dry_run", 3),
        ],
        columns=["program", "status", "messages"],
    )
    events = pd.DataFrame(
        [("p", "unsubscribe", 1), ("p", "spamreport", 2)], columns=["program", "event_type", "messages"]
    )
    table = measurement.deliverability(statuses, events).set_index("program")
    p = table.loc["p"]
    assert (p["sent"], p["dry_run"]) == (10, 7)
    assert p["delivered_rate"] == pytest.approx(0.5) and p["bounce_rate"] == pytest.approx(0.1)
    assert p["unsubscribe_rate"] == pytest.approx(0.1) and p["spam_report_rate"] == pytest.approx(0.2)
    assert p["open_rate_directional"] == pytest.approx(0.2) and p["click_rate_directional"] == pytest.approx(0.1)
    assert table.loc["q", "sent"] == 0 and math.isnan(table.loc["q", "delivered_rate"])


# --- on a CRM, through the real pipeline -----------------------------------------------------


@pytest.fixture
def sqlite_crm(sqlite_url):
    from lifecycle.model import schema
    from lifecycle.model.db import get_engine, migrate
    from tests.support.crm_builder import CrmBuilder

    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine, CrmBuilder(engine, AS_OF)


def _program(program_id: str, **kpi):
    from lifecycle import config

    program = config.load_program(paths.config_dir() / "programs" / f"{program_id}.yml")
    fields = {
        "primary": program.kpi.primary,
        "label": program.kpi.label,
        "conversion": program.kpi.conversion.raw,
    }
    return program.model_copy(update={"kpi": config.Kpi(**(fields | kpi))})


def test_program_outcomes_count_conversions_inside_the_attribution_window_only(crm, test_config):
    engine, crm_rows = crm
    quick, late, before, never = (crm_rows.contact(f"lead{i}") for i in range(4))
    crm_rows.contact("cust", lifecycle_stage="customer")
    crm_rows.event(before, "purchase", AS_OF - timedelta(days=2), amount=99.0)
    run_program(engine, "alpha", AS_OF)
    crm_rows.event(quick, "purchase", AS_OF + timedelta(days=1), amount=40.0)
    crm_rows.event(quick, "purchase", AS_OF + timedelta(days=3), amount=2.5)
    crm_rows.event(late, "purchase", AS_OF + timedelta(days=20), amount=70.0)
    program = _program("alpha", value_property="amount")
    outcomes = measurement.program_outcomes(engine, program, AS_OF + timedelta(days=30)).set_index("contact_id")
    assert sorted(outcomes.index) == sorted([quick, late, before, never])
    assert outcomes["converted"].to_dict() == {quick: True, late: False, before: False, never: False}
    assert outcomes.loc[quick, "time_to_convert"] == timedelta(days=1)
    assert outcomes.loc[quick, "conversion_value"] == pytest.approx(42.5)
    assert outcomes.loc[late, "conversion_value"] == 0
    assert outcomes["messaged"].all() and (outcomes["group"] == "treatment").all()
    assert outcomes.loc[quick, "messages_sent"] == 1
    early = measurement.program_outcomes(engine, program, AS_OF + timedelta(hours=12))
    assert not early["converted"].any()
    assert measurement.program_outcomes(engine, program, AS_OF - timedelta(hours=1)).empty


def test_program_outcomes_read_a_conversion_that_is_not_an_event(sqlite_crm, test_config):
    engine, crm_rows = sqlite_crm
    won, lost = crm_rows.contact("won"), crm_rows.contact("lost")
    run_program(engine, "alpha", AS_OF)
    crm_rows.row(
        "opportunities",
        opportunity_id="o1",
        contact_id=won,
        stage="closed_won",
        updated_at=AS_OF + timedelta(days=1),
    )
    crm_rows.row(
        "opportunities",
        opportunity_id="o2",
        contact_id=lost,
        stage="closed_lost",
        updated_at=AS_OF + timedelta(days=1),
    )
    program = _program("alpha", conversion={"related": "opportunities", "where": {"stage": "closed_won"}})
    outcomes = measurement.program_outcomes(engine, program, AS_OF + timedelta(days=2)).set_index("contact_id")
    assert outcomes["converted"].to_dict() == {won: True, lost: False}
    assert pd.isna(outcomes.loc[won, "converted_at"])


def _in_group(program, policy, group: str, count: int) -> list[str]:
    from lifecycle.model.db import bucket_of

    found = []
    for i in range(100_000):
        cid = f"w{i:05d}"
        control = bucket_of(f"{policy.control_group.salt}:{cid}") < policy.control_group.percent * 100
        holdout = bucket_of(f"{program.salt}:{program.id}:{cid}") < program.holdout_percent * 100
        actual = "control" if control else "holdout" if holdout else "treatment"
        if actual == group:
            found.append(cid)
            if len(found) == count:
                return found
    raise AssertionError(f"not enough {group} ids")


def test_program_kpis_compare_treatment_with_holdout_and_control_on_the_welcome_program(sqlite_crm, monkeypatch):
    from lifecycle import config

    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
    engine, crm_rows = sqlite_crm
    welcome, policy = _program("welcome"), config.load_policy()
    groups = {g: _in_group(welcome, policy, g, n) for g, n in (("treatment", 8), ("holdout", 4), ("control", 2))}
    for ids in groups.values():
        for cid in ids:
            crm_rows.contact(cid, signed_up_ago=timedelta(hours=2))
    run_program(engine, "welcome", AS_OF)
    for cid in groups["treatment"][:6] + groups["holdout"][:1]:
        crm_rows.event(cid, "activated", AS_OF + timedelta(hours=5))
    table = measurement.program_kpis(engine, {"welcome": welcome}, AS_OF + timedelta(days=1))
    row = table.set_index("program").loc["welcome"]
    assert (row["treatment_n"], row["holdout_n"], row["control_n"]) == (8, 4, 2)
    assert (row["treatment_conversions"], row["holdout_conversions"], row["control_conversions"]) == (6, 1, 0)
    assert row["lift_vs_holdout"] == pytest.approx(0.75 - 0.25)
    assert row["lift_vs_control"] == pytest.approx(0.75)
    assert row["lift_vs_holdout_insufficient_data"] and not row["lift_vs_holdout_significant"]
    assert row["lift_vs_holdout_ci_low"] < row["lift_vs_holdout"] < row["lift_vs_holdout_ci_high"]
    assert row["exposure"] == 1.0 and row["median_time_to_convert_hours"] == pytest.approx(5.0)
    assert sum(v["n"] for v in row["variants"].values()) == 8 and row["verdict"] == "no winner yet"
    assert (row["sent"], row["dry_run"]) == (0, 8) and math.isnan(row["delivered_rate"])


@pytest.mark.slow
def test_funnel_history_has_one_row_per_logged_run(sqlite_crm, test_config):
    engine, crm_rows = sqlite_crm
    crm_rows.contact("a"), crm_rows.contact("b")
    run_program(engine, "alpha", AS_OF)
    crm_rows.contact("c")
    run_program(engine, "alpha", AS_OF + timedelta(days=1))
    run_program(engine, "beta", AS_OF + timedelta(days=1))
    history = measurement.funnel_history(engine, "alpha")
    assert list(history["as_of"]) == [AS_OF, AS_OF + timedelta(days=1)]
    assert list(history["audience"]) == [2, 3] and list(history["enrolled"]) == [2, 1]
    assert list(history["kpi_rate_treatment"]) == [0.0, 0.0] and history["kpi_rate_holdout"].isna().all()
    assert set(measurement.funnel_history(engine)["program"]) == {"alpha", "beta"}


def test_the_funnel_table_sums_dimensions_and_rates_the_kpi_per_group():
    rows = pd.DataFrame(
        [
            ("p", "r1", AS_OF, "sent", "email", 3.0),
            ("p", "r1", AS_OF, "sent", "sms", 1.0),
            ("p", "r1", AS_OF, "kpi_enrolled", "treatment", 8.0),
            ("p", "r1", AS_OF, "kpi_converted", "treatment", 2.0),
            ("p", "r1", AS_OF, "kpi_enrolled", "holdout", 2.0),
            ("p", "r0", AS_OF - timedelta(days=1), "sent", "email", 5.0),
        ],
        columns=["program", "run_id", "as_of", "metric", "dimension", "value"],
    )
    table = measurement.funnel_table(rows)
    assert list(table["run_id"]) == ["r0", "r1"] and list(table["sent"]) == [5.0, 4.0]
    assert math.isnan(table.loc[0, "kpi_rate_treatment"]) and table.loc[1, "kpi_rate_treatment"] == 0.25
    assert table.loc[1, "kpi_rate_holdout"] == 0.0 and table["kpi_rate_control"].isna().all()


def test_business_metrics_on_a_hand_made_crm(crm):
    engine, crm_rows = crm
    day = timedelta(days=1)
    old = AS_OF - 400 * day
    a = crm_rows.contact("a", created_at=old, lifecycle_stage="customer")
    b = crm_rows.contact("b", created_at=old, lifecycle_stage="customer")
    c = crm_rows.contact("c", created_at=AS_OF - 10 * day)
    gone = crm_rows.contact("gone", created_at=old, lifecycle_stage="churned", churned_at=AS_OF - 30 * day)
    for cid, days in ((a, (200, 150)), (b, (100,)), (c, (10, 5, 1))):
        for ago in days:
            crm_rows.event(cid, "purchase", AS_OF - ago * day, amount=10.0)
    crm_rows.row("subscriptions", subscription_id="s1", contact_id=a, status="active", mrr=100.0)
    crm_rows.row("subscriptions", subscription_id="s2", contact_id=b, status="cancelled", mrr=0.0)
    crm_rows.row("subscriptions", subscription_id="s3", contact_id=gone, status="cancelled", mrr=50.0)
    metrics = measurement.business_metrics(engine, AS_OF)
    assert metrics["buyers"] == 3
    assert metrics["repeat_purchase_rate"] == pytest.approx(2 / 3)
    assert metrics["first_to_second_conversion"] == pytest.approx(1 / 2)
    assert metrics["median_days_to_second_purchase"] == pytest.approx((50 + 5) / 2)
    assert (metrics["new_contacts_4w"], metrics["contacts_before_4w"]) == (1, 3)
    assert metrics["contact_growth_4w"] == pytest.approx(1 / 3)
    assert (metrics["retained_mrr"], metrics["churned_mrr"]) == (100.0, 50.0)
    assert metrics["net_revenue_retention"] == pytest.approx(100 / 150)


def test_a_conversion_without_a_value_of_its_own_takes_the_trigger_value():
    rows = pd.DataFrame(
        [
            (1, "c1", "treatment", None, AS_OF, 1, 1, 80.0, AS_OF + timedelta(hours=2), None),
            (2, "c2", "holdout", None, AS_OF, 0, 1, 30.0, AS_OF + timedelta(hours=3), 12.5),
            (3, "c3", "treatment", None, AS_OF, 1, 0, 55.0, None, None),
        ],
        columns=[
            "enrollment_id",
            "contact_id",
            "group",
            "variant",
            "enrolled_at",
            "messages_sent",
            "met",
            "trigger_value",
            "event_at",
            "event_value",
        ],
    )
    outcomes = measurement.outcomes_from_rows(rows, timedelta(days=7)).set_index("contact_id")
    assert outcomes["conversion_value"].to_dict() == {"c1": 80.0, "c2": 12.5, "c3": 0.0}
    assert outcomes["messaged"].to_dict() == {"c1": True, "c2": False, "c3": True}
    assert outcomes.loc["c2", "time_to_convert"] == timedelta(hours=3)


def test_value_lift_is_the_difference_in_revenue_per_member_with_welchs_interval():
    treatment = [0.0] * 60 + [100.0] * 40
    holdout = [0.0] * 80 + [100.0] * 20
    result = measurement.value_lift(treatment, holdout)
    assert (result.treatment_per_member, result.control_per_member, result.difference) == (40.0, 20.0, 20.0)
    se = math.sqrt(statistics.variance(treatment) / 100 + statistics.variance(holdout) / 100)
    assert result.ci_low == pytest.approx(20.0 - 1.959964 * se) and result.ci_high == pytest.approx(
        20.0 + 1.959964 * se
    )
    assert result.significant and not result.insufficient_data
    small = measurement.value_lift([10.0, 0.0], [0.0, 0.0])
    assert small.insufficient_data and not small.significant
    assert math.isnan(measurement.value_lift([5.0], []).ci_low)
