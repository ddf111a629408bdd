"""Log lines for people (``text``) and for machines (``json``: one object a line, with the
structured fields the pool attaches). Card data never appears: a return's ``ExpDate`` is
masked wherever a line could show it (uvicorn's access log prints a GET return's query), and
the access log shows no more of a payment token, ticket or receipt than the pool's lines do.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Query or form parameters whose values never reach a log line.
_CARD_PARAMETER = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(ExpDate|Exp_Date|CardNumber|Card_Number|CCNumber|CardNum|CVV2?|CVC2?)"
    r"(=|%3D)[^&\s\"']*"
)


# Where a request line names a payment token, a waiting-room ticket or a return's receipt
# (uvicorn's access log prints every path and query).
_TOKEN_IN_PATH = re.compile(
    r"(/(?:check-status|cancel-token|ticket|cancel-ticket|pay)/|/admin/payments/|[?&]receipt=)"
    r"([^/?&\s\"']{9,})"
)


def mask_tokens(text: str) -> str:
    """``/check-status/AbCdEfGh1234…`` → ``/check-status/AbCdEfGh…``: as much of a token as
    the pool's own lines show (``pool.core.short``), not enough to use it."""
    if "/" not in text and "receipt=" not in text:
        return text
    return _TOKEN_IN_PATH.sub(lambda m: f"{m.group(1)}{m.group(2)[:8]}…", text)


def mask_card_data(text: str) -> str:
    """``…&ExpDate=0329&…`` → ``…&ExpDate=****&…`` (likewise card numbers and codes)."""
    if "=" not in text and "%3" not in text:  # no parameter's value to mask (most lines)
        return text
    return _CARD_PARAMETER.sub(lambda m: f"{m.group(1)}{m.group(2)}****", text)


class MaskCardData(logging.Filter):
    """Masks card parameters in a record's message and arguments, whoever logs it, and (in
    uvicorn's access log) the tokens a request's path or query names."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            record.args = tuple(_tokens_masked(arg) for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = mask_card_data(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_masked(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _masked(value) for key, value in record.args.items()}
        return True


def _tokens_masked(value: Any) -> Any:
    return mask_tokens(value) if isinstance(value, str) else value


def _masked(value: Any) -> Any:
    return mask_card_data(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update({key: value for key, value in fields.items() if value is not None})
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def record_only_what_is_printed() -> None:
    """Log records stop gathering what neither format prints: the calling file and line
    (a walk up the stack), the thread and the process (the logging HOWTO's "Optimization")."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def handler(log_format: LogFormat, stream: Any = None) -> logging.Handler:
    """A stream handler (stderr by default) in ``log_format`` that masks card data."""
    made = logging.StreamHandler(stream)
    made.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    made.addFilter(MaskCardData())
    return made


def uvicorn_log_config(log_format: LogFormat) -> dict[str, Any]:
    """uvicorn's logging configuration: its lines (the access log's included) go through
    ``handler``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"()": handler, "log_format": log_format}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }
