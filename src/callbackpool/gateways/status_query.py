"""A gateway's server-to-server status query over HTTP, in the protocol the sandbox documents
(README, "The sandbox gateway"): ``GET <url>?PNRef=<ref>`` with ``Authorization: Bearer <key>``
answers 200 with the transaction as JSON, 404 when the gateway has none. Another gateway's
query is another ``StatusQuery`` (domain/gateway.py).
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ..domain.gateway import GatewayTransaction, StatusQueryFailed
from .paygistix import minor_amount

MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class HttpStatusQuery:
    """Asks ``url`` about a transaction, within ``timeout`` seconds all told."""

    url: str
    api_key: str | None
    token_field: str
    currency: str
    timeout: float = 5.0

    def transaction(self, pn_ref: str) -> GatewayTransaction | None:
        separator = "&" if "?" in self.url else "?"
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's, http(s) only
            f"{self.url}{separator}{urlencode({'PNRef': pn_ref})}",
            headers={"Accept": "application/json"},
        )
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise StatusQueryFailed(f"the gateway answered HTTP {exc.code}") from exc
        except (OSError, http.client.HTTPException) as exc:  # URLError and time-outs too
            reason = getattr(exc, "reason", None) or exc or type(exc).__name__
            raise StatusQueryFailed(f"the gateway did not answer ({reason})") from exc
        if len(body) > MAX_ANSWER_BYTES:
            raise StatusQueryFailed("the gateway's answer is too large")
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise StatusQueryFailed("the gateway's answer is not JSON") from exc
        return self._read(document)

    def _read(self, document: Any) -> GatewayTransaction:
        if not isinstance(document, dict):
            raise StatusQueryFailed("the gateway's answer is not a JSON object")
        found_ref, result = document.get("PNRef"), document.get("Result")
        if not isinstance(found_ref, str) or not isinstance(result, str):
            raise StatusQueryFailed("the gateway's answer lacks PNRef or Result")
        amount_text = document.get("Amount")
        amount = minor_amount(amount_text, self.currency) if isinstance(amount_text, str) else None
        if amount is None and isinstance(amount_text, str) and amount_text:
            raise StatusQueryFailed("the gateway's answer has an unreadable Amount")
        custom = document.get("custom")
        token = custom.get(self.token_field) if isinstance(custom, dict) else None
        merchant = document.get("MerchantID")
        return GatewayTransaction(
            pn_ref=found_ref,
            result_code=result,
            amount=amount,
            merchant_id=merchant if isinstance(merchant, str) else None,
            payment_token=token if isinstance(token, str) else None,
        )
