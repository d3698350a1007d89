-- Runs once, when the postgres service initialises an empty data volume: the CRM database lives
-- beside Airflow's metadata database (`airflow`). airflow-init creates the lifecycle_* tables in it.
CREATE DATABASE crm;
