"""Configuration: the seed's ``paygistix-forms.json`` as it is, new keys beside it, and a
``CALLBACKPOOL_*`` environment variable for every key (nested keys with ``__``:
``CALLBACKPOOL_FORM__FORM_HASH``). Precedence: explicit overrides (CLI options), then the
environment, then the file, then the defaults.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from contextvars import ContextVar
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .domain.errors import ConfigurationError
from .domain.money import is_known_currency
from .gateways.paygistix import FORM_ACTION_URL, HASH_ALGORITHMS
from .gateways.sandbox import DEFAULT_HASH_FIELDS, SANDBOX_FORM_PATH
from .pool import IPNetwork, PoolPolicy

log = logging.getLogger("callbackpool.config")

ENV_PREFIX = "CALLBACKPOOL_"
MIN_ADMIN_TOKEN_CHARS = 16
# Variables with the prefix that are not configuration keys.
_NOT_SETTINGS = (
    "CALLBACKPOOL_CONFIG",
    "CALLBACKPOOL_TEST_",
    "CALLBACKPOOL_HOST",
    "CALLBACKPOOL_PORT",
    "CALLBACKPOOL_LOG_FORMAT",
    "CALLBACKPOOL_OPERATOR",
)

_file_data: ContextVar[dict[str, Any] | None] = ContextVar("callbackpool_file_data", default=None)


class _Section(BaseModel):
    # Unknown keys are warned about by load_settings (a typo must not pass silently).
    model_config = ConfigDict(extra="ignore", frozen=True)


class CatalogueItemSettings(_Section):
    code: str = Field(min_length=1, max_length=40)
    description: str = ""
    price: Decimal = Field(gt=0)


class FormSettings(_Section):
    form_id: str = Field(min_length=1)
    form_hash: str = Field(min_length=1)
    items: list[CatalogueItemSettings] = []

    @field_validator("items")
    @classmethod
    def _unique_codes(cls, items: list[CatalogueItemSettings]) -> list[CatalogueItemSettings]:
        codes = [item.code for item in items]
        duplicates = sorted({code for code in codes if codes.count(code) > 1})
        if duplicates:
            raise ValueError(f"duplicate item codes: {', '.join(duplicates)}")
        return items


class CallbackHashSettings(_Section):
    """The recipe the gateway signs its returns' ``hash`` with (see PAYGISTIX.md)."""

    secret: SecretStr
    fields: list[str] = Field(min_length=1)
    algorithm: str = "hmac-md5"
    separator: str = "|"

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in HASH_ALGORITHMS:
            raise ValueError(f"must be one of {', '.join(HASH_ALGORITHMS)}")
        return value


class StatusQuerySettings(_Section):
    """A gateway's server-to-server status query, in the sandbox's protocol
    (gateways/status_query.py): off unless configured."""

    url: str
    api_key: SecretStr | None = None
    # The custom field of the hosted form that carries the payment's token (posted only
    # when a status query is configured: the gateway keeps it, the return does not echo it).
    token_field: str = Field(default="custom1", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
    timeout_seconds: float = Field(default=5, gt=0, le=30)

    @field_validator("url")
    @classmethod
    def _absolute_url(cls, url: str) -> str:
        return _absolute(url)


class SandboxSettings(_Section):
    """The sandbox gateway (gateways/sandbox.py): a stand-in for the hosted form, for demos
    and tests. When on, the form action URL handed out points at it."""

    enabled: bool = False
    # The sandbox signs its returns' ``hash`` with this recipe; give ``callbackHash`` the
    # same secret and fields so verification runs end to end.
    secret: SecretStr = SecretStr("sandbox-secret")
    hash_fields: list[str] = Field(default=list(DEFAULT_HASH_FIELDS), min_length=1)
    hash_algorithm: str = "hmac-md5"
    hash_separator: str = "|"

    @field_validator("hash_algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in HASH_ALGORITHMS:
            raise ValueError(f"must be one of {', '.join(HASH_ALGORITHMS)}")
        return value


class Settings(BaseSettings):
    """Every setting of callbackpool. Build it with ``load_settings``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    # The seed's keys.
    form: FormSettings
    callback_paths: Annotated[list[str], NoDecode]
    lock_timeout_minutes: float = Field(default=10, gt=0)
    base_url: str
    # The as-built extras.
    merchant_id: str | None = None
    form_action_url: str = FORM_ACTION_URL
    # New keys.
    late_callback_window_minutes: float = Field(default=60, gt=0)
    reuse_same_amount_tainted: bool = True
    sweep_interval_seconds: float = Field(default=60, gt=0)
    currency: str = "USD"
    max_amount: int | None = Field(default=None, gt=0)
    callback_hash: CallbackHashSettings | None = None
    success_url: str = "/payment-success"
    error_url: str = "/payment-error"
    database_url: str = "sqlite:///callbackpool.db"
    admin_token: SecretStr | None = None
    env: Literal["development", "production"] = "development"
    # Capacity (docs/capacity.md).
    heartbeat_timeout_seconds: float = Field(default=60, ge=0)
    ticket_timeout_seconds: float = Field(default=10, gt=0)
    ticket_poll_seconds: int = Field(default=2, ge=1)
    max_waiting_tickets: int = Field(default=1000, ge=0)
    max_priority: int = Field(default=9, ge=0)
    reserved_slots_for_priority: int = Field(default=0, ge=0)
    priority_threshold: int = Field(default=1, ge=1)
    reserve_paths: Annotated[list[str], NoDecode] = []
    capacity_window_minutes: float = Field(default=15, gt=0)
    capacity_target: float = Field(default=0.01, gt=0, lt=1)
    sandbox: SandboxSettings = SandboxSettings()
    status_query: StatusQuerySettings | None = None
    # Where gateway returns may come from (addresses or networks; empty: anywhere). A return
    # from elsewhere is stored and rejected. See docs/security.md.
    return_sources: Annotated[list[str], NoDecode] = []
    # The reverse proxies in front of the service (addresses or networks): only a request
    # from one of them has its client address taken from ``forwardedHeader``.
    trusted_proxies: Annotated[list[str], NoDecode] = []
    forwarded_header: str = Field(default="X-Forwarded-For", pattern=r"^[A-Za-z0-9-]+$")
    # Pool-exhaustion defence (0 turns each off): create-token requests a client address may
    # make a minute (counted by each instance of the service), and live leases (and places
    # in the waiting room) a customer (``customerData.email``) may hold at once (counted in
    # the database, across instances).
    create_token_rate_per_minute: int = Field(default=30, ge=0)
    max_live_leases_per_customer: int = Field(default=3, ge=0)
    # Swagger UI at /api/docs (None: in development only). See docs/security.md.
    api_docs: bool | None = None
    # Operations (docs/operations.md).
    slot_health_expiries_to_sideline: int = Field(default=5, ge=0)
    metrics_require_token: bool = True
    dashboard_refresh_seconds: int = Field(default=10, ge=2, le=3600)
    admin_session_hours: float = Field(default=12, gt=0, le=24 * 30)

    @field_validator(
        "callback_paths", "reserve_paths", "return_sources", "trusted_proxies", mode="before"
    )
    @classmethod
    def _list_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("return_sources", "trusted_proxies")
    @classmethod
    def _valid_networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an IP address or network") from None
        return networks

    @field_validator("callback_paths")
    @classmethod
    def _valid_paths(cls, paths: list[str]) -> list[str]:
        if not paths:
            raise ValueError("at least one callback path is needed")
        return _checked_paths(paths)

    @field_validator("reserve_paths")
    @classmethod
    def _valid_reserve_paths(cls, paths: list[str], info: ValidationInfo) -> list[str]:
        _checked_paths(paths)
        both = sorted(set(paths) & set(info.data.get("callback_paths") or ()))
        if both:
            raise ValueError(f"also in callbackPaths: {', '.join(both)}")
        return paths

    @field_validator("priority_threshold")
    @classmethod
    def _threshold_within_priorities(cls, threshold: int, info: ValidationInfo) -> int:
        highest = info.data.get("max_priority")
        kept = info.data.get("reserved_slots_for_priority")
        if kept and highest is not None and threshold > highest:
            raise ValueError(f"must not exceed maxPriority ({highest})")
        return threshold

    @field_validator("reserved_slots_for_priority")
    @classmethod
    def _some_slots_left_for_everyone(cls, reserved: int, info: ValidationInfo) -> int:
        paths = info.data.get("callback_paths")
        if paths is not None and reserved >= len(paths):
            raise ValueError(f"must leave some of the {len(paths)} callback paths to everyone")
        return reserved

    @field_validator("base_url", "form_action_url")
    @classmethod
    def _absolute_url(cls, url: str) -> str:
        return _absolute(url)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, code: str) -> str:
        if not is_known_currency(code):
            raise ValueError(f"unknown currency {code!r}")
        return code

    @field_validator("sandbox")
    @classmethod
    def _no_sandbox_in_production(
        cls, sandbox: SandboxSettings, info: ValidationInfo
    ) -> SandboxSettings:
        # The sandbox mints signed returns: next to real money it would mint payments.
        if sandbox.enabled and info.data.get("env") == "production":
            raise ValueError("the sandbox must not be enabled in production")
        return sandbox

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    # --- what a running service must have --------------------------------------------------

    def service_warnings(self) -> list[str]:
        """Check the settings before a service starts on them: ConfigurationError for what
        production must not run without; otherwise the warnings to log at start-up."""
        if self.env == "production":
            if self.admin_token is None:
                raise ConfigurationError(
                    "adminToken", "is required in production (or CALLBACKPOOL_ADMIN_TOKEN)"
                )
            if len(self.admin_token.get_secret_value()) < MIN_ADMIN_TOKEN_CHARS:
                raise ConfigurationError(
                    "adminToken",
                    f"must be at least {MIN_ADMIN_TOKEN_CHARS} characters in production",
                )
            if not self.merchant_id:
                raise ConfigurationError(
                    "merchantId", "is required in production: no return can be verified without"
                )
        warnings = []
        if not self.merchant_id:
            warnings.append("no merchantId is configured: every gateway return will be rejected")
        if self.callback_hash is None and not self.return_sources:
            warnings.append(
                "gateway returns are UNVERIFIED: neither a callbackHash recipe nor a "
                "returnSources allowlist is configured, so anyone who finds a leased callback "
                "path, its amount and a fresh PNRef can mark a payment paid "
                "(docs/security.md, 'Configuring verification')"
            )
        if self.admin_token is None:
            warnings.append("no adminToken is configured: the operator API answers 401 to all")
        return warnings

    def api_docs_enabled(self) -> bool:
        return self.api_docs if self.api_docs is not None else self.env == "development"

    # --- what the rest of the program is built from ---------------------------------------

    def policy(self) -> PoolPolicy:
        return PoolPolicy(
            base_url=self.base_url,
            callback_paths=tuple(self.callback_paths),
            lock_timeout=timedelta(minutes=self.lock_timeout_minutes),
            late_callback_window=timedelta(minutes=self.late_callback_window_minutes),
            reuse_same_amount_tainted=self.reuse_same_amount_tainted,
            max_amount=self.max_amount,
            success_url=self.success_url,
            error_url=self.error_url,
            return_sources=networks(self.return_sources),
            max_live_leases_per_customer=self.max_live_leases_per_customer,
            heartbeat_timeout=timedelta(seconds=self.heartbeat_timeout_seconds),
            ticket_timeout=timedelta(seconds=self.ticket_timeout_seconds),
            ticket_poll=timedelta(seconds=self.ticket_poll_seconds),
            max_waiting=self.max_waiting_tickets,
            max_priority=self.max_priority,
            reserved_slots_for_priority=self.reserved_slots_for_priority,
            priority_threshold=self.priority_threshold,
            reserve_paths=tuple(self.reserve_paths),
            capacity_window=timedelta(minutes=self.capacity_window_minutes),
            capacity_target=self.capacity_target,
            slot_health_expiries_to_sideline=self.slot_health_expiries_to_sideline,
        )

    def effective_form_action_url(self) -> str:
        """Where the browser posts the hosted form: the sandbox's page when it is on."""
        if self.sandbox.enabled:
            return self.base_url.rstrip("/") + SANDBOX_FORM_PATH
        return self.form_action_url


def networks(texts: list[str]) -> tuple[IPNetwork, ...]:
    """``["203.0.113.7", "10.0.0.0/8"]`` as networks (an address is a network of one)."""
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def _absolute(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an absolute http(s) URL")
    return url


def _checked_paths(paths: list[str]) -> list[str]:
    for path in paths:
        if not path.startswith("/"):
            raise ValueError(f"{path!r} does not start with '/'")
        if any(c.isspace() or c in "?#" for c in path):
            raise ValueError(f"{path!r} must not contain spaces, '?' or '#'")
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise ValueError(f"duplicate paths: {', '.join(duplicates)}")
    return paths


class _FileSource(PydanticBaseSettingsSource):
    """The configuration file's values (already turned to snake_case keys)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_file_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get() or {})


def load_settings(
    path: str | Path | None = None, *, overrides: dict[str, Any] | None = None
) -> Settings:
    """Read the configuration file (if any), the environment and ``overrides``.

    Raises ConfigurationError naming the offending key. Unknown keys in the file or
    ``CALLBACKPOOL_*`` variables are logged as a warning naming them (see ``unknown_keys``).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_config_file(Path(path))
    for key in unknown_keys(raw):
        log.warning("unknown configuration key %r ignored (a typo?)", key)
    file_data = _snake_keys(raw)
    token = _file_data.set(file_data)
    try:
        return Settings(**{k: v for k, v in (overrides or {}).items() if v is not None})
    except ValidationError as exc:
        error = min(exc.errors(), key=lambda e: _reading_order(str(e["loc"][0]), list(file_data)))
        key = ".".join(
            _camel(str(part)) if isinstance(part, str) else f"[{part}]" for part in error["loc"]
        )
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        raise ConfigurationError(key.replace(".[", "["), message) from None
    finally:
        _file_data.reset(token)


def _reading_order(key: str, in_file: list[str]) -> int:
    """The first problem as the file is read comes first; then the keys the file leaves out."""
    return in_file.index(key) if key in in_file else len(in_file)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError("config", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            "config", f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigurationError("config", f"{path} must hold a JSON object")
    return data


def unknown_keys(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    """Keys of the file and ``CALLBACKPOOL_*`` variables that configure nothing."""
    unknown = _unknown_in(raw, Settings, "")
    known_env = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name in environ if environ is not None else os.environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(_NOT_SETTINGS):
            continue
        if upper not in known_env and upper.split("__")[0] not in known_env:
            unknown.append(name)
    return unknown


def _unknown_in(raw: dict[str, Any], model: type[BaseModel], prefix: str) -> list[str]:
    unknown = []
    for key, value in raw.items():
        name = _snake(key)
        field = model.model_fields.get(name)
        if field is None:
            unknown.append(prefix + key)
            continue
        nested = _section_of(field)
        if nested is not None and isinstance(value, dict):
            unknown += _unknown_in(value, nested, f"{prefix}{key}.")
        elif nested is not None and isinstance(value, list):
            for index, element in enumerate(value):
                if isinstance(element, dict):
                    unknown += _unknown_in(element, nested, f"{prefix}{key}[{index}].")
    return unknown


def _section_of(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, _Section):
            return candidate
    return None


def _snake_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_snake(k): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)
