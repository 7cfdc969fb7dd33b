"""Where metrics come from: generated demo data, files, Prometheus."""
