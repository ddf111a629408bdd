// The sandbox's return to the shop (gateways/sandbox.py): the form holds the 11 return
// parameters; the switches say when to send it, and whether to send it twice.
'use strict';

(() => {
  const form = document.getElementById('gateway-return');
  if (!form) return;
  const delaySeconds = Number(form.dataset.delay) || 0;
  const twice = form.dataset.twice === 'true';

  function sendFirstCopy() {
    // The first copy goes into a hidden frame; the page itself then sends the second.
    return new Promise((resolve) => {
      const frame = document.querySelector('iframe[name="first-return"]');
      const fallback = setTimeout(resolve, 3000);
      frame.addEventListener('load', () => { clearTimeout(fallback); resolve(); }, { once: true });
      form.target = 'first-return';
      form.submit();
    });
  }

  setTimeout(async () => {
    if (twice) {
      await sendFirstCopy();
      form.target = '_self';
    }
    form.submit();
  }, delaySeconds * 1000);
})();
