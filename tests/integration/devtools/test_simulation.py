"""The simulation plays every shipped program through the real pipeline on a seeded CRM, plants an
uplift, and measurement must find it: inside the 95% interval, and significantly above zero."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest

from lifecycle import config, paths
from lifecycle.devtools import simulation

START = datetime(2026, 11, 16, 15, 0)
PLANTED = {"welcome": 0.35, "reactivation": 0.25}


@pytest.fixture(autouse=True)
def shipped_config(monkeypatch):
    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)


@pytest.fixture(scope="module")
def simulated_url(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('simulation') / 'crm.db'}"


@pytest.fixture(scope="module")
def report(simulated_url) -> simulation.SimulationReport:
    url = simulated_url
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        mp.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        return simulation.simulate(url, 20_000, 6, START, PLANTED, seed=7)


@pytest.mark.parametrize("program", sorted(PLANTED))
def test_the_planted_uplift_is_measured_inside_the_95_percent_interval_and_above_zero(report, program):
    result = report.results[program]
    assert result.planted_uplift == PLANTED[program]
    assert result.lift.treatment_n > 300 and result.lift.control_n >= 30
    assert result.lift.significant and result.lift.ci_low > 0 and result.lift.p_value < 0.01
    assert 0.5 < result.exposure < 1
    messaged = result.lift_among_messaged
    assert messaged.ci_low <= PLANTED[program] <= messaged.ci_high, report.render()
    assert result.inside_ci


def test_every_program_is_measured_or_skipped_with_a_reason(report):
    files = {path.stem for path in config.program_files()}
    assert set(report.results) | set(report.skipped) == files
    assert not set(report.results) & set(report.skipped)
    assert all(reason for reason in report.skipped.values())
    unplanted = [r for p, r in report.results.items() if p not in PLANTED]
    assert all(r.planted_uplift == 0 for r in unplanted)
    text = report.render()
    assert all(program in text for program in files)


def test_the_simulation_is_deterministic_for_a_seed(tmp_path):
    runs = [simulation.simulate(f"sqlite:///{tmp_path / f'crm{i}.db'}", 1_000, 1, START, 0.2, seed=3) for i in range(2)]
    first, second = (r.render().split("\n", 1)[1] for r in runs)
    assert first == second
    assert runs[0].results and all(r.planted_uplift == 0.2 for r in runs[0].results.values())


def test_the_command_prints_the_report(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    assert (
        simulation.main(
            ["--days", "1", "--contacts", "800", "--uplift", "0.1", "--uplift", "welcome=0.3", "--url", url]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Simulation: 800 contacts, 1 days" in out and url in out
    welcome_line = next(line for line in out.splitlines() if line.startswith("welcome "))
    assert "+30.0" in welcome_line


def _program_with_conversion(conversion: dict) -> config.Program:
    program = config.load_program(paths.config_dir() / "programs" / "welcome.yml")
    kpi = config.Kpi(primary="x", label="x", conversion=conversion)
    return program.model_copy(update={"kpi": kpi})


@pytest.mark.parametrize(
    ("conversion", "planted"),
    [
        ({"event": "activated", "since": "enrollment"}, simulation.Conversion("activated", {})),
        (
            {
                "all": [
                    {"not": {"event": "churn"}},
                    {
                        "event": ["milestone_completed", "purchase"],
                        "where": {"milestone": {"in": ["first_report"]}},
                    },
                ]
            },
            simulation.Conversion("milestone_completed", {"milestone": "first_report"}),
        ),
        ({"event": "feature_used", "count": {"gte": 3}}, simulation.Conversion("feature_used", {}, 3)),
        ({"segment": "high_intent"}, simulation.Conversion("demo_requested", {})),
    ],
)
def test_the_planted_conversion_is_the_first_event_the_kpi_names(conversion, planted):
    catalog = config.load_segments().parsed
    assert simulation.conversion_for(_program_with_conversion(conversion), catalog) == planted


@pytest.mark.parametrize(
    ("conversion", "words"),
    [
        ({"related": "tickets", "where": {"status": "solved"}}, "names no event, opportunity or subscription"),
        ({"related": "opportunities", "where": {"amount": {"gt": 10}}}, "only eq/in"),
        ({"event": "purchase", "where": {"amount": {"gt": 10}}}, "only eq/in"),
        ({"event": "purchase", "count": {"lt": 2}}, "counts events"),
    ],
)
def test_a_conversion_that_cannot_be_planted_says_why(conversion, words):
    note = simulation.conversion_for(_program_with_conversion(conversion), config.load_segments().parsed)
    assert isinstance(note, str) and words in note


def test_uplift_arguments_accept_one_value_or_per_program_values():
    assert simulation.uplift_arguments(["0.08"], ["a", "b"]) == 0.08
    assert simulation.uplift_arguments(["0.05", "b=0.2"], ["a", "b"]) == {"a": 0.05, "b": 0.2}
    assert simulation.uplift_arguments(["b=0.2"], ["a", "b"]) == {"a": 0.0, "b": 0.2}
    assert math.isclose(simulation.uplift_arguments(["0.1", "0.3"], ["a"]), 0.3)


def test_the_digest_and_the_campaigns_page_show_the_planted_uplift(report, simulated_url):
    from lifecycle.model.db import get_engine
    from lifecycle.reporting import measurement
    from lifecycle.reporting.digest import build_digest
    from lifecycle.web.campaigns import campaigns_page
    from tests.support.kpi_crm import shown_interval, shown_points

    engine = get_engine(simulated_url)
    programs, _errors = config.load_all_programs()
    measured_at = START + timedelta(days=report.days)
    kpis = measurement.program_kpis(engine, programs, measured_at).set_index("program")
    welcome = kpis.loc["welcome"]
    assert welcome["lift_vs_holdout_significant"]
    lift = shown_points(welcome["lift_vs_holdout"])
    interval = shown_interval(welcome["lift_vs_holdout_ci_low"], welcome["lift_vs_holdout_ci_high"])
    digest = build_digest(engine, programs, config.load_policy(), measured_at)
    page = campaigns_page(engine)
    for shown in (digest.html, digest.text, page):
        assert lift in shown and interval in shown
    assert "No program shows a significant lift yet" not in digest.html


def test_chromium_shows_the_planted_uplift_in_the_digest_and_on_the_campaigns_page(report, simulated_url, tmp_path):
    """The same figures as a person sees them: both pages rendered by headless Chromium."""
    from lifecycle.model.db import get_engine
    from lifecycle.reporting import measurement
    from lifecycle.reporting.digest import build_digest
    from lifecycle.web.campaigns import campaigns_page
    from tests.support.chromium import dump_dom, inline_cid_images, require_chromium, screenshot
    from tests.support.kpi_crm import shown_interval, shown_points

    require_chromium()
    engine = get_engine(simulated_url)
    programs, _errors = config.load_all_programs()
    measured_at = START + timedelta(days=report.days)
    welcome = measurement.program_kpis(engine, programs, measured_at).set_index("program").loc["welcome"]
    digest = build_digest(engine, programs, config.load_policy(), measured_at)
    pages = {
        "digest": inline_cid_images(digest.html, {image.content_id: image.data for image in digest.images}),
        "campaigns": campaigns_page(engine),
    }
    for name, html in pages.items():
        path = tmp_path / f"{name}.html"
        path.write_text(html)
        screenshot(path.as_uri(), tmp_path / f"{name}.png")
        dom = dump_dom(path.as_uri())
        assert shown_points(welcome["lift_vs_holdout"]) in dom, name
        assert shown_interval(welcome["lift_vs_holdout_ci_low"], welcome["lift_vs_holdout_ci_high"]) in dom, name
        assert 'src="data:image/png;base64,' in dom, f"{name} shows its charts"
