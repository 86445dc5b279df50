// csbs console: moves progress bars of running backups by polling their
// progress; everything else works without JavaScript.
"use strict";
(function () {
  const running = new Set(["protecting", "restoring", "waiting_restore", "deleting"]);
  function poll(bar) {
    const url = bar.dataset.poll;
    fetch(url, { credentials: "same-origin" })
      .then((r) => r.json())
      .then((s) => {
        bar.value = s.progress || 0;
        bar.textContent = (s.progress || 0) + "%";
        document.querySelectorAll('[data-status-of="' + url + '"]').forEach((e) => { e.textContent = s.status; });
        if (s.fail_reason) {
          document.querySelectorAll('[data-fail-of="' + url + '"]').forEach((e) => { e.textContent = s.fail_reason; });
        }
        if (running.has(s.status)) {
          setTimeout(() => poll(bar), 1000);
        } else if (document.querySelector(".detail:not([data-final])")) {
          // A finished backup's page shows its sizes and disks: reload once.
          window.location.reload();
        }
      })
      .catch(() => setTimeout(() => poll(bar), 3000));
  }
  document.addEventListener("DOMContentLoaded", () => {
    // Fire times are written in UTC; show them in the browser's time zone.
    document.querySelectorAll("time[datetime]").forEach((t) => {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = d.toLocaleString(); t.title = t.getAttribute("datetime"); }
    });
    document.querySelectorAll("progress[data-poll]").forEach((bar) => {
      const st = document.querySelector('[data-status-of="' + bar.dataset.poll + '"]');
      if (st && running.has(st.textContent.trim())) { poll(bar); }
    });
  });
})();
