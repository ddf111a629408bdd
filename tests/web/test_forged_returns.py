"""Forged and replayed gateway returns (issue 5), through the HTTP routes with the hash
recipe configured: whatever the forgery, no payment changes, the return is stored (exactly as
sent) with its outcome, and the browser is sent to the error page.

The forger here is the strongest there is: where a forgery needs a valid ``hash`` to reach
the check under test, it is signed with the real secret.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from callbackpool.domain.model import CallbackOutcome
from callbackpool.gateways.paygistix import HashRecipe
from callbackpool.gateways.sandbox import DEFAULT_HASH_FIELDS, RETURN_FIELDS

from .conftest import SANDBOX_SECRET, ClientFactory, sandbox_keys, services_of

pytestmark = pytest.mark.anyio

API = "/api/v1/payments"
FORM = "application/x-www-form-urlencoded"
RECIPE = HashRecipe(secret=SANDBOX_SECRET, fields=DEFAULT_HASH_FIELDS)
Params = list[tuple[str, str]]

SQL = "1' OR '1'='1'; DROP TABLE payments; --"
HTML = '<script>alert("x")</script><img src=x onerror=alert(1)>'
NON_ASCII = "ünïcödé ☃ 支付"
LONG = "9" * 10_000


def genuine(amount: str = "10.00", pn_ref: str = "804322218", result: str = "0") -> Params:
    values = {
        "MerchantID": "demoMerchantWEB",
        "OrderID": "55016041050",
        "Amount": amount,
        "PNRef": pn_ref,
        "Result": result,
        "TxnType": "SALE",
        "Last4": "0309",
        "ExpDate": "0329",
        "CardType": "VISA",
        "AuthCode": "01604D" if result == "0" else "",
    }
    values["hash"] = RECIPE.sign(values)
    return [(name, values[name]) for name in RETURN_FIELDS]


def signed(params: Params) -> Params:
    """``params`` with a hash the real secret makes (first occurrences signed)."""
    values: dict[str, str] = {}
    for name, value in params:
        values.setdefault(name, value)
    return [(k, RECIPE.sign(values) if k == "hash" else v) for k, v in params]


def replaced(name: str, value: str) -> Params:
    """A genuine return with one value replaced, and signed again (but for the hash itself)."""
    params = [(k, value if k == name else v) for k, v in genuine()]
    return params if name == "hash" else signed(params)


FORGERIES: dict[str, Params] = {
    "wrong MerchantID": replaced("MerchantID", "evilMerchant"),
    "wrong Amount": replaced("Amount", "99.99"),
    "wrong Amount, hash kept": [(k, "99.99" if k == "Amount" else v) for k, v in genuine()],
    "bad hash": [(k, "0" * 32 if k == "hash" else v) for k, v in genuine()],
    "no hash": [(k, v) for k, v in genuine() if k != "hash"],
    "Result flipped, hash kept": [
        (k, "0" if k == "Result" else v) for k, v in genuine(result="12")
    ],
    "nothing at all": [],
    **{f"{name} missing": [(k, v) for k, v in genuine() if k != name] for name in RETURN_FIELDS},
    **{f"{name} repeated": [*genuine(), (name, value)] for name, value in genuine()},
    **{f"{name} twice, differing": [*genuine(), (name, "1")] for name, _ in genuine()},
    **{f"SQL in {name}": replaced(name, SQL) for name in RETURN_FIELDS},
    **{f"HTML in {name}": replaced(name, HTML) for name in RETURN_FIELDS},
    **{f"non-ASCII in {name}": replaced(name, NON_ASCII) for name in RETURN_FIELDS},
    **{f"10,000 characters in {name}": replaced(name, LONG) for name in RETURN_FIELDS},
}


async def pending(client: httpx.AsyncClient) -> dict[str, Any]:
    created: dict[str, Any] = (
        await client.post(f"{API}/create-token", json={"amount": 1000})
    ).json()
    return created


async def state(client: httpx.AsyncClient, token: str) -> tuple[Any, ...]:
    status = (await client.get(f"{API}/check-status/{token}")).json()
    pool = services_of(client).pool.status()
    slots = [(s.path, s.lease.token if s.lease else None, s.taints) for s in pool.slots]
    return status, slots


async def post_form(client: httpx.AsyncClient, path: str, params: Params) -> httpx.Response:
    """The return posted as a form, repeats and order kept."""
    body = urlencode(params).encode()
    return await client.post(path, content=body, headers={"Content-Type": FORM})


def stored(client: httpx.AsyncClient) -> list[Any]:
    with services_of(client).store.read() as tx:
        return sorted(tx.callbacks(limit=10_000), key=lambda c: c.id)


@pytest.mark.parametrize("forgery", list(FORGERIES), ids=list(FORGERIES))
async def test_a_forged_return_changes_nothing_and_is_stored_with_its_outcome(
    make_client: ClientFactory, forgery: str
) -> None:
    params = FORGERIES[forgery]
    async with make_client(**sandbox_keys()) as client:
        created = await pending(client)
        path = created["formConfig"]["callbackPath"]
        before = await state(client, created["token"])
        by_get = await client.get(f"{path}?{urlencode(params)}")  # repeats and order kept
        by_post = await post_form(client, path, params)
        for answer in (by_get, by_post):
            assert answer.status_code == 303
            assert urlsplit(answer.headers["location"]).path == "/payment-error"
            page = await client.get(answer.headers["location"])
            assert page.status_code == 200
            assert "<script>alert" not in page.text
        assert await state(client, created["token"]) == before
        records = stored(client)
        assert [(r.method, r.params) for r in records] == [
            ("GET", tuple(params)),
            ("POST", tuple(params)),
        ]
        outcomes = {record.outcome for record in records}
        assert all(record.payment_token is None for record in records)
        if outcomes == {CallbackOutcome.REJECTED}:
            # The genuine return still completes the payment: no forgery claimed its PNRef.
            genuine_back = await client.get(path, params=genuine())
            assert urlsplit(genuine_back.headers["location"]).path == "/payment-success"
        else:  # signed with the real secret, it is the gateway's word: unattributable, kept
            assert outcomes == {CallbackOutcome.UNMATCHED, CallbackOutcome.DUPLICATE}, forgery


async def test_a_return_reusing_a_pnref_is_rejected(make_client: ClientFactory) -> None:
    async with make_client(**sandbox_keys()) as client:
        paid, other = await pending(client), await pending(client)
        await client.get(paid["formConfig"]["callbackPath"], params=genuine(pn_ref="111"))
        before = await state(client, other["token"])
        forged = signed(genuine(amount="10.00", pn_ref="111", result="0"))
        forged = replaced_in(forged, "OrderID", "99999999999")
        answer = await client.get(other["formConfig"]["callbackPath"], params=forged)
        assert urlsplit(answer.headers["location"]).path == "/payment-error"
        assert await state(client, other["token"]) == before
        last = stored(client)[-1]
        assert last.outcome is CallbackOutcome.REJECTED
        assert last.detail == "PNRef already used by a different return (CB-1)"


def replaced_in(params: Params, name: str, value: str) -> Params:
    return signed([(k, value if k == name else v) for k, v in params])


async def test_replaying_a_real_return_after_the_payment_completed_changes_nothing(
    make_client: ClientFactory,
) -> None:
    async with make_client(**sandbox_keys()) as client:
        created = await pending(client)
        path = created["formConfig"]["callbackPath"]
        first = await client.get(path, params=genuine())
        assert urlsplit(first.headers["location"]).path == "/payment-success"
        after = await state(client, created["token"])
        assert after[0]["status"] == "completed"
        declined = replaced_in(genuine(), "Result", "12")
        replays = [
            await client.get(path, params=genuine()),
            await post_form(client, path, genuine()),
            await client.get(path, params=declined),  # the same PNRef, now "declined"
        ]
        assert [r.headers["location"] for r in replays[:2]] == [first.headers["location"]] * 2
        assert urlsplit(replays[2].headers["location"]).path == "/payment-error"
        assert await state(client, created["token"]) == after
        outcomes = [r.outcome for r in stored(client)]
        assert outcomes == [
            CallbackOutcome.APPLIED,
            CallbackOutcome.DUPLICATE,
            CallbackOutcome.DUPLICATE,
            CallbackOutcome.REJECTED,
        ]
