"""Configuration: the seed's ``paygistix-forms.json`` as it is, new keys beside it, and a
``CALLBACKPOOL_*`` environment variable for every key (nested keys with ``__``:
``CALLBACKPOOL_FORM__FORM_HASH``). Precedence: explicit overrides (CLI options), then the
environment, then the file, then the defaults.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .domain.errors import ConfigurationError
from .domain.money import is_known_currency
from .gateways.paygistix import FORM_ACTION_URL, HASH_ALGORITHMS
from .gateways.sandbox import DEFAULT_HASH_FIELDS
from .pool.policy import AbsoluteUrl, IPNetwork, Networks, PoolPolicy, networks

log = logging.getLogger("callbackpool.config")

ENV_PREFIX = "CALLBACKPOOL_"
MIN_ADMIN_TOKEN_CHARS = 16
MIN_MERCHANT_KEY_CHARS = 24
# Variables with the prefix that are not configuration keys.
_NOT_SETTINGS = (
    "CALLBACKPOOL_CONFIG",
    "CALLBACKPOOL_TEST_",
    "CALLBACKPOOL_HOST",
    "CALLBACKPOOL_PORT",
    "CALLBACKPOOL_LOG_FORMAT",
    "CALLBACKPOOL_OPERATOR",
)
# The Host headers answered besides baseUrl's when allowedHosts is not set.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# The keys that hold a list of text, which may be written "a, b" (in the environment, say).
_TEXT_LISTS = (
    "callback_paths",
    "reserve_paths",
    "return_sources",
    "trusted_proxies",
    "shop_origins",
    "merchant_api_keys",
    "allowed_hosts",
)

_file_data: ContextVar[dict[str, Any] | None] = ContextVar("callbackpool_file_data", default=None)


def _known_algorithm(name: str) -> str:
    if name not in HASH_ALGORITHMS:
        raise ValueError(f"must be one of {', '.join(HASH_ALGORITHMS)}")
    return name


HashAlgorithm = Annotated[str, AfterValidator(_known_algorithm)]


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
    """The recipe the gateway signs its returns' ``hash`` with (see PAYGISTIX.md). The
    secret may be left to the environment (``CALLBACKPOOL_CALLBACK_HASH__SECRET``): a recipe
    without one verifies nothing, which production refuses (``Settings.service_warnings``)."""

    secret: SecretStr | None = None
    fields: list[str] = Field(min_length=1)
    algorithm: HashAlgorithm = "hmac-md5"
    separator: str = "|"


class StatusQuerySettings(_Section):
    """A gateway's server-to-server status query, in the sandbox's protocol
    (gateways/status_query.py): off unless configured."""

    url: AbsoluteUrl
    api_key: SecretStr | None = None
    # The custom field of the hosted form that carries the payment's token (posted only
    # when a status query is configured: the gateway keeps it, the return does not echo it).
    token_field: str = Field(default="custom1", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
    timeout_seconds: float = Field(default=5, gt=0, le=30)


class SandboxSettings(_Section):
    """The sandbox gateway (gateways/sandbox.py): a stand-in for the hosted form, for demos
    and tests. When on, the form action URL handed out points at it."""

    enabled: bool = False
    # The sandbox signs its returns' ``hash`` with this recipe; give ``callbackHash`` the
    # same secret and fields so verification runs end to end.
    secret: SecretStr = SecretStr("sandbox-secret")
    hash_fields: list[str] = Field(default=list(DEFAULT_HASH_FIELDS), min_length=1)
    hash_algorithm: HashAlgorithm = "hmac-md5"
    hash_separator: str = "|"


class Settings(BaseSettings, PoolPolicy):
    """Every setting of callbackpool: the pool's (``PoolPolicy``, handed to the pool as they
    are) and the service's. Build it with ``load_settings``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    # The seed's keys (its callbackPaths, lockTimeoutMinutes and baseUrl are the pool's).
    form: FormSettings
    # The as-built extras.
    merchant_id: str | None = None
    form_action_url: AbsoluteUrl = FORM_ACTION_URL
    # New keys.
    sweep_interval_seconds: float = Field(default=60, gt=0)
    currency: str = "USD"
    callback_hash: CallbackHashSettings | None = None
    database_url: str = "sqlite:///callbackpool.db"
    admin_token: SecretStr | None = None
    env: Literal["development", "production"] = "development"
    # Production refuses unverified returns unless this says so (docs/security.md).
    allow_unverified_returns: bool = False
    sandbox: SandboxSettings = SandboxSettings()
    status_query: StatusQuerySettings | None = None
    # Proxies, the rate limit, Swagger UI (None: in development only): docs/security.md.
    trusted_proxies: Networks = ()
    forwarded_header: str = Field(default="X-Forwarded-For", pattern=r"^[A-Za-z0-9-]+$")
    create_token_rate_per_minute: int = Field(default=30, ge=0)
    api_docs: bool | None = None
    # The Host headers answered (empty: baseUrl's host and loopback's; "*": any).
    allowed_hosts: tuple[str, ...] = ()
    # Operations (docs/operations.md).
    metrics_require_token: bool = True
    dashboard_refresh_seconds: int = Field(default=10, ge=2, le=3600)
    admin_session_hours: float = Field(default=12, gt=0, le=24 * 30)
    # The shop's server and its customers' hosted page (docs/integrating.md).
    merchant_api_keys: tuple[SecretStr, ...] = ()
    shop_name: str = Field(default="Shop", min_length=1, max_length=80)

    @field_validator(*_TEXT_LISTS, mode="before")
    @classmethod
    def _list_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("merchant_api_keys")
    @classmethod
    def _long_keys(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(len(key.get_secret_value()) < MIN_MERCHANT_KEY_CHARS for key in keys):
            raise ValueError(f"each key must be at least {MIN_MERCHANT_KEY_CHARS} characters")
        return keys

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
        file_settings = InitSettingsSource(settings_cls, _file_data.get() or {})
        return (init_settings, _EnvSource(settings_cls), file_settings)

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
            self._production_verifies_returns()
        warnings = []
        if not self.merchant_id:
            warnings.append("no merchantId is configured: every gateway return will be rejected")
        if not self.returns_verified:
            warnings.append(
                "gateway returns are UNVERIFIED: neither a callbackHash recipe (with its "
                "secret) nor a returnSources allowlist is configured, so anyone who finds a "
                "leased callback path, its amount and a fresh PNRef can mark a payment paid "
                "(docs/security.md, 'Configuring verification')"
            )
        elif self.callback_hash is None and not self.trusted_proxies:
            warnings.append(
                "returns are checked by returnSources alone, against the connecting address: "
                "behind a reverse proxy that address is the proxy's, so list the proxy in "
                "trustedProxies (docs/security.md, 'The source allowlist')"
            )
        if self.admin_token is None:
            warnings.append("no adminToken is configured: the operator API answers 401 to all")
        return warnings

    def _production_verifies_returns(self) -> None:
        """Production checks every return, or has been told on purpose that it need not."""
        if self.callback_hash is not None and self.callback_hash.secret is None:
            # Meant to verify, but the secret did not arrive (the environment not passed).
            raise ConfigurationError(
                "callbackHash.secret",
                "is required in production when callbackHash is configured "
                "(CALLBACKPOOL_CALLBACK_HASH__SECRET)",
            )
        if not self.returns_verified and not self.allow_unverified_returns:
            raise ConfigurationError(
                "callbackHash",
                "is required in production (its secret in CALLBACKPOOL_CALLBACK_HASH__SECRET), "
                "or returnSources: without either anyone can mark a payment paid; "
                "allowUnverifiedReturns: true runs without on purpose "
                "(docs/security.md, 'Configuring verification')",
            )

    @property
    def returns_verified(self) -> bool:
        """Whether a return must prove it comes from the gateway: a hash recipe with its
        secret, or an allowlist of the gateway's addresses."""
        has_recipe = self.callback_hash is not None and self.callback_hash.secret is not None
        return has_recipe or bool(self.return_sources)

    def api_docs_enabled(self) -> bool:
        return self.api_docs if self.api_docs is not None else self.env == "development"

    @property
    def allowed_host_names(self) -> tuple[str, ...]:
        """The host names a request's Host header may name (lower case, no port)."""
        if self.allowed_hosts:
            return tuple(host.strip().lower() for host in self.allowed_hosts)
        own = urlsplit(self.base_url).hostname or ""
        return tuple(dict.fromkeys((own.lower(), *LOOPBACK_HOSTS)))

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return networks(self.trusted_proxies)


class _EnvSource(EnvSettingsSource):
    """The environment, where a list of text may be JSON or comma-separated (as
    ``CALLBACKPOOL_CALLBACK_PATHS="/cb/a, /cb/b"``): ``_list_from_text`` reads both."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        if field_name in _TEXT_LISTS:
            return value
        return super().decode_complex_value(field_name, field, value)


def load_settings(
    path: str | Path | None = None, *, overrides: dict[str, Any] | None = None
) -> Settings:
    """Read the configuration file (if any), the environment and ``overrides``.

    Raises ConfigurationError naming the offending key. Unknown keys in the file or
    ``CALLBACKPOOL_*`` variables are logged as a warning naming them.
    """
    raw = read_config_file(Path(path)) if path is not None else {}
    unknown: list[str] = []
    file_data = _snake_keys(raw, Settings, "", unknown)
    for key in unknown + _unknown_variables():
        log.warning("unknown configuration key %r ignored (a typo?)", key)
    token = _file_data.set(file_data)
    try:
        return Settings(**{k: v for k, v in (overrides or {}).items() if v is not None})
    except ValidationError as exc:
        error = min(exc.errors(), key=lambda e: _reading_order(str(e["loc"][0]), list(file_data)))
        key = ".".join(
            to_camel(str(part)) if isinstance(part, str) else f"[{part}]" for part in error["loc"]
        )
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        raise ConfigurationError(key.replace(".[", "["), message) from None
    finally:
        _file_data.reset(token)


def _reading_order(key: str, in_file: list[str]) -> tuple[int, bool]:
    """The first problem as the file is read comes first; then the keys the file leaves out,
    the seed's ``form`` before the pool's keys (as they are documented)."""
    return (in_file.index(key) if key in in_file else len(in_file), key in PoolPolicy.model_fields)


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


def _snake_keys(
    raw: dict[str, Any], model: type[BaseModel], prefix: str, unknown: list[str]
) -> dict[str, Any]:
    """The file's ``raw`` values under ``model``'s snake_case names; the keys that configure
    nothing are added to ``unknown`` (and left out)."""
    data = {}
    for key, value in raw.items():
        name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
        field = model.model_fields.get(name)
        if field is None:
            unknown.append(prefix + key)
            continue
        section = _section_of(field)
        if section is not None and isinstance(value, dict):
            value = _snake_keys(value, section, f"{prefix}{key}.", unknown)
        elif section is not None and isinstance(value, list):
            value = [
                _snake_keys(element, section, f"{prefix}{key}[{index}].", unknown)
                if isinstance(element, dict)
                else element
                for index, element in enumerate(value)
            ]
        data[name] = value
    return data


def _section_of(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, _Section):
            return candidate
    return None


def _unknown_variables() -> list[str]:
    """The ``CALLBACKPOOL_*`` variables that configure nothing."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = []
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(_NOT_SETTINGS):
            continue
        if upper not in known and upper.split("__")[0] not in known:
            unknown.append(name)
    return unknown
