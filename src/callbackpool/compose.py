"""The composition root: settings in, a ready pool out, and the gateways built from them."""

from __future__ import annotations

from .clock import Clock
from .config import Settings
from .domain.errors import ConfigurationError
from .domain.gateway import CatalogueItem
from .domain.money import to_minor
from .gateways.paygistix import HashRecipe, PaygistixGateway
from .gateways.sandbox import SANDBOX_FORM_PATH, SandboxGateway
from .gateways.status_query import HttpStatusQuery
from .pool import CallbackPool, StatusHook
from .store import open_store
from .store.port import Store


def build_pool(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    on_status_change: StatusHook | None = None,
    migrate: bool = True,
    sync_slots: bool = True,
) -> CallbackPool:
    """Open the store the settings name, bring its schema up to date, load the paths.

    ``sync_slots=False`` leaves the pool's slots as the database has them: for a tool that
    only looks or tidies up, and must not deactivate the paths a running service leases
    because it was handed another configuration file.
    """
    store = store or open_store(settings.database_url, clock=clock)
    if migrate:
        store.migrate()
    pool = CallbackPool(
        store,
        gateway(settings),
        settings,
        on_status_change=on_status_change,
        status_query=status_query_client(settings),
    )
    if sync_slots:
        pool.sync_slots()
    return pool


def catalogue(settings: Settings) -> tuple[CatalogueItem, ...]:
    """The form's line items, priced in minor units of the settings' currency."""
    items = []
    for index, item in enumerate(settings.form.items):
        price = to_minor(item.price, settings.currency)
        if price is None:
            raise ConfigurationError(
                f"form.items[{index}].price", f"{item.price} is not a {settings.currency} amount"
            )
        items.append(CatalogueItem(code=item.code, description=item.description, price=price))
    return tuple(items)


def form_action_url(settings: Settings) -> str:
    """Where the browser posts the hosted form: the sandbox's page when it is on."""
    if settings.sandbox.enabled:
        return settings.base_url.rstrip("/") + SANDBOX_FORM_PATH
    return settings.form_action_url


def gateway(settings: Settings) -> PaygistixGateway:
    recipe = None
    # A recipe whose secret has not been given verifies nothing (production refuses it).
    if settings.callback_hash is not None and settings.callback_hash.secret is not None:
        recipe = HashRecipe(
            secret=settings.callback_hash.secret.get_secret_value(),
            fields=tuple(settings.callback_hash.fields),
            algorithm=settings.callback_hash.algorithm,
            separator=settings.callback_hash.separator,
        )
    return PaygistixGateway(
        merchant_id=settings.merchant_id,
        form_id=settings.form.form_id,
        form_hash=settings.form.form_hash,
        currency=settings.currency,
        catalogue=catalogue(settings),
        return_hash=recipe,
        token_field=settings.status_query.token_field if settings.status_query else None,
        action_url=form_action_url(settings),
    )


def sandbox_gateway(settings: Settings) -> SandboxGateway:
    """The sandbox standing in for the settings' hosted form."""
    return SandboxGateway(
        merchant_id=settings.merchant_id or "",
        form_id=settings.form.form_id,
        form_hash=settings.form.form_hash,
        currency=settings.currency,
        catalogue=catalogue(settings),
        signer=HashRecipe(
            secret=settings.sandbox.secret.get_secret_value(),
            fields=tuple(settings.sandbox.hash_fields),
            algorithm=settings.sandbox.hash_algorithm,
            separator=settings.sandbox.hash_separator,
        ),
    )


def status_query_client(settings: Settings) -> HttpStatusQuery | None:
    """The gateway's status query, where one is configured."""
    query = settings.status_query
    if query is None:
        return None
    return HttpStatusQuery(
        url=query.url,
        api_key=query.api_key.get_secret_value() if query.api_key else None,
        token_field=query.token_field,
        currency=settings.currency,
        timeout=query.timeout_seconds,
    )
