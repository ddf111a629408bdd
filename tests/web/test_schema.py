"""schemathesis against the app's own OpenAPI document: generated requests to every
operation, a bounded number each. No answer is a 5xx, and every answer is one the document
describes (status, content type, headers, body)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi

from callbackpool.config import load_settings
from callbackpool.web import create_app

from .conftest import ADMIN_TOKEN, CONFIG

pytestmark = pytest.mark.slow

# Generated requests per operation (a few seconds in all); more for a deeper run:
# CALLBACKPOOL_TEST_SCHEMA_EXAMPLES=500 make unit PYTEST_ARGS=tests/web/test_schema.py
MAX_EXAMPLES = int(os.environ.get("CALLBACKPOOL_TEST_SCHEMA_EXAMPLES", "50"))

FOLDER = Path(tempfile.mkdtemp(prefix="callbackpool-schema-"))
atexit.register(shutil.rmtree, FOLDER, ignore_errors=True)  # made at collection, used or not
(FOLDER / "paygistix-forms.json").write_text(
    # schemathesis's ASGI client names the host "testserver".
    json.dumps(
        {**CONFIG, "databaseUrl": "sqlite:///:memory:", "allowedHosts": ["shop.test", "testserver"]}
    ),
    encoding="utf-8",
)
APP = create_app(load_settings(FOLDER / "paygistix-forms.json"))
schema = schemathesis.openapi.from_asgi("/api/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _stop_the_app() -> Iterator[None]:
    yield
    asgi.shutdown_lifespans()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_its_document_says(case: schemathesis.Case) -> None:
    # Every check but one: a body the schema admits may still be refused (422) for what a
    # schema cannot say: an amount that disagrees with its items, an unknown item code.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
