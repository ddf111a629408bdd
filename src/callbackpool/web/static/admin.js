// The dashboard refreshes itself: every few seconds it fetches the page again and swaps in
// the sections marked data-live, except one the operator is typing in (a half-filled
// decision is never thrown away). No inline script: this file is all the page runs.
(function () {
  "use strict";
  const seconds = Number(document.body.dataset.refreshSeconds || "0");
  const status = document.getElementById("live-status");
  if (!seconds || !window.fetch || !window.DOMParser) return;

  function busy(section) {
    if (section.contains(document.activeElement) && document.activeElement !== document.body) {
      return true;
    }
    for (const field of section.querySelectorAll("input[type=text], input:not([type]), select")) {
      if (field.value && field.value !== field.defaultValue) return true;
    }
    for (const field of section.querySelectorAll("input[type=radio], input[type=checkbox]")) {
      if (field.checked !== field.defaultChecked) return true;
    }
    for (const details of section.querySelectorAll("details")) {
      if (details.open) return true;
    }
    return false;
  }

  async function refresh() {
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin",
        headers: { "Accept": "text/html" },
        redirect: "manual",
        cache: "no-store",
      });
      if (response.type === "opaqueredirect" || response.status === 401) {
        status.textContent = "signed out: reload to sign in again";
        status.classList.add("stale");
        return false;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const section of document.querySelectorAll("[data-live]")) {
        const replacement = fresh.getElementById(section.id);
        if (replacement && !busy(section)) section.replaceWith(replacement);
      }
      const freshStatus = fresh.getElementById("live-status");
      if (freshStatus) status.textContent = freshStatus.textContent;
      status.classList.remove("stale");
      document.title = fresh.title;
    } catch (error) {
      status.textContent = "not refreshed: " + error.message + " (retrying)";
      status.classList.add("stale");
    }
    return true;
  }

  async function loop() {
    if (await refresh()) window.setTimeout(loop, seconds * 1000);
  }
  window.setTimeout(loop, seconds * 1000);
})();
