"""What the DAG files in ``dags/`` share; the only Foresight code besides them that imports Airflow."""
