"""The nightly's publish step (MLflow runs, champions, run folder and ``latest/`` as one transaction)
and the Pushgateway push of what ``foresight_lib.serving.exposition`` renders."""
