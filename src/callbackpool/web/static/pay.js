// The hosted payment page's hand-over: this window goes on to the gateway's form at once
// (the button is there for a browser without scripts).
'use strict';

(() => {
  const form = document.getElementById('to-gateway');
  if (form) form.submit();
})();
