// A gateway return posted while the service could not store it (web/errors.py): the page
// holds the return's fields and sends them again after the Retry-After delay.
'use strict';

(() => {
  const form = document.getElementById('return-again');
  if (!form) return;
  const delaySeconds = Number(form.dataset.delay) || 5;
  setTimeout(() => form.submit(), delaySeconds * 1000);
})();
