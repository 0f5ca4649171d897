"""The ingest flow (extract → publish → notify) and the Airflow DAGs that run it."""
