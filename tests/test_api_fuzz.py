"""Property-based fuzz of the plugin's OpenAPI schema with schemathesis, in process (ASGI).

Every documented operation gets generated requests, valid and not; none may answer 5xx
and every answer must match the schema it documents. The world is the API tests' (a real
MLflow registry with a champion, a publish); Airflow's JWT check is stood in for and its
REST API is scripted (``api_support.FakeAirflow``), so a 502 would be a real finding.
"""
from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis")

from api_support import FakeAirflow, served_world  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("FORESIGHT_FUZZ_EXAMPLES", "12"))
"""Per operation: the whole fuzz stays well under a minute on two cores."""


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    with served_world(tmp_path_factory.mktemp("api-fuzz"), "foresight_plugin_fuzz_test") as (_, plugin, mp):
        mp.setattr(plugin, "_airflow", FakeAirflow().patch(plugin))
        yield plugin.app


def test_no_operation_answers_5xx_or_off_its_schema(fuzz_app):
    # schemathesis' own pytest integration does not run under pytest 9: each operation's
    # strategy is driven by hypothesis directly, and every failure is reported at the end.
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12, [op.label for op in operations]
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 - collected, all operations are fuzzed
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
