"""Log lines: JSON for machines, and never a card's expiry date (issue 6)."""

from __future__ import annotations

import io
import json
import logging
import logging.config

from callbackpool.logs import (
    MaskCardData,
    handler,
    mask_card_data,
    mask_tokens,
    uvicorn_log_config,
)

RETURN_QUERY = (
    "/api/v1/payments/callback/handler-1?hash=7ec0&MerchantID=demoMerchantWEB&Amount=10.00"
    "&PNRef=804322218&Result=0&Last4=0309&ExpDate=0329&CardType=VISA&AuthCode=01604D"
)


def test_card_parameters_are_masked_and_the_rest_is_kept() -> None:
    masked = mask_card_data(RETURN_QUERY + "&cardNumber=4111111111111111&CVV2=123")
    assert "0329" not in masked
    assert "4111111111111111" not in masked
    assert "=123" not in masked
    assert "ExpDate=****&CardType=VISA" in masked
    assert "Last4=0309" in masked
    assert mask_card_data("ExpDate%3D0329") == "ExpDate%3D****"
    assert mask_card_data("MyExpDate=1") == "MyExpDate=1"  # another parameter's name


def test_uvicorns_access_log_line_carries_no_expiry_date() -> None:
    # The access log's record, as uvicorn's httptools protocol logs a GET return.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("203.0.113.7:40000", "GET", RETURN_QUERY, "1.1", 303),
        None,
    )
    assert MaskCardData().filter(record)
    line = record.getMessage()
    assert "0329" not in line
    assert "ExpDate=****" in line
    assert "Last4=0309" in line


def test_the_uvicorn_configuration_masks_in_both_formats() -> None:
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate)
        for name in names
        for logger in [logging.getLogger(name)]
    }
    try:
        for log_format in ("text", "json"):
            logging.config.dictConfig(uvicorn_log_config(log_format))
            access = logging.getLogger("uvicorn.access")
            stream = io.StringIO()
            access.handlers[0].setStream(stream)  # type: ignore[attr-defined]
            access.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", RETURN_QUERY, "1.1", 303)
            out = stream.getvalue()
            assert "ExpDate=****" in out
            assert "0329" not in out
            if log_format == "json":
                assert json.loads(out)["logger"] == "uvicorn.access"
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


def test_json_lines_carry_the_structured_fields() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("callbackpool.test-json")
    logger.addHandler(handler("json", stream))
    logger.propagate = False
    try:
        logger.warning(
            "lease %d on %s", 7, "/cb/1", extra={"fields": {"event": "x", "lease": 7, "no": None}}
        )
    finally:
        logger.handlers.clear()
    line = json.loads(stream.getvalue())
    assert line["message"] == "lease 7 on /cb/1"
    assert (line["event"], line["lease"], line["level"]) == ("x", 7, "warning")
    assert "no" not in line
    assert line["time"].endswith("Z")


def test_the_access_log_shows_only_the_start_of_a_token() -> None:
    token = "AbCdEfGhIjKlMnOpQrStUvWxYz012345"
    paths = {
        f"/api/v1/payments/check-status/{token}": "/api/v1/payments/check-status/AbCdEfGh…",
        f"/api/v1/payments/cancel-token/{token}": "/api/v1/payments/cancel-token/AbCdEfGh…",
        f"/api/v1/payments/ticket/{token}": "/api/v1/payments/ticket/AbCdEfGh…",
        f"/api/v1/payments/cancel-ticket/{token}": "/api/v1/payments/cancel-ticket/AbCdEfGh…",
        f"/pay/{token}/cancel": "/pay/AbCdEfGh…/cancel",
        f"/admin/payments/{token}/close": "/admin/payments/AbCdEfGh…/close",
        f"/payment-success?ref=CB-3&receipt={token}": "/payment-success?ref=CB-3&receipt=AbCdEfGh…",
    }
    for path, expected in paths.items():
        record = logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("203.0.113.7:40000", "GET", path, "1.1", 200),
            None,
        )
        assert MaskCardData().filter(record)
        assert record.getMessage().endswith(f'"GET {expected} HTTP/1.1" 200'), path
    # What names no secret is kept as it is.
    for path in (
        "/api/v1/payments/pool-stats",
        "/api/v1/payments/pay_0123456789ab",
        "/static/x.js",
    ):
        assert mask_tokens(path) == path
