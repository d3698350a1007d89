"""The benchmark's smoke run: a few hundred contacts on SQLite, every figure reported, and the naive
per-contact baseline making exactly the engine's decisions (no timing is asserted)."""

from __future__ import annotations

import json

from lifecycle.devtools import bench


def test_quick_bench_reports_every_figure_and_the_naive_baseline_matches_the_engine(tmp_path, capsys):
    report_file = tmp_path / "bench.json"

    status = bench.main(
        [
            "--quick",
            "--db",
            "sqlite",
            "--contacts",
            "300",
            "--naive-subset",
            "120",
            "--scale-check",
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(report_file),
        ]
    )

    printed = capsys.readouterr().out
    report = json.loads(report_file.read_text())
    assert status == 0
    (db,) = report["databases"]
    naive = db["naive"]
    assert naive["equal"] and naive["only_naive"] == [] and naive["only_engine"] == []
    assert naive["messages"] > 0 and naive["contacts"] == 120
    run = db["run"]
    assert run["contacts"] == 300 and set(run["stages"]) == set(bench.STAGES)
    assert run["statuses"]["sent"] > 0 and run["peak_rss"] > 0
    assert run["requests"][bench.MAIL_SEND] > 0
    # Every batch went out from a send worker process, each reporting its peak memory.
    assert run["send_workers"] == bench.SEND_CONCURRENCY
    assert 0 < run["send_peak_rss"] <= run["send_peak_rss_sum"] <= bench.SEND_CONCURRENCY * run["send_peak_rss"]
    assert run["statuses"]["sent"] == sum(run["accepted"].values())
    assert run["statuses"].get("sending", 0) == 0 and run["statuses"].get("ready", 0) == 0
    floors = db["floors"]
    assert floors["renders"] == sum(group["count"] for group in run["renders"]) > 0
    assert floors["requests"] == sum(run["requests"].values())
    assert {"contacts", "events", "consents"} <= set(floors["columns"])
    assert db["small"]["contacts"] == 30
    names = {t["name"] for t in report["targets"]}
    assert names == {
        "engine time / sum of floors",
        "naive (extrapolated) / engine decisions",
        "peak memory, engine + send processes",
        "messages sent / provider requests",
        "send stage / dispatch floor",
        "time(N) / time(N/10)",
        "all DAG files parse",
        "Campaigns page, warm (stored figures)",
        *(f"SMS rate / configured {mps:g} MPS" for mps in bench.PACING_MPS),
    }
    assert db["page"]["warm"] > 0 and db["page"]["cold"] > 0 and db["page"]["same_page"]
    # The SMS figure: every send went out through the real hook, never faster than configured (1%: a
    # request's time is taken in its thread after the limiter's slot, so the first may be a little late).
    assert [p["mps"] for p in report["sms_pacing"]] == list(bench.PACING_MPS)
    for pacing in report["sms_pacing"]:
        assert pacing["sends"] == pacing["sent"] == bench.QUICK_PACING_SENDS
        assert 0 < pacing["rate"] <= pacing["mps"] * 1.01, pacing
    assert "SMS pacing: Twilio sends through the real hook" in printed
    assert report["dag_parse"]["dags"] >= 8 and report["dag_parse"]["errors"] == 0
    for target in report["targets"]:
        assert f"{target['name']}" in printed and ("PASS" if target["passed"] else "MISS") in printed
    assert "same messages on the subset: yes" in printed


def test_the_mapped_bench_reports_decisions_against_the_canonical_run_and_the_cost_of_each_copy(tmp_path, capsys):
    report_file = tmp_path / "mapped.json"

    status = bench.main(
        ["--source", "warehouse", "--db", "sqlite", "--contacts", "300", "--work-dir", str(tmp_path / "work")]
        + ["--json", str(report_file)]
    )

    printed = capsys.readouterr().out
    (db,) = json.loads(report_file.read_text())["databases"]
    assert status == 0
    assert db["canonical"]["ledger"] == db["mapped"]["ledger"] and db["mapped"]["messages"] > 0
    assert {r["mode"] for r in db["first"]["entities"].values()} == {"full"}
    assert all(r["rows_written"] <= 2 for r in db["quiet"]["entities"].values())
    changed = sum(db["change"].values())
    assert changed <= sum(r["rows_written"] for r in db["daily"]["entities"].values()) <= changed + 6
    for line in ("Sending is not run", "same ledger: yes", "first copy", "after a day of change", "decisions"):
        assert line in printed
