# The image every Airflow service and the MLflow server of docker-compose.yaml run.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt /opt/foresight/requirements.txt
RUN pip install --no-cache-dir -r /opt/foresight/requirements.txt

COPY --chown=airflow:root pyproject.toml /opt/foresight/pyproject.toml
COPY --chown=airflow:root foresight_lib /opt/foresight/foresight_lib
COPY --chown=airflow:root foresight_dags /opt/foresight/foresight_dags
RUN pip install --no-cache-dir --no-deps /opt/foresight

COPY --chown=airflow:root include /opt/airflow/include
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
