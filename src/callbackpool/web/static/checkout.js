// The reference checkout (the page /checkout): create a payment token (waiting in line when
// every slot is busy), post the hosted form's fields into a payment window, follow the
// payment by polling check-status, and cancel the token when the window is closed without a
// result (the slot is freed at once).
'use strict';

(() => {
  const form = document.getElementById('checkout-form');
  if (!form) return;
  const api = form.dataset.api;
  const pollMs = Number(form.dataset.pollMs) || 3000;
  const exponent = Number(form.dataset.exponent);
  const currency = form.dataset.currency;
  const statusBox = document.getElementById('checkout-status');
  const detailBox = document.getElementById('checkout-detail');
  const payButton = document.getElementById('pay');
  const WINDOW_NAME = 'callbackpool-payment';
  const OUTCOMES = {
    completed: 'Payment completed',
    failed: 'Payment declined',
    cancelled: 'Payment cancelled',
    expired: 'Payment expired: the time to pay ran out',
    needs_review: 'Payment received; we are confirming it',
  };

  function show(state, text, detail = '') {
    statusBox.dataset.state = state;
    statusBox.textContent = text;
    detailBox.textContent = detail;
  }

  function busy(on) {
    payButton.disabled = on;
  }

  // "12.34" → 1234 minor units, by the digits (never through a float).
  function toMinor(text) {
    const match = /^\s*(\d{1,13})(?:[.,](\d*))?\s*$/.exec(text);
    if (!match) return null;
    const fraction = match[2] || '';
    if (fraction.length > exponent) return null;
    return Number(match[1] + fraction.padEnd(exponent, '0'));
  }

  function order() {
    const items = [];
    for (const input of form.querySelectorAll('input[data-item-code]')) {
      const quantity = Number(input.value || 0);
      if (!Number.isInteger(quantity) || quantity < 0) {
        throw new Error(`Quantity of ${input.dataset.itemCode} must be a whole number`);
      }
      if (quantity > 0) items.push({ code: input.dataset.itemCode, quantity });
    }
    if (items.length) return { paymentData: { items, currency } };
    const amountInput = form.elements.namedItem('amount');
    const amount = amountInput ? toMinor(amountInput.value) : null;
    if (!amount) throw new Error('Choose some items or enter an amount');
    return { paymentData: { amount, currency } };
  }

  async function call(method, path, body) {
    const options = { method, headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    const response = await fetch(api + path, options);
    let data;
    try {
      data = await response.json();
    } catch {
      data = { success: false, message: `HTTP ${response.status}` };
    }
    return { response, data };
  }

  function postToGateway(formConfig, target) {
    const gatewayForm = document.createElement('form');
    gatewayForm.method = formConfig.method;
    gatewayForm.action = formConfig.formActionUrl;
    gatewayForm.target = target;
    gatewayForm.hidden = true;
    for (const [name, value] of Object.entries(formConfig.fields)) {
      const input = document.createElement('input');
      input.type = 'hidden';
      input.name = name;
      input.value = value;
      gatewayForm.appendChild(input);
    }
    document.body.appendChild(gatewayForm);
    gatewayForm.submit();
    gatewayForm.remove();
  }

  const pause = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

  // Every slot busy: create-token answered 202 with a ticket. Poll it as often as the answer
  // says (a ticket nobody polls expires) until a slot is granted; leave the line if the
  // customer closes the payment window meanwhile.
  async function waitForSlot(waiting, paymentWindow) {
    const ticket = encodeURIComponent(waiting.ticket);
    let place = waiting;
    for (;;) {
      show('waiting', `Every payment slot is busy: you are number ${place.position} in line…`);
      await pause(Math.max(1, place.retryAfter || 1));
      if (paymentWindow && paymentWindow.closed) {
        await call('POST', `/cancel-ticket/${ticket}`).catch(() => undefined);
        return { closed: true };
      }
      let result;
      try {
        result = await call('GET', `/ticket/${ticket}`);
      } catch {
        continue; // the network hiccuped: ask again
      }
      if (result.response.status === 200) return { granted: result.data };
      if (result.response.status !== 202) {
        return { error: result.data.message || 'The wait for a payment slot ended' };
      }
      place = result.data;
    }
  }

  function finish(payment) {
    const text = OUTCOMES[payment.status] || `Payment ${payment.status}`;
    const facts = [];
    if (payment.transactionId) facts.push(`Transaction ${payment.transactionId}`);
    if (payment.late) facts.push('arrived after the payment had stopped waiting');
    if (payment.errorMessage) facts.push(payment.errorMessage);
    show(payment.status, text, facts.join(' · '));
    busy(false);
  }

  function follow(token, paymentWindow) {
    let timer = null;
    let settled = false;

    async function cancel() {
      const { response, data } = await call('POST', `/cancel-token/${encodeURIComponent(token)}`);
      if (response.ok) {
        finish({ status: 'cancelled', errorMessage: 'The payment window was closed' });
        return;
      }
      // It ended meanwhile (the return arrived as the window closed): show how.
      settled = false;
      await check(false);
    }

    async function check(windowMayBeClosed) {
      if (settled) return;
      clearTimeout(timer);
      let result;
      try {
        result = await call('GET', `/check-status/${encodeURIComponent(token)}`);
      } catch {
        timer = setTimeout(() => check(true), pollMs);
        return;
      }
      const payment = result.data;
      if (result.response.ok && payment.status !== 'pending') {
        settled = true;
        finish(payment);
        return;
      }
      if (windowMayBeClosed && paymentWindow && paymentWindow.closed) {
        settled = true;
        await cancel();
        return;
      }
      timer = setTimeout(() => check(true), pollMs);
    }

    if (paymentWindow) {
      const watcher = setInterval(() => {
        if (settled) {
          clearInterval(watcher);
        } else if (paymentWindow.closed) {
          clearInterval(watcher);
          check(true);
        }
      }, 500);
    }
    timer = setTimeout(() => check(true), pollMs);
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let body;
    try {
      body = order();
    } catch (error) {
      show('error', error.message);
      return;
    }
    // Opened while the click is still being handled, or a popup blocker would refuse it.
    const paymentWindow = window.open('', WINDOW_NAME, 'popup,width=520,height=760');
    busy(true);
    show('working', 'Reserving a payment slot…');
    body.wait = true;
    let { response, data } = await call('POST', '/create-token', body).catch((error) => ({
      response: { ok: false, status: 0 },
      data: { success: false, message: error.message },
    }));
    if (response.status === 202) {
      const waited = await waitForSlot(data, paymentWindow);
      if (waited.closed) {
        finish({ status: 'cancelled', errorMessage: 'The payment window was closed while waiting' });
        return;
      }
      if (waited.granted) {
        data = waited.granted;
      } else {
        response = { ok: false, status: 410 };
        data = { success: false, message: waited.error };
      }
    }
    if (!response.ok || !data.success) {
      if (paymentWindow) paymentWindow.close();
      const retry = data.retryAfter ? ` Try again in ${data.retryAfter} s.` : '';
      show('error', (data.message || 'The payment could not be started') + retry);
      busy(false);
      return;
    }
    statusBox.dataset.token = data.token;
    // Without a window (popups blocked) the form goes in this one; the return lands here.
    postToGateway(data.formConfig, paymentWindow ? WINDOW_NAME : '_self');
    show('pending', 'Complete the payment in the payment window…');
    follow(data.token, paymentWindow);
  });
})();
