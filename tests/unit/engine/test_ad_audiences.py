"""Paid-audience sync, the pure parts: identifiers normalised and hashed as the ad platforms match
them, the diff against the last sync, and batches."""

from __future__ import annotations

import hashlib

import pytest

from lifecycle.engine.ad_audiences import (
    batches,
    diff,
    hashed_email,
    hashed_phone,
    member_row,
    normalise_email,
    normalise_phone,
    sha256,
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("  Ada.Lovelace@Example.COM\t", "ada.lovelace@example.com"),
        ("b@example.com", "b@example.com"),
        ("", None),
        (None, None),
        ("not an email", None),
        ("two@at@example.com", None),
        ("nodomain@", None),
        ("a b@example.com", None),
    ],
)
def test_an_email_is_trimmed_and_lowercased_or_refused(raw, normalised):
    assert normalise_email(raw) == normalised


@pytest.mark.parametrize(
    ("raw", "country", "e164"),
    [
        ("+1 (415) 555-0100", None, "+14155550100"),
        ("(415) 555-0100", "US", "+14155550100"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("020 7946 0958", " gb ", "+442079460958"),
        ("12", "US", None),
        ("", "US", None),
        (None, None, None),
    ],
)
def test_a_phone_is_read_into_e164_with_the_contacts_country(raw, country, e164):
    assert normalise_phone(raw, country) == e164


def test_hashes_are_sha256_lowercase_hex_of_the_normalised_value():
    assert sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hashed_email(" Ada@Example.com ") == _sha("ada@example.com")
    # Meta matches phones as digits with the country code, without the "+".
    assert hashed_phone("(415) 555-0100", "US") == _sha("14155550100")
    assert hashed_email("nope") == "" and hashed_phone("12", "US") == ""
    digest = hashed_email("x@example.com")
    assert len(digest) == 64 and digest == digest.lower()


def test_a_member_row_has_one_hash_per_identifier_in_order_and_none_without_any():
    assert member_row(["email", "phone"], "a@example.com", "+14155550100") == (
        _sha("a@example.com"),
        _sha("14155550100"),
    )
    assert member_row(["phone", "email"], "a@example.com", None) == ("", _sha("a@example.com"))
    assert member_row(["phone"], "a@example.com", None) is None
    assert member_row(["email", "phone"], "junk", "12", "US") is None


def test_the_diff_adds_what_is_wanted_and_removes_what_no_longer_is():
    change = diff(wanted=[("a", ""), ("b", "p"), ("c", "")], synced=[("b", "p"), ("d", ""), ("c", "old")])
    assert change.adds == [("a", ""), ("c", "")]
    assert change.removes == [("c", "old"), ("d", "")]
    nothing = diff(wanted=[("a", "")], synced=[("a", "")])
    assert nothing.adds == [] and nothing.removes == []


def test_batches_hold_at_most_the_batch_size_in_order():
    rows = [(str(i),) for i in range(5)]
    assert batches(rows, 2) == [rows[0:2], rows[2:4], rows[4:5]]
    assert batches(rows, 10_000) == [rows]
    assert batches([], 2) == []


def test_the_shipped_example_loads_with_its_audience_sync():
    from lifecycle import config
    from lifecycle.paths import PROJECT_ROOT

    example = PROJECT_ROOT / "config" / "examples" / "paid_audiences" / "programs" / "cart_retargeting.yml"
    program = config.load_program(example, config.load_segments(PROJECT_ROOT / "config" / "segments.yml"))
    sync = program.audience_sync
    assert sync is not None
    assert (sync.platform, sync.audience, sync.conn_id, sync.members) == (
        "meta",
        "23850000000001",
        "ads_default",
        "enrolled",
    )
    assert (sync.identifiers, sync.batch_size) == (["email", "phone"], 10_000)


@pytest.mark.parametrize(
    ("sync", "problem"),
    [
        ({"audience": "x y"}, "audience_sync.audience"),
        ({"audience": "1", "batch_size": 10_001}, "audience_sync.batch_size"),
        ({"audience": "1", "identifiers": ["email", "email"]}, "name one twice"),
        ({"audience": "1", "identifiers": []}, "audience_sync.identifiers"),
        ({"audience": "1", "platform": "tiktok"}, "audience_sync.platform"),
        ({"audience": "1", "members": "everyone"}, "audience_sync.members"),
    ],
)
def test_a_bad_audience_sync_names_the_field(tmp_path, sync, problem):
    import yaml

    from lifecycle import config
    from lifecycle.paths import PROJECT_ROOT
    from tests.support.audience import program

    path = tmp_path / "retarget.yml"
    path.write_text(yaml.safe_dump(program() | {"audience_sync": sync}))
    with pytest.raises(config.ConfigError) as error:
        config.load_program(path, config.load_segments(PROJECT_ROOT / "config" / "segments.yml"))
    assert problem in str(error.value)


def test_two_programs_syncing_one_audience_are_both_errors_naming_each_other(tmp_path, monkeypatch):
    import yaml

    from lifecycle import config
    from tests.support.audience import program, use_audience_program

    root = use_audience_program(tmp_path, monkeypatch)
    (root / "programs" / "other.yml").write_text(yaml.safe_dump(program()))
    (root / "programs" / "own.yml").write_text(yaml.safe_dump(program(audience="999")))
    programs, errors = config.load_all_programs()
    assert "own" in programs and not {"retarget", "other"} & set(programs)
    assert "synced by retarget too" in str(errors["other"]) and "synced by other too" in str(errors["retarget"])
