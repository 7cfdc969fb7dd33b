"""What people and Prometheus read over HTTP: the plugin's pages and endpoints, without Airflow.

- ``exposition``: the latest published forecasts and recommendations as Prometheus metrics;
- ``json_views``: the published files as the plugin's JSON endpoints serve them;
- ``dashboard``: the plugin dashboard's data and page (``dashboard_static/``);
- ``operations``: the operations API (predict, models and activation, training jobs, telemetry).
"""
