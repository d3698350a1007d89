# The Lifecycle image used by docker-compose.yml: Airflow on Python 3.11 with the project's pinned
# requirements and the lifecycle package installed in editable mode from /opt/airflow/plugins.
# The compose file bind-mounts dags/, plugins/, include/ and config/ over the copies baked in
# here, so code and program changes need a restart, not a rebuild.
# tests/unit/deploy/test_compose.py checks that this tag matches the apache-airflow pin in requirements.txt.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt

COPY --chown=airflow:0 pyproject.toml /opt/airflow/pyproject.toml
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 include /opt/airflow/include
COPY --chown=airflow:0 config /opt/airflow/config
RUN pip install --no-cache-dir --no-deps -e /opt/airflow
