"""Talking to Airflow from outside it: the DAG ids, the one REST client, a free port for a server on the side.

Plain HTTP (httpx); nothing here imports Airflow.
"""
