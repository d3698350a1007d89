"""Synthetic CRM generator: a realistic demo CRM, deterministic per seed, with known dirty data.

``seed_crm`` drops and recreates the seven CRM tables of ``schema.crm_metadata`` and fills them in
blocks of ``BLOCK`` contacts. Each block draws from its own random stream keyed by (seed, block
number), so the rows depend only on the seed, the contact count and ``as_of``; ``chunk`` only
sets how many contacts are written at a time. Rows go in through the raw DBAPI connection
(``executemany`` in one transaction on SQLite, ``COPY`` on PostgreSQL) and the indexes are built
after loading.

Dirty data is planted in the proportions of the ``*_RATE`` constants and reported exactly, as
counts of contacts, in ``SeedReport.planted``:

- ``duplicate_contacts``: extra contact rows for a person already in the CRM. Each repeats the
  original's email up to letter case and surrounding whitespace (``duplicate_email_variants``)
  and/or its phone number written in another format (``duplicate_phone_variants``).
- ``invalid_email``: present but not an address even after trimming (no ``@``, a domain without a
  dot or with two dots in a row, a space, two ``@``).
- ``invalid_phone``: present but not a valid number for the contact's country (too short, text,
  too long, a fragment without country code). Every other phone is a valid mobile number of the
  contact's country, in E.164 form except the duplicates' variants.
- ``missing_email``, ``missing_phone``, ``missing_country``, ``missing_timezone``: NULL;
  ``missing_location`` counts contacts without a country, a time zone or both.
- ``<channel>_<purpose>_<outcome>``: contacts whose newest consent row for that channel and
  purpose has that status; ``..._no_row`` counts contacts without any row (no consent).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, Table, create_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from lifecycle.model.db import utc_naive
from lifecycle.model.schema import (
    BILLING_STATUSES,
    CHURN_REASONS,
    CRM_TABLES,
    LIFECYCLE_STAGES,
    OPPORTUNITY_STAGES,
    SUBSCRIPTION_STATUSES,
    TICKET_STATUSES,
)
from lifecycle.paths import INCLUDE_DIR

log = logging.getLogger(__name__)

REFERENCE_DIR = INCLUDE_DIR / "crm_reference"

BLOCK = 10_000
MAX_CONTACTS = 8_000_000
HISTORY_DAYS = 730
EVENT_WINDOW_DAYS = 180

B2B_SHARE = 0.40
CONTACTS_PER_ACCOUNT = 3.5
STAGE_MIX = {"subscriber": 0.26, "lead": 0.28, "trial": 0.06, "customer": 0.28, "churned": 0.12}
CHURN_REASON_MIX = {"price": 0.35, "fit": 0.25, "complexity": 0.20, "other": 0.20}

DUPLICATE_RATE = 0.02
INVALID_EMAIL_RATE = 0.03
MISSING_EMAIL_RATE = 0.03
INVALID_PHONE_RATE = 0.04
MISSING_PHONE_RATE = 0.30
MISSING_LOCATION_RATE = 0.05
RECENT_SIGNUP_RATE = 0.01
RECENT_CART_RATE = 0.01

CONSENT_OUTCOMES = ("granted", "withdrawn", "denied", "no_row")
CONSENT_MIX = {
    ("email", "marketing"): {"granted": 0.83, "withdrawn": 0.05, "denied": 0.02, "no_row": 0.10},
    ("email", "transactional"): {"granted": 0.96, "no_row": 0.04},
    ("sms", "marketing"): {"granted": 0.55, "withdrawn": 0.07, "denied": 0.10, "no_row": 0.28},
}
SMS_CONSENT_WITHOUT_PHONE = {"denied": 0.10, "no_row": 0.90}
REGRANTED_SHARE = 0.10

EVENT_TYPES = (
    "signed_up",
    "activated",
    "feature_used",
    "milestone_completed",
    "page_viewed",
    "content_engaged",
    "demo_requested",
    "cart_abandoned",
    "quote_sent",
    "quote_accepted",
    "purchase",
    "plan_limit_reached",
)
ACTIVATION_RATE = {"subscriber": 0.25, "lead": 0.45, "trial": 0.65, "customer": 0.97, "churned": 0.90}
# Expected everyday events (page views, feature use...) of a contact active 90 days or more in the window.
BEHAVIOUR_EVENTS = {"subscriber": 4.0, "lead": 8.0, "trial": 14.0, "customer": 13.0, "churned": 9.0}
BEHAVIOUR_MIX = {
    "subscriber": {"page_viewed": 0.55, "content_engaged": 0.45},
    "lead": {"page_viewed": 0.45, "content_engaged": 0.40, "feature_used": 0.15},
    "trial": {"feature_used": 0.55, "page_viewed": 0.27, "content_engaged": 0.10, "plan_limit_reached": 0.08},
    "customer": {
        "feature_used": 0.62,
        "page_viewed": 0.22,
        "content_engaged": 0.08,
        "plan_limit_reached": 0.08,
    },
    "churned": {
        "feature_used": 0.45,
        "page_viewed": 0.40,
        "content_engaged": 0.10,
        "plan_limit_reached": 0.05,
    },
}
MILESTONES_RANGE = {
    "subscriber": (0, 1),
    "lead": (0, 2),
    "trial": (0, 4),
    "customer": (2, 7),
    "churned": (1, 4),
}

_DAY = 86_400
_HOUR = 3_600
_EPOCH = datetime(1970, 1, 1)
_PHONE_STRIDE = 2_654_435_761
_COPY_ROWS = 100_000
_STAGE = {name: code for code, name in enumerate(LIFECYCLE_STAGES)}
_EVENT = {name: code for code, name in enumerate(EVENT_TYPES)}
_OPP = {name: code for code, name in enumerate(OPPORTUNITY_STAGES)}
_GRANTED, _WITHDRAWN, _DENIED, _NO_ROW = range(4)
_INVALID_PHONE_TEXT = ("n/a", "none", "unknown", "tbd", "ask reception", "call office")


@dataclass(frozen=True)
class SeedReport:
    """What one seeding run wrote: rows per table, the time it took and the planted dirty data."""

    contacts: int
    seed: int
    as_of: datetime
    rows: Mapping[str, int]
    planted: Mapping[str, int]
    elapsed_seconds: float

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready copy of the report."""
        return {
            "contacts": self.contacts,
            "seed": self.seed,
            "as_of": self.as_of.isoformat(),
            "rows": dict(self.rows),
            "planted": dict(self.planted),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


class _Reference:
    """The lookup lists under include/crm_reference, as arrays indexed by code."""

    def __init__(self, directory: Path) -> None:
        countries = json.loads((directory / "countries.json").read_text(encoding="utf-8"))
        self.catalog = json.loads((directory / "catalog.json").read_text(encoding="utf-8"))
        self.country_codes = np.array(list(countries), dtype=object)
        self.country_weights = _probabilities([spec["weight"] for spec in countries.values()])
        self.dial = [spec["dial"] for spec in countries.values()]
        self.digits = [spec["digits"] for spec in countries.values()]
        self.lead = [spec["lead"] for spec in countries.values()]
        self.phone_space = [len(spec["lead"]) * 10 ** (spec["digits"] - 1) for spec in countries.values()]
        regions = [(c, region) for c, spec in enumerate(countries.values()) for region in spec["regions"]]
        self.region_country = np.array([c for c, _ in regions])
        self.region_name = np.array([region["name"] for _, region in regions] + [None], dtype=object)
        self.region_tz = np.array([region["timezone"] for _, region in regions] + [None], dtype=object)
        self.region_weight = np.array([region["weight"] for _, region in regions], dtype=float)
        specs = list(countries.values())
        self.region_prefixes = [region.get("prefixes") or specs[c]["prefixes"] for c, region in regions]
        cultures = sorted({culture for spec in specs for culture, _, _ in spec["cultures"]})
        self.culture_codes = cultures
        self.country_cultures = [
            (
                [cultures.index(culture) for culture, _, _ in spec["cultures"]],
                _probabilities([weight for _, weight, _ in spec["cultures"]]),
                [locale for _, _, locale in spec["cultures"]],
            )
            for spec in specs
        ]
        self.names = self._names(directory / "names.csv", cultures)

    @staticmethod
    def _names(path: Path, cultures: list[str]) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
        table: dict[tuple[int, str], tuple[list[str], list[str]]] = {}
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                names, ascii_names = table.setdefault((cultures.index(row["culture"]), row["part"]), ([], []))
                names.append(row["name"])
                ascii_names.append(row["ascii"])
        return {
            key: (np.array(names, dtype=object), np.array(ascii_names, dtype=object))
            for key, (names, ascii_names) in table.items()
        }

    def weighted(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """A catalog list of [value, weight] pairs as (values + None, probabilities)."""
        pairs = self.catalog[key]
        return (
            np.array([value for value, _ in pairs] + [None], dtype=object),
            _probabilities([weight for _, weight in pairs]),
        )

    def json_values(self, key: str, field: str) -> np.ndarray:
        """One ready-made JSON object per value of a catalog list, e.g. ``{"feature": "api"}``."""
        return np.array([json.dumps({field: value}) for value in self.catalog[key]], dtype=object)


@cache
def _reference() -> _Reference:
    return _Reference(REFERENCE_DIR)


def _probabilities(weights: Sequence[float]) -> np.ndarray:
    values = np.asarray(weights, dtype=float)
    return values / values.sum()


def _counts(n: int, weights: Sequence[float]) -> np.ndarray:
    """Exact counts for ``n`` items split by ``weights`` (largest remainder rounding)."""
    raw = _probabilities(weights) * n
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(counts - raw, kind="stable")[: n - int(counts.sum())]] += 1
    return counts


def _shuffled(rng: np.random.Generator, counts: Sequence[int] | np.ndarray) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(len(counts)), counts))


def _quota(rng: np.random.Generator, n: int, weights: Sequence[float]) -> np.ndarray:
    """``n`` category codes in exactly the proportions of ``weights``, in random order."""
    return _shuffled(rng, _counts(n, weights))


def _cumcount(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each item within its run of equal keys (keys sorted)."""
    return np.arange(len(sorted_keys)) - np.searchsorted(sorted_keys, sorted_keys, side="left")


def _between(rng: np.random.Generator, low: np.ndarray | int, high: np.ndarray | int, size: int) -> np.ndarray:
    """Uniform whole seconds in [low, high]."""
    low = np.asarray(low, dtype=np.int64)
    high = np.asarray(high, dtype=np.int64)
    return low + (rng.random(size) * (high - low + 1)).astype(np.int64).clip(0, None)


def _timestamps(seconds: np.ndarray) -> list[str | None]:
    """Naive UTC timestamps in the text form SQLAlchemy uses on SQLite (negative means NULL)."""
    if len(seconds) == 0:
        return []
    text = np.datetime_as_string(np.maximum(seconds, 0).astype("datetime64[s]"), unit="us")
    text.view(np.uint32).reshape(len(text), -1)[:, 10] = ord(" ")
    values = text.tolist()
    for position in np.flatnonzero(seconds < 0).tolist():
        values[position] = None
    return values


def _rows(*columns: np.ndarray | list) -> list[tuple]:
    return list(
        zip(
            *(column.tolist() if isinstance(column, np.ndarray) else column for column in columns),
            strict=True,
        )
    )


def _child_ids(prefix: str, numbers: np.ndarray, sequence: np.ndarray, width: int) -> list[str]:
    """Ids of rows that belong to a contact: prefix, contact number, then the row's number for it."""
    return [
        f"{prefix}{number:07d}-{seq:0{width}d}" for number, seq in zip(numbers.tolist(), sequence.tolist(), strict=True)
    ]


def _accounts_in(n: int) -> int:
    return math.ceil(round(n * B2B_SHARE) / CONTACTS_PER_ACCOUNT)


class _Block:
    """One block of contacts and everything that hangs off them, drawn from one random stream."""

    def __init__(self, ref: _Reference, seed: int, as_of: int, block_no: int, start: int, n: int) -> None:
        self.ref = ref
        self.seed = seed
        self.now = as_of
        self.window_start = as_of - EVENT_WINDOW_DAYS * _DAY
        self.block_no = block_no
        self.n = n
        self.rng = np.random.default_rng([seed, block_no])
        self.number = np.arange(start + 1, start + n + 1, dtype=np.int64)
        self.ids = np.array([f"c{number:07d}" for number in self.number.tolist()], dtype=object)
        self.rows: dict[str, list[tuple]] = {}
        self.planted: Counter[str] = Counter()

    def generate(self) -> None:
        """Draw every table for this block, in an order fixed for determinism."""
        self._people()
        self._accounts()
        self._identity()
        self._timeline()
        self._plans()
        self._contact_points()
        self._consents()
        self._subscriptions()
        self._opportunities()
        self._tickets()
        self._events()
        self._contacts()

    def _people(self) -> None:
        rng, n = self.rng, self.n
        self.stage = _quota(rng, n, [STAGE_MIX[name] for name in LIFECYCLE_STAGES])
        self.b2b = _quota(rng, n, [1 - B2B_SHARE, B2B_SHARE]) == 1
        duplicates = round(n * DUPLICATE_RATE)
        order = rng.permutation(n)
        self.dup_rows = order[:duplicates]
        self.dup_sources = order[duplicates : 2 * duplicates]
        self.dup_kind = _quota(rng, duplicates, [0.5, 0.25, 0.25])  # email, phone, both
        self.is_dup = np.zeros(n, dtype=bool)
        self.is_dup[self.dup_rows] = True
        self.b2b[self.dup_rows] = self.b2b[self.dup_sources]

    def _accounts(self) -> None:
        rng, ref = self.rng, self.ref
        tiers = ref.catalog["tiers"]
        free = rng.permutation(np.flatnonzero(self.b2b & ~self.is_dup))
        count = min(_accounts_in(self.n), len(free))
        tier = _quota(rng, count, [t["weight"] for t in tiers])
        self.account = np.full(self.n, -1, dtype=np.int64)
        self.account[free[:count]] = np.arange(count)
        if count:
            size = np.array([tiers[t]["contacts"] for t in tier], dtype=float)
            self.account[free[count:]] = rng.choice(count, size=len(free) - count, p=size / size.sum())
        self.b2b &= (self.account >= 0) | self.is_dup
        industries, industry_p = ref.weighted("industries")
        self.acc_industry = np.append(rng.choice(len(industry_p), size=count, p=industry_p), -1)
        self.acc_country = rng.choice(len(ref.country_weights), size=count, p=ref.country_weights)
        self.acc_tier = np.append(tier, -1)
        owners = np.array(ref.catalog["owners"] + [None], dtype=object)
        self.acc_owner = np.append(rng.integers(0, len(owners) - 1, size=count), -1)
        low = np.log([tiers[t]["employees"][0] for t in tier])
        high = np.log([tiers[t]["employees"][1] for t in tier])
        employees = np.exp(low + rng.random(count) * (high - low)).astype(np.int64)
        first_words, second_words = ref.catalog["company_words"]
        first = rng.integers(0, len(first_words), size=count).tolist()
        second = rng.integers(0, len(second_words), size=count).tolist()
        suffix_pick = rng.random(count).tolist()
        names = []
        self.acc_domain = []
        for j in range(count):
            suffixes = ref.catalog["legal_suffixes"][ref.country_codes[self.acc_country[j]]]
            words = f"{first_words[first[j]]} {second_words[second[j]]}"
            names.append(f"{words} {suffixes[int(suffix_pick[j] * len(suffixes))]}")
            self.acc_domain.append(f"{words.lower().replace(' ', '-')}.example")
        base = self.block_no * _accounts_in(BLOCK)
        self.account_ids = np.array([f"a{base + j + 1:06d}" for j in range(count)] + [None], dtype=object)
        self.rows["accounts"] = _rows(
            self.account_ids[:count],
            names,
            industries[self.acc_industry[:count]],
            employees,
            [tiers[t]["name"] for t in tier],
        )
        self.industries = industries
        self.owners = owners

    def _identity(self) -> None:
        rng, ref, n = self.rng, self.ref, self.n
        self.country = rng.choice(len(ref.country_weights), size=n, p=ref.country_weights)
        with_account = self.account >= 0
        self.country[with_account] = self.acc_country[self.account[with_account]]
        self.region = np.empty(n, dtype=np.int64)
        self.locale = np.empty(n, dtype=object)
        culture = np.empty(n, dtype=np.int64)
        for c, (cultures, weights, locales) in enumerate(ref.country_cultures):
            rows = np.flatnonzero(self.country == c)
            regions = np.flatnonzero(ref.region_country == c)
            weight = ref.region_weight[regions]
            self.region[rows] = rng.choice(regions, size=len(rows), p=weight / weight.sum())
            pick = rng.choice(len(cultures), size=len(rows), p=weights)
            culture[rows] = np.array(cultures)[pick]
            self.locale[rows] = np.array(locales, dtype=object)[pick]
        self.first = np.empty(n, dtype=object)
        self.last = np.empty(n, dtype=object)
        self.first_ascii = np.empty(n, dtype=object)
        self.last_ascii = np.empty(n, dtype=object)
        for code in range(len(ref.culture_codes)):
            rows = np.flatnonzero(culture == code)
            for part, names, ascii_names in (
                ("first", self.first, self.first_ascii),
                ("last", self.last, self.last_ascii),
            ):
                text, ascii_text = ref.names[(code, part)]
                pick = rng.integers(0, len(text), size=len(rows))
                names[rows] = text[pick]
                ascii_names[rows] = ascii_text[pick]
        roles, role_p = ref.weighted("roles")
        self.role = np.where(self.b2b, rng.choice(len(role_p), size=n, p=role_p), -1)
        self.roles = roles
        rows, sources = self.dup_rows, self.dup_sources
        for array in (
            self.b2b,
            self.account,
            self.country,
            self.region,
            self.locale,
            self.first,
            self.last,
            self.first_ascii,
            self.last_ascii,
            self.role,
        ):
            array[rows] = array[sources]

    def _timeline(self) -> None:
        rng, n, now = self.rng, self.n, self.now
        stage = self.stage
        age = _between(rng, 600, HISTORY_DAYS * _DAY, n)
        early = np.isin(stage, [_STAGE["subscriber"], _STAGE["lead"]]).nonzero()[0]
        recent = rng.permutation(early)[: max(1, round(n * RECENT_SIGNUP_RATE))]
        age[recent] = _between(rng, 600, 2 * _DAY, len(recent))
        for name, low, high in (
            ("trial", 600, 14 * _DAY),
            ("customer", 14 * _DAY, HISTORY_DAYS * _DAY),
            ("churned", 90 * _DAY, HISTORY_DAYS * _DAY),
        ):
            rows = np.flatnonzero(stage == _STAGE[name])
            age[rows] = _between(rng, low, high, len(rows))
        self.created = now - age
        churned = stage == _STAGE["churned"]
        self.churned_at = np.full(n, -1, dtype=np.int64)
        self.churned_at[churned] = _between(rng, self.created[churned] + 30 * _DAY, now - _DAY, int(churned.sum()))
        self.churn_reason = np.full(n, -1)
        self.churn_reason[churned] = _quota(rng, int(churned.sum()), [CHURN_REASON_MIX[r] for r in CHURN_REASONS])
        activity = _quota(rng, n, [0.70, 0.20, 0.10])  # active, dormant 30-120 days, lapsed 120-365 days
        quiet = np.minimum(rng.exponential(2.5 * _DAY, size=n).astype(np.int64), age)
        last = np.select(
            [activity == 0, activity == 1],
            [now - quiet, now - _between(rng, 30 * _DAY, 120 * _DAY, n)],
            now - _between(rng, 120 * _DAY, 365 * _DAY, n),
        )
        last[churned] = self.churned_at[churned] - _between(rng, 0, 14 * _DAY, int(churned.sum()))
        self.last_active = np.maximum(last, self.created)
        delay = (rng.lognormal(np.log(72 * _HOUR), 1.0, size=n)).astype(np.int64) + 600
        rate = np.array([ACTIVATION_RATE[name] for name in LIFECYCLE_STAGES])[stage]
        activated = (rng.random(n) < rate) & (self.created + delay <= self.last_active)
        self.activated_at = np.where(activated, self.created + delay, -1)

    def _plans(self) -> None:
        rng, ref, n = self.rng, self.ref, self.n
        plans = ref.catalog["plans"]
        tiers = ref.catalog["tiers"]
        self.plan_names = np.array([name for name, _ in plans] + [None], dtype=object)
        price = np.array([price for _, price in plans])
        self.plan = np.full(n, -1)
        tier = self.acc_tier[self.account]
        paying = np.isin(self.stage, [_STAGE["customer"], _STAGE["churned"]])
        mixes = {
            -1: [0.6, 0.3, 0.1, 0.0],
            0: [0.3, 0.45, 0.25, 0.0],
            1: [0.05, 0.35, 0.45, 0.15],
            2: [0.0, 0.1, 0.4, 0.5],
        }
        for segment, mix in mixes.items():
            rows = np.flatnonzero(paying & (tier == segment))
            self.plan[rows] = rng.choice(len(plans), size=len(rows), p=mix)
        trial = np.flatnonzero(self.stage == _STAGE["trial"])
        self.plan[trial] = rng.choice([1, 2], size=len(trial), p=[0.6, 0.4])
        low = np.array([t["seats"][0] for t in tiers] + [1])[tier]
        high = np.array([t["seats"][1] for t in tiers] + [1])[tier]
        seats = rng.integers(low, high + 1)
        value = np.where(self.plan >= 0, price[self.plan] * seats, 0.0)
        customer = self.stage == _STAGE["customer"]
        churned = self.stage == _STAGE["churned"]
        self.mrr = np.where(customer, value, 0.0).round(2)
        months = np.where(churned, self.churned_at - self.created, self.now - self.created) / (30.44 * _DAY)
        self.ltv = np.where(customer | churned, value * months * rng.uniform(0.85, 1.0, n), 0.0).round(2)

    def _contact_points(self) -> None:
        rng, n = self.rng, self.n
        email_kind = self.dup_kind != 1
        phone_kind = self.dup_kind != 0
        self.email_state = self._defects(self.dup_sources[email_kind], INVALID_EMAIL_RATE, MISSING_EMAIL_RATE)
        self.phone_state = self._defects(self.dup_sources[phone_kind], INVALID_PHONE_RATE, MISSING_PHONE_RATE)
        self.email_state[self.dup_rows[email_kind]] = 3
        self.phone_state[self.dup_rows[phone_kind]] = 3
        only_email = self.dup_rows[~phone_kind]
        self.phone_state[only_email] = np.where(rng.random(len(only_email)) < 0.5, 0, 2)
        self.email = self._emails()
        self.phone = self._phones()
        location = _quota(
            rng,
            n,
            [
                1 - MISSING_LOCATION_RATE,
                0.3 * MISSING_LOCATION_RATE,
                0.3 * MISSING_LOCATION_RATE,
                0.4 * MISSING_LOCATION_RATE,
            ],
        )
        self.country_missing = (location == 1) | (location == 3)
        self.timezone_missing = (location == 2) | (location == 3)
        self.planted.update(
            {
                "duplicate_contacts": len(self.dup_rows),
                "duplicate_email_variants": int(email_kind.sum()),
                "duplicate_phone_variants": int(phone_kind.sum()),
                "invalid_email": int((self.email_state == 1).sum()),
                "missing_email": int((self.email_state == 2).sum()),
                "invalid_phone": int((self.phone_state == 1).sum()),
                "missing_phone": int((self.phone_state == 2).sum()),
                "missing_location": int((location != 0).sum()),
                "missing_country": int(self.country_missing.sum()),
                "missing_timezone": int(self.timezone_missing.sum()),
            }
        )

    def _defects(self, keep_valid: np.ndarray, invalid_rate: float, missing_rate: float) -> np.ndarray:
        """0 valid, 1 invalid, 2 missing for the originals; duplicates and ``keep_valid`` stay 0."""
        state = np.zeros(self.n, dtype=np.int64)
        pool = np.setdiff1d(np.flatnonzero(~self.is_dup), keep_valid)
        invalid = min(round(self.n * invalid_rate), len(pool))
        missing = min(round(self.n * missing_rate), len(pool) - invalid)
        state[pool] = _shuffled(self.rng, [len(pool) - invalid - missing, invalid, missing])
        return state

    def _emails(self) -> list[str | None]:
        rng, ref, n = self.rng, self.ref, self.n
        domains, domain_p = ref.weighted("consumer_domains")
        consumer = domains[rng.choice(len(domain_p), size=n, p=domain_p)]
        acc_domain = self.acc_domain + [None]
        pattern = rng.integers(0, 5, size=n).tolist()
        variant = rng.integers(0, 5, size=n).tolist()
        state = self.email_state.tolist()
        emails: list[str | None] = []
        for i, (number, first, last) in enumerate(
            zip(self.number.tolist(), self.first_ascii.tolist(), self.last_ascii.tolist(), strict=True)
        ):
            domain = acc_domain[self.account[i]] if self.b2b[i] else consumer[i]
            local = (
                f"{first}.{last}",
                f"{first}{last}",
                f"{first[0]}{last}",
                f"{first}_{last}",
                f"{last}.{first}",
            )[pattern[i]]
            email = f"{local}{number}@{domain}"
            if state[i] == 1:
                email = (
                    f"{local}{number}{domain}",
                    f"{local}{number}@{domain.split('.')[0]}",
                    f"{local}{number}@{domain.replace('.', '..')}",
                    f"{first} {last}{number}@{domain}",
                    f"{local}{number}@@{domain}",
                )[variant[i]]
            emails.append(None if state[i] == 2 else email)
        for row, source in zip(self.dup_rows.tolist(), self.dup_sources.tolist(), strict=True):
            if state[row] == 3:
                original = emails[source]
                emails[row] = (
                    original.title(),
                    original.upper(),
                    f" {original} ",
                    f"{original} ",
                    f"  {original.title()}",
                )[variant[row]]
        return emails

    def _phones(self) -> list[str | None]:
        rng, ref = self.rng, self.ref
        pick = rng.random(self.n).tolist()
        kind = rng.integers(0, 4, size=self.n).tolist()
        state = self.phone_state.tolist()
        phones: list[str | None] = []
        national_numbers: list[str] = []
        for i, (number, country, region) in enumerate(
            zip(self.number.tolist(), self.country.tolist(), self.region.tolist(), strict=True)
        ):
            digits, lead, dial = ref.digits[country], ref.lead[country], ref.dial[country]
            subscriber = (number * _PHONE_STRIDE + self.seed * 7919) % ref.phone_space[country]
            prefixes = ref.region_prefixes[region]
            rest = subscriber % 10 ** (digits - 1)
            national = (
                f"{prefixes[int(pick[i] * len(prefixes))]}{lead[subscriber // 10 ** (digits - 1)]}{rest:0{digits - 1}d}"
            )
            national_numbers.append(national)
            phone = f"+{dial}{national}"
            if state[i] == 1:
                phone = (
                    f"+{dial}{national[:4]}",
                    _INVALID_PHONE_TEXT[int(pick[i] * len(_INVALID_PHONE_TEXT))],
                    f"+{dial}{national}{rest % 1000:03d}",
                    f"{national[:3]}-{national[3:5]}",
                )[kind[i]]
            phones.append(None if state[i] == 2 else phone)
        for row, source in zip(self.dup_rows.tolist(), self.dup_sources.tolist(), strict=True):
            if state[row] == 3:
                dial, national = ref.dial[self.country[source]], national_numbers[source]
                head, middle, tail = national[:3], national[3:6], national[6:]
                phones[row] = (
                    f"+{dial} {head} {middle} {tail}",
                    f"+{dial}-{head}-{middle}-{tail}",
                    f"+{dial} ({head}) {middle}-{tail}",
                    f"+{dial}.{head}.{middle}.{tail}",
                )[kind[row]]
        return phones

    def _consents(self) -> None:
        rng = self.rng
        rows: list[tuple] = []
        for (channel, purpose), mix in CONSENT_MIX.items():
            weights = [mix.get(outcome, 0.0) for outcome in CONSENT_OUTCOMES]
            if channel == "sms":
                status = np.empty(self.n, dtype=np.int64)
                has_phone = self.phone_state != 2
                status[has_phone] = _quota(rng, int(has_phone.sum()), weights)
                without = [SMS_CONSENT_WITHOUT_PHONE.get(outcome, 0.0) for outcome in CONSENT_OUTCOMES]
                status[~has_phone] = _quota(rng, int((~has_phone).sum()), without)
            else:
                status = _quota(rng, self.n, weights)
            for code, outcome in enumerate(CONSENT_OUTCOMES):
                self.planted[f"{channel}_{purpose}_{outcome}"] += int((status == code).sum())
            rows.extend(self._consent_history(channel, purpose, status))
        self.rows["consents"] = rows

    def _consent_history(self, channel: str, purpose: str, status: np.ndarray) -> list[tuple]:
        """Rows whose newest one per contact has ``status``: withdrawn follows a grant, and a
        share of grants follows an earlier denial (re-subscribed)."""
        rng = self.rng
        text = self.ref.catalog["consent_text"][f"{channel}_{purpose}"]
        regranted = (status == _GRANTED) & (rng.random(self.n) < REGRANTED_SHARE)
        has_row = np.flatnonzero(status != _NO_ROW)
        first_status = np.where((status == _DENIED) | regranted, _DENIED, _GRANTED)[has_row]
        first_at = self.created[has_row] + _between(rng, 0, 300, len(has_row))
        first_source = rng.choice(3, size=len(has_row), p=[0.6, 0.15, 0.25])
        later = np.flatnonzero((status[has_row] == _WITHDRAWN) | regranted[has_row])
        later_at = _between(rng, first_at[later] + 1, self.now, len(later))
        contacts = np.concatenate([has_row, has_row[later]])
        statuses = np.concatenate([first_status, status[has_row][later]])
        sources = np.concatenate([first_source, np.full(len(later), 3)])
        octet = rng.integers(1, 255, size=len(contacts)).tolist()
        names = ("signup_form", "checkout", "import", "preference_center")
        proofs = []
        for source, code, number in zip(sources.tolist(), statuses.tolist(), octet, strict=True):
            outcome = CONSENT_OUTCOMES[code]
            if source == 2:
                attested = "opt-in attested by list owner" if code == _GRANTED else "no opt-in on file"
                proofs.append(f"import batch {number}: {attested}")
            elif source == 3:
                proofs.append(f"preference_center ip=198.51.100.{number}: {channel} {purpose} set to {outcome}")
            else:
                box = "ticked" if code == _GRANTED else "left unticked"
                proofs.append(f'{names[source]} ip=203.0.113.{number}: box {box}: "{text}"')
        return _rows(
            self.ids[contacts],
            [channel] * len(contacts),
            [purpose] * len(contacts),
            np.array(CONSENT_OUTCOMES, dtype=object)[statuses],
            np.array(names, dtype=object)[sources],
            _timestamps(np.concatenate([first_at, later_at])),
            proofs,
        )

    def _subscriptions(self) -> None:
        rng, now = self.rng, self.now
        trial = np.flatnonzero(self.stage == _STAGE["trial"])
        customer = np.flatnonzero(self.stage == _STAGE["customer"])
        churned = np.flatnonzero(self.stage == _STAGE["churned"])
        contacts = np.concatenate([trial, customer, churned])
        status = np.concatenate(
            [
                np.zeros(len(trial), dtype=np.int64),
                1 + _quota(rng, len(customer), [0.88, 0.06, 0.06]),
                np.full(len(churned), 3),
            ]
        )
        renews = np.concatenate(
            [
                self.created[trial] + 14 * _DAY,
                _between(rng, now + _HOUR, now + 60 * _DAY, len(customer)),
                self.churned_at[churned],
            ]
        )
        past_due = status == 2
        renews[past_due] = now - _between(rng, _DAY, 10 * _DAY, int(past_due.sum()))
        billing = np.where(status == 1, rng.choice(3, size=len(status), p=[0.85, 0.12, 0.03]), 0)
        billing[past_due] = 2
        self.rows["subscriptions"] = _rows(
            [f"s{number:07d}" for number in self.number[contacts].tolist()],
            self.ids[contacts],
            self.account_ids[self.account[contacts]],
            self.plan_names[self.plan[contacts]],
            np.array(SUBSCRIPTION_STATUSES, dtype=object)[status],
            _timestamps(renews),
            np.array(BILLING_STATUSES, dtype=object)[billing],
            self.mrr[contacts],
        )

    def _opportunities(self) -> None:
        rng, n, now, stage = self.rng, self.n, self.now, self.stage
        b2b = self.b2b & (self.account >= 0)
        leads = np.flatnonzero(b2b & (stage == _STAGE["lead"]) & (rng.random(n) < 0.5))
        trials = np.flatnonzero(b2b & (stage == _STAGE["trial"]) & (rng.random(n) < 0.4))
        customers = np.flatnonzero(b2b & (stage == _STAGE["customer"]))
        expansions = customers[rng.random(len(customers)) < 0.15]
        self.opp_contact = np.concatenate([leads, trials, customers, expansions])
        self.opp_seq = np.concatenate(
            [
                np.zeros(len(self.opp_contact) - len(expansions), dtype=np.int64),
                np.ones(len(expansions), dtype=np.int64),
            ]
        )
        self.opp_stage = np.concatenate(
            [
                _quota(rng, len(leads), [0.25, 0.25, 0.20, 0.15, 0.0, 0.15]),
                _quota(rng, len(trials), [0.0, 0.40, 0.35, 0.25, 0.0, 0.0]),
                np.full(len(customers), _OPP["closed_won"]),
                _quota(rng, len(expansions), [0.0, 0.0, 0.5, 0.5, 0.0, 0.0]),
            ]
        )
        created = self.created[self.opp_contact]
        m = len(self.opp_contact)
        updated = np.where(
            self.opp_stage == _OPP["closed_lost"],
            now - _between(rng, 0, 150 * _DAY, m),
            now - _between(rng, 0, 30 * _DAY, m),
        )
        won = self.opp_stage == _OPP["closed_won"]
        updated[won] = created[won] + _between(
            rng, 3 * _DAY, np.clip(now - created[won], 3 * _DAY, 60 * _DAY), int(won.sum())
        )
        self.opp_updated = np.maximum(updated, created)
        tiers = self.ref.catalog["tiers"]
        self.opp_tier = self.acc_tier[self.account[self.opp_contact]]
        low = np.array([t["deal"][0] for t in tiers])[self.opp_tier]
        high = np.array([t["deal"][1] for t in tiers])[self.opp_tier]
        amount = np.round(rng.uniform(low, high), -2)
        self.opp_amount = np.where(self.opp_seq == 1, np.round(amount * 0.3, -2), amount)
        self.rows["opportunities"] = _rows(
            _child_ids("o", self.number[self.opp_contact], self.opp_seq, 1),
            self.account_ids[self.account[self.opp_contact]],
            self.ids[self.opp_contact],
            np.array(OPPORTUNITY_STAGES, dtype=object)[self.opp_stage],
            self.opp_amount,
            _timestamps(self.opp_updated),
        )

    def _tickets(self) -> None:
        rng, n, now = self.rng, self.n, self.now
        rate = np.array(
            [{"customer": 0.20, "trial": 0.12, "churned": 0.15}.get(name, 0.0) for name in LIFECYCLE_STAGES]
        )[self.stage]
        has = rng.random(n) < rate
        count = has.astype(np.int64) + (has & (rng.random(n) < 0.3))
        contacts = np.repeat(np.arange(n), count)
        m = len(contacts)
        opened = _between(rng, np.maximum(self.created[contacts], now - 120 * _DAY), now, m)
        draw = rng.random(m)
        recent = now - opened < 7 * _DAY
        status = np.where(draw < np.where(recent, 0.5, 0.05), 0, np.where(draw < np.where(recent, 0.8, 0.1), 1, 2))
        took = np.minimum(rng.exponential(1.5 * _DAY, size=m).astype(np.int64), now - opened)
        closed = np.where(status == 2, opened + took, -1)
        self.rows["tickets"] = _rows(
            _child_ids("t", self.number[contacts], _cumcount(contacts), 1),
            self.ids[contacts],
            np.array(TICKET_STATUSES, dtype=object)[status],
            _timestamps(opened),
            _timestamps(closed),
        )

    def _events(self) -> None:
        rng, ref, n = self.rng, self.ref, self.n
        start = np.maximum(self.created, self.window_start)
        end = self.last_active
        live = end >= start
        span = np.where(live, end - start, 0)
        self.feature_offset = rng.integers(0, len(ref.catalog["features"]), size=n)
        self.feature_breadth = rng.integers(1, len(ref.catalog["features"]) + 1, size=n)
        activated = np.flatnonzero(self.activated_at >= 0)
        parts = [
            self._part(
                np.arange(n),
                self.created,
                "signed_up",
                ref.json_values("signup_sources", "source")[rng.integers(0, 6, size=n)],
            ),
            self._part(activated, self.activated_at[activated], "activated", "{}"),
            self._behaviour(start, span, live),
            self._milestones(end),
            *self._commerce(start, span, live),
            *self._sales(start, span, live),
        ]
        contacts = np.concatenate([part[0] for part in parts])
        times = np.concatenate([part[1] for part in parts])
        kinds = np.concatenate([part[2] for part in parts])
        properties = np.concatenate([part[3] for part in parts])
        np.maximum.at(self.last_active, contacts, times)
        order = np.lexsort((kinds, times, contacts))
        contacts, times, kinds, properties = contacts[order], times[order], kinds[order], properties[order]
        ids = _child_ids("e", self.number[contacts], _cumcount(contacts), 3)
        self.rows["events"] = _rows(
            ids,
            self.ids[contacts],
            np.array(EVENT_TYPES, dtype=object)[kinds],
            _timestamps(times),
            properties,
        )

    @staticmethod
    def _part(
        contacts: np.ndarray, times: np.ndarray, kind: str | np.ndarray, properties: str | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Events as (contact rows, times, type codes, JSON properties), one entry per event."""
        m = len(contacts)
        if not isinstance(kind, np.ndarray):
            kind = np.full(m, _EVENT[kind])
        if not isinstance(properties, np.ndarray):
            properties = np.full(m, properties, dtype=object)
        return contacts, times, kind, properties

    def _behaviour(self, start: np.ndarray, span: np.ndarray, live: np.ndarray) -> tuple:
        """Everyday usage inside each contact's active span, plus one event at last activity."""
        rng, ref, n = self.rng, self.ref, self.n
        rate = np.array([BEHAVIOUR_EVENTS[name] for name in LIFECYCLE_STAGES])[self.stage]
        expected = rate * np.clip((span / _DAY + 1) / 90, 0.05, 1.0)
        count = np.where(live, np.minimum(rng.poisson(expected), 150), 0)
        contacts = np.repeat(np.arange(n), count)
        times = self._within(contacts, start, span)
        kinds = np.empty(len(contacts), dtype=np.int64)
        for code, name in enumerate(LIFECYCLE_STAGES):
            rows = np.flatnonzero(self.stage[contacts] == code)
            mix = BEHAVIOUR_MIX[name]
            kinds[rows] = rng.choice(
                [_EVENT[kind] for kind in mix], size=len(rows), p=_probabilities(list(mix.values()))
            )
        anchor = np.flatnonzero((self.last_active >= self.window_start) & (self.last_active > self.created))
        anchor_kind = np.where(self.activated_at[anchor] >= 0, _EVENT["feature_used"], _EVENT["page_viewed"])
        contacts = np.concatenate([contacts, anchor])
        times = np.concatenate([times, self.last_active[anchor]])
        kinds = np.concatenate([kinds, anchor_kind])
        properties = np.empty(len(contacts), dtype=object)
        for kind, field, key in (
            ("page_viewed", "path", "pages"),
            ("content_engaged", "topic", "topics"),
            ("plan_limit_reached", "limit", "limits"),
        ):
            rows = np.flatnonzero(kinds == _EVENT[kind])
            values = ref.json_values(key, field)
            properties[rows] = values[rng.integers(0, len(values), size=len(rows))]
        rows = np.flatnonzero(kinds == _EVENT["feature_used"])
        owner = contacts[rows]
        feature = self.feature_offset[owner] + (rng.random(len(rows)) * self.feature_breadth[owner]).astype(np.int64)
        features = ref.json_values("features", "feature")
        properties[rows] = features[feature % len(features)]
        return contacts, times, kinds, properties

    def _milestones(self, end: np.ndarray) -> tuple:
        """Onboarding milestones in their fixed order, between activation and last activity."""
        rng, n = self.rng, self.n
        milestones = self.ref.json_values("milestones", "milestone")
        first = np.maximum(self.activated_at, self.window_start)
        able = (self.activated_at >= 0) & (first <= end)
        low = np.array([MILESTONES_RANGE[name][0] for name in LIFECYCLE_STAGES])[self.stage]
        high = np.array([MILESTONES_RANGE[name][1] for name in LIFECYCLE_STAGES])[self.stage]
        count = np.where(able, np.minimum(rng.integers(low, high + 1), len(milestones)), 0)
        contacts = np.repeat(np.arange(n), count)
        order = _cumcount(contacts)
        share = (order + rng.random(len(contacts))) / count[contacts]
        times = first[contacts] + (share * (end - first + 1)[contacts]).astype(np.int64)
        return self._part(contacts, times, "milestone_completed", milestones[order])

    def _within(self, contacts: np.ndarray, start: np.ndarray, span: np.ndarray) -> np.ndarray:
        """A uniform time inside each listed contact's active span."""
        return start[contacts] + (self.rng.random(len(contacts)) * (span[contacts] + 1)).astype(np.int64)

    def _commerce(self, start: np.ndarray, span: np.ndarray, live: np.ndarray) -> list[tuple]:
        """Abandoned carts (some recovered by a purchase, some in the last two days) and purchases."""
        rng, n, now, stage = self.rng, self.n, self.now, self.stage
        price = np.array([value for _, value in self.ref.catalog["products"]])
        shoppers = ~self.b2b & live & (stage != _STAGE["subscriber"])
        count = np.where(shoppers, (rng.random(n) < 0.22).astype(np.int64) + (rng.random(n) < 0.06), 0)
        carts = np.repeat(np.arange(n), count)
        cart_at = self._within(carts, start, span)
        paid_at = cart_at + _between(rng, _HOUR, 48 * _HOUR, len(carts))
        recovered = (rng.random(len(carts)) < 0.35) & (paid_at <= self.last_active[carts])
        eligible = np.flatnonzero(
            ~self.b2b
            & (stage != _STAGE["churned"])
            & (self.last_active >= now - 7 * _DAY)
            & (self.created <= now - 2 * _DAY)
        )
        recent = rng.permutation(eligible)[: max(1, round(n * RECENT_CART_RATE))]
        recent_at = now - _between(rng, _HOUR, 47 * _HOUR, len(recent))
        cart_product = rng.integers(0, len(price), size=len(carts) + len(recent))
        cart_value = price[cart_product] * rng.integers(1, 4, size=len(cart_product))
        buyers = np.where(
            live & (stage == _STAGE["customer"]),
            np.where(self.b2b, rng.poisson(0.4, size=n), 1 + rng.poisson(1.0, size=n)),
            0,
        )
        repeat = np.repeat(np.arange(n), buyers)
        repeat_product = rng.integers(0, len(price), size=len(repeat))
        repeat_amount = price[repeat_product] * rng.integers(1, 3, size=len(repeat))
        bought = np.flatnonzero(recovered)
        return [
            self._priced(
                np.concatenate([carts, recent]),
                np.concatenate([cart_at, recent_at]),
                cart_product,
                cart_value,
                "cart_abandoned",
                ("cart_id", "cart", "value"),
            ),
            self._priced(
                np.concatenate([carts[bought], repeat]),
                np.concatenate([paid_at[bought], self._within(repeat, start, span)]),
                np.concatenate([cart_product[bought], repeat_product]),
                np.concatenate([cart_value[bought], repeat_amount]),
                "purchase",
                ("order_id", "ord", "amount"),
            ),
        ]

    def _priced(
        self,
        contacts: np.ndarray,
        times: np.ndarray,
        product: np.ndarray,
        value: np.ndarray,
        kind: str,
        fields: tuple[str, str, str],
    ) -> tuple:
        """Events carrying an id numbered per contact, a product and a money value."""
        id_field, prefix, value_field = fields
        names = np.array([json.dumps(name) for name, _ in self.ref.catalog["products"]], dtype=object)
        order = np.argsort(contacts, kind="stable")
        contacts, times, product, value = contacts[order], times[order], product[order], value[order]
        ids = _child_ids(prefix, self.number[contacts], _cumcount(contacts), 2)
        properties = np.array(
            [
                f'{{"{id_field}": "{row_id}", "product": {name}, "{value_field}": {amount:.2f}}}'
                for row_id, name, amount in zip(ids, names[product].tolist(), value.tolist(), strict=True)
            ],
            dtype=object,
        )
        return self._part(contacts, times, kind, properties)

    def _sales(self, start: np.ndarray, span: np.ndarray, live: np.ndarray) -> list[tuple]:
        """B2B demo requests and quotes that follow the opportunity pipeline."""
        rng, window = self.rng, self.window_start
        contacts, stage, updated = self.opp_contact, self.opp_stage, self.opp_updated
        created = self.created[contacts]
        demo_at = np.maximum(updated - _between(rng, 2 * _DAY, 20 * _DAY, len(contacts)), created)
        demo = np.flatnonzero(
            (stage >= _OPP["qualification"]) & (stage <= _OPP["closed_won"]) & (demo_at >= window) & (self.opp_seq == 0)
        )
        browsing = np.flatnonzero(self.b2b & live & (self.stage == _STAGE["lead"]) & (rng.random(self.n) < 0.1))
        won = stage == _OPP["closed_won"]
        sent_at = np.maximum(
            updated
            - np.where(won, _between(rng, _DAY, 10 * _DAY, len(contacts)), _between(rng, 0, 5 * _DAY, len(contacts))),
            created,
        )
        quoted = np.flatnonzero(
            np.isin(stage, [_OPP["proposal"], _OPP["negotiation"], _OPP["closed_won"]]) & (sent_at >= window)
        )
        accepted = quoted[won[quoted]]
        products = self.ref.catalog["quote_products"]
        pick = np.where(self.opp_seq == 0, self.opp_tier, 3 + rng.integers(0, 2, size=len(contacts)))
        quote_ids = _child_ids("q", self.number[contacts], self.opp_seq, 1)
        sent = np.array(
            [
                json.dumps(
                    {
                        "quote_id": quote_ids[i],
                        "product": products[pick[i]],
                        "value": float(self.opp_amount[i]),
                    }
                )
                for i in quoted.tolist()
            ],
            dtype=object,
        )
        accept = np.array([json.dumps({"quote_id": quote_ids[i]}) for i in accepted.tolist()], dtype=object)
        return [
            self._part(
                np.concatenate([contacts[demo], browsing]),
                np.concatenate([demo_at[demo], self._within(browsing, start, span)]),
                "demo_requested",
                "{}",
            ),
            self._part(contacts[quoted], sent_at[quoted], "quote_sent", sent),
            self._part(contacts[accepted], updated[accepted], "quote_accepted", accept),
        ]

    def _contacts(self) -> None:
        ref = self.ref
        country = np.append(ref.country_codes, np.array([None], dtype=object))[
            np.where(self.country_missing, -1, self.country)
        ]
        churn_reasons = np.array((*CHURN_REASONS, None), dtype=object)
        self.rows["contacts"] = _rows(
            self.ids,
            self.account_ids[self.account],
            self.email,
            self.phone,
            self.first,
            self.last,
            country,
            ref.region_name[self.region],
            ref.region_tz[np.where(self.timezone_missing, -1, self.region)],
            self.locale,
            self.roles[self.role],
            self.industries[self.acc_industry[self.account]],
            np.array(LIFECYCLE_STAGES, dtype=object)[self.stage],
            self.plan_names[self.plan],
            self.mrr,
            self.ltv,
            _timestamps(self.created),
            _timestamps(self.last_active),
            _timestamps(self.churned_at),
            churn_reasons[self.churn_reason],
            self.owners[self.acc_owner[self.account]],
        )


class _Loader:
    """Bulk loading into one database over its raw DBAPI connection, all in one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect
        self.raw = engine.raw_connection()
        dbapi = self.raw.driver_connection  # the driver's own connection: sqlite3 or psycopg2
        assert dbapi is not None, "a checked-out connection has its driver connection"
        self.dbapi = dbapi
        self.cursor = self.dbapi.cursor()

    @staticmethod
    def open(engine: Engine) -> _Loader:
        """The loader for the engine's database (SQLite or PostgreSQL)."""
        if engine.dialect.name == "sqlite":
            return _SqliteLoader(engine)
        if engine.dialect.name == "postgresql":
            return _PostgresLoader(engine)
        raise ValueError(f"Cannot seed a {engine.dialect.name!r} database: use SQLite or PostgreSQL")

    def _ddl(self, element) -> None:
        self.cursor.execute(str(element.compile(dialect=self.dialect)))

    def recreate_tables(self) -> None:
        """Drop the CRM tables and create them again, without their secondary indexes."""
        for table in CRM_TABLES.values():
            self._ddl(DropTable(table, if_exists=True))
            self._ddl(CreateTable(table))

    def create_indexes(self) -> None:
        """Build the secondary indexes schema.py declares, once the rows are in."""
        for table in CRM_TABLES.values():
            for index in sorted(table.indexes, key=lambda index: str(index.name)):
                self._ddl(CreateIndex(index))

    def begin(self) -> None:
        """Start the loading transaction."""

    def insert(self, table: Table, rows: list[tuple]) -> None:
        """Append rows given in the table's column order."""
        raise NotImplementedError

    def commit(self) -> None:
        """Make everything visible and refresh the planner statistics."""
        for name in CRM_TABLES:
            self.cursor.execute(f"ANALYZE {name}")
        self.dbapi.commit()

    def close(self, failed: bool) -> None:
        """Roll back an unfinished load and give the connection back."""
        if failed:
            self.dbapi.rollback()
        self.cursor.close()
        self.raw.close()


class _SqliteLoader(_Loader):
    """SQLite: journal and syncing off while loading, ``executemany`` per table."""

    def begin(self) -> None:
        self.dbapi.isolation_level = None
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-131072", "analysis_limit=2000"):
            self.cursor.execute(f"PRAGMA {pragma}")
        self.cursor.execute("BEGIN")

    def insert(self, table: Table, rows: list[tuple]) -> None:
        columns = ", ".join(column.name for column in table.columns)
        marks = ", ".join("?" for _ in table.columns)
        self.cursor.executemany(f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", rows)

    def commit(self) -> None:
        for name in CRM_TABLES:
            self.cursor.execute(f"ANALYZE {name}")
        self.cursor.execute("COMMIT")
        self.cursor.execute("PRAGMA journal_mode=WAL")

    def close(self, failed: bool) -> None:
        if failed and self.dbapi.in_transaction:
            self.cursor.execute("ROLLBACK")
        self.cursor.close()
        self.raw.close()


class _PostgresLoader(_Loader):
    """PostgreSQL: ``COPY ... FROM STDIN`` with CSV built in memory."""

    def begin(self) -> None:
        self.cursor.execute("SET LOCAL synchronous_commit TO OFF")
        self.cursor.execute("SET LOCAL maintenance_work_mem TO '256MB'")

    def insert(self, table: Table, rows: list[tuple]) -> None:
        columns = ", ".join(column.name for column in table.columns)
        statement = f"COPY {table.name} ({columns}) FROM STDIN WITH (FORMAT csv)"
        for first in range(0, len(rows), _COPY_ROWS):
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(rows[first : first + _COPY_ROWS])
            buffer.seek(0)
            if hasattr(self.cursor, "copy_expert"):
                self.cursor.copy_expert(statement, buffer)
            else:
                with self.cursor.copy(statement) as copy:
                    copy.write(buffer.getvalue())


def _block_plan(contacts: int, chunk: int) -> list[list[tuple[int, int, int]]]:
    """(block number, first contact, size) of every block, grouped into write batches of ~chunk contacts."""
    blocks = [(number, start, min(BLOCK, contacts - start)) for number, start in enumerate(range(0, contacts, BLOCK))]
    per_batch = max(1, chunk // BLOCK)
    return [blocks[i : i + per_batch] for i in range(0, len(blocks), per_batch)]


def seed_crm(url: str, contacts: int, as_of: datetime, seed: int = 7, chunk: int = 50_000) -> SeedReport:
    """Drop, recreate and fill the CRM tables at ``url`` with ``contacts`` synthetic contacts.

    Everything happens at or before ``as_of`` (naive UTC, or aware and converted). The same seed,
    contact count and as-of always give the same rows.
    """
    if not 0 < contacts <= MAX_CONTACTS:
        raise ValueError(f"contacts must be between 1 and {MAX_CONTACTS:,}, not {contacts:,}")
    started = time.perf_counter()
    as_of = utc_naive(as_of).replace(microsecond=0)
    now = int((as_of - _EPOCH).total_seconds())
    ref = _reference()
    engine = create_engine(url, poolclass=NullPool, hide_parameters=True)
    rows: Counter[str] = Counter()
    planted: Counter[str] = Counter()
    loader = _Loader.open(engine)
    failed = True
    try:
        loader.begin()
        loader.recreate_tables()
        for batch in _block_plan(contacts, chunk):
            tables: dict[str, list[tuple]] = {name: [] for name in CRM_TABLES}
            for block_no, start, size in batch:
                block = _Block(ref, seed, now, block_no, start, size)
                block.generate()
                planted.update(block.planted)
                for name, block_rows in block.rows.items():
                    tables[name].extend(block_rows)
            for name, table in CRM_TABLES.items():
                loader.insert(table, tables[name])
                rows[name] += len(tables[name])
            log.info("Seeded %d of %d contacts", batch[-1][1] + batch[-1][2], contacts)
        loader.create_indexes()
        loader.commit()
        failed = False
    finally:
        loader.close(failed)
        engine.dispose()
    return SeedReport(
        contacts=contacts,
        seed=seed,
        as_of=as_of,
        rows={name: rows[name] for name in CRM_TABLES},
        planted=dict(sorted(planted.items())),
        elapsed_seconds=time.perf_counter() - started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m lifecycle.devtools.seed --url URL --contacts N --as-of YYYY-MM-DD --seed S``."""
    parser = argparse.ArgumentParser(prog="lifecycle seed", description="Fill a CRM database with synthetic data.")
    parser.add_argument(
        "--url",
        default=os.environ.get("LIFECYCLE_CRM_URL"),
        help="SQLAlchemy URL of the CRM database (default: $LIFECYCLE_CRM_URL)",
    )
    parser.add_argument("--contacts", type=int, default=10_000, help="number of contacts (default: 10000)")
    parser.add_argument(
        "--as-of",
        type=datetime.fromisoformat,
        default=datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0),
        help="ISO date or time (UTC) the data ends at (default: today 00:00 UTC)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("--url is required when LIFECYCLE_CRM_URL is not set")
    report = seed_crm(args.url, args.contacts, args.as_of, seed=args.seed)
    print(json.dumps(report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
