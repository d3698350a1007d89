"""Point the ``crm_default`` Airflow connection at a test database."""

from __future__ import annotations

from lifecycle.devtools.local import connection_json


def crm_connection(crm_url: str) -> str:
    """The ``AIRFLOW_CONN_CRM_DEFAULT`` value for a SQLAlchemy URL."""
    if crm_url.startswith("sqlite:///"):
        return connection_json("sqlite", host=crm_url.removeprefix("sqlite:///"))
    return connection_json("postgres", extra={"sqlalchemy_url": crm_url})


def use_crm(monkeypatch, crm_url: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DEFAULT", crm_connection(crm_url))
