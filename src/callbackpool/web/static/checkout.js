// The reference checkout (the page /checkout): create a payment token (waiting in line when
// every slot is busy), post the hosted form's fields into a payment window, follow the
// payment by polling check-status, and cancel the token when the window is closed without a
// result (the slot is freed at once; a payment made all the same still completes, late, and
// the page keeps looking for it a while).
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
  const totalBox = document.getElementById('checkout-total');
  const WINDOW_NAME = 'callbackpool-payment';
  const UNCONFIRMED = 'If you completed the payment, do not pay again: we will confirm it.';
  const OUTCOMES = {
    completed: 'Payment completed',
    failed: 'Payment declined. No money was taken.',
    cancelled: 'Payment cancelled',
    expired: 'Payment not confirmed',
    needs_review: 'Payment received; we are confirming it. Please do not pay again.',
  };
  const AFTER_CLOSING_MS = 5000; // how often a closed window's payment is looked for again
  const AFTER_CLOSING_TRIES = 120; // for ten minutes

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
        throw new Error(`Quantity of ${input.dataset.itemName} must be a whole number`);
      }
      if (quantity > 0) {
        items.push({ code: input.dataset.itemCode, quantity, price: Number(input.dataset.price) });
      }
    }
    const amountInput = form.elements.namedItem('amount');
    const typed = amountInput ? amountInput.value.trim() : '';
    if (items.length && typed) throw new Error('Choose items or enter an amount, not both');
    if (items.length) {
      const total = items.reduce((sum, item) => sum + item.quantity * item.price, 0);
      return { total, body: { paymentData: { items: items.map(({ code, quantity }) => ({ code, quantity })), currency } } };
    }
    const amount = typed ? toMinor(typed) : null;
    if (typed && !amount) throw new Error('Enter the amount like 10.00');
    if (!amount) throw new Error('Choose some items or enter an amount');
    return { total: amount, body: { paymentData: { amount, currency } } };
  }

  // "1234" minor units → "12.34 USD", by the digits.
  function formatMinor(minor) {
    const digits = String(minor).padStart(exponent + 1, '0');
    const whole = exponent ? digits.slice(0, -exponent) : digits;
    return (exponent ? `${whole}.${digits.slice(-exponent)}` : whole) + ` ${currency}`;
  }

  function showTotal() {
    if (!totalBox) return;
    try {
      totalBox.textContent = `Total ${formatMinor(order().total)}`;
    } catch {
      totalBox.textContent = '';
    }
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

  // What the customer is told; never the gateway's own codes. ``unconfirmed``: the window
  // closed after the card page, with no return (yet).
  function finish(payment, unconfirmed = false) {
    let text = OUTCOMES[payment.status] || `Payment ${payment.status}`;
    const error = payment.status === 'failed' && /^error/.test(payment.errorMessage || '');
    if (error) text = 'The payment could not be processed. No money was taken.';
    if (unconfirmed) text = 'Payment not confirmed';
    const facts = [];
    if (payment.transactionId) facts.push(`Transaction ${payment.transactionId}`);
    if (unconfirmed) facts.push(UNCONFIRMED);
    show(unconfirmed ? 'unconfirmed' : payment.status, text, facts.join(' · '));
    // Once paid (or being confirmed), Pay stays off: nobody pays twice by accident.
    busy(payment.status === 'completed' || payment.status === 'needs_review');
  }

  // After the window closed without a return: a payment made all the same still arrives
  // (late); look for it a while, and say so when it does.
  async function lookAgain(token, tries = AFTER_CLOSING_TRIES) {
    if (tries <= 0) return;
    await pause(AFTER_CLOSING_MS / 1000);
    try {
      const { response, data } = await call('GET', `/check-status/${encodeURIComponent(token)}`);
      if (response.ok && !['cancelled', 'expired', 'pending'].includes(data.status)) {
        finish(data);
        return;
      }
    } catch {
      // the network hiccuped: look again
    }
    await lookAgain(token, tries - 1);
  }

  function follow(token, paymentWindow) {
    let timer = null;
    let settled = false;

    async function cancel() {
      const { response, data } = await call('POST', `/cancel-token/${encodeURIComponent(token)}`);
      if (response.ok) {
        finish({ status: data.status || 'cancelled' }, true);
        lookAgain(token);
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

  form.addEventListener('input', showTotal);
  showTotal();

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let body;
    try {
      body = order().body;
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
