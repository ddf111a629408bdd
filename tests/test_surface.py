"""The package's public names: about twenty, and every error a public call raises is one of
the kinds exported, so a caller can catch it without importing internals."""

from __future__ import annotations

import inspect

import callbackpool
from callbackpool.domain import errors

KINDS = (
    callbackpool.InvalidRequest,
    callbackpool.NotFound,
    callbackpool.Conflict,
    callbackpool.PoolExhausted,
    callbackpool.TooManyLeases,
    callbackpool.StoreUnavailable,
    callbackpool.ConfigurationError,
)
# Raised only where no caller could act on the kind: the database refused (a bug or a
# broken schema), or the migration failed; both are CallbackPoolErrors still.
NO_KIND = {errors.CallbackPoolError, errors.StoreError, errors.MigrationError}


def test_the_surface_is_small_and_every_name_exists() -> None:
    assert len(callbackpool.__all__) <= 21
    for name in callbackpool.__all__:
        assert hasattr(callbackpool, name), name


def test_every_error_is_one_of_the_exported_kinds() -> None:
    for _, error in inspect.getmembers(errors, inspect.isclass):
        if not issubclass(error, errors.CallbackPoolError) or error in NO_KIND:
            continue
        assert issubclass(error, KINDS), f"{error.__name__} is none of the exported kinds"


def test_the_errors_of_creating_a_payment_are_exported() -> None:
    for error in (errors.InvalidPayment, errors.PoolExhausted, errors.TooManyLeases):
        assert issubclass(error, KINDS)
    assert issubclass(errors.UnknownPayment, callbackpool.NotFound)
    assert issubclass(errors.PaymentNotPending, callbackpool.Conflict)
