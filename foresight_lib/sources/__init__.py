"""Where metrics come from: generated demo data, files (local or ``s3://``), Prometheus; the run's window of them."""
