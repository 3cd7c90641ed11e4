/* Review queue and pair review: keyboard shortcuts on top of plain links and forms.
 *
 * Pair page: a approve, r reject (asks the reason, Enter sends it), e edit, j / → next,
 * k / ← previous, ? help. Queue page: j / k move the selection, Enter opens the pair.
 * Keys are ignored while typing in a field. Everything here only clicks the page's own
 * links and buttons, so the pages work the same without this script (and htmx swaps the
 * pair panel in place when it is loaded).
 */
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  // htmx does not swap error responses by default; ours are pages a person must see:
  // 400 (say why you reject), 409 (someone else changed the pair: both texts shown).
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status === 400 || status === 409) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  var busy = false;
  document.addEventListener("htmx:beforeRequest", function () { busy = true; });
  document.addEventListener("htmx:afterRequest", function () { busy = false; });
  // htmx puts the cursor back in a field of the same id after a swap; after a decision the
  // keys must drive the page again, so only an error keeps it in the form.
  document.addEventListener("htmx:afterSwap", function () {
    var panel = document.getElementById("pair-panel");
    if (!panel) return;
    var reason = document.getElementById("review-reason");
    var active = document.activeElement;
    if (panel.querySelector("#review-form .errors") && reason) {
      reason.focus();  // the rejection needs a reason: the cursor is where it goes
    } else if (panel.querySelector("#conflict")) {
      panel.querySelector("#conflict").scrollIntoView({block: "nearest"});
    } else if (panel.querySelector("#edit-form .has-errors, #edit-form .errors")) {
      // leave the cursor in the edit form
    } else if (active && active !== document.body && panel.contains(active)) {
      active.blur();
    }
  });

  function typing(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  function helpDialog() { return document.getElementById("shortcut-help"); }

  function toggleHelp() {
    var dialog = helpDialog();
    if (!dialog) return;
    if (dialog.open) {
      dialog.close();
    } else if (dialog.showModal) {
      dialog.showModal();
    } else {
      dialog.setAttribute("open", "");
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-shortcuts]");
    if (button) {
      event.preventDefault();
      toggleHelp();
    }
  });

  // Pair page -------------------------------------------------------------------------------

  function actionButton(action) {
    return document.querySelector('#review-form button[name="action"][value="' + action + '"]');
  }

  function message(name, fallback) {
    var root = document.querySelector("[data-review-page]");
    return (root && root.dataset[name]) || fallback;
  }

  function flash(text) {
    var panel = document.getElementById("pair-panel");
    if (!panel) return;
    var note = panel.querySelector(".pair-notice") || document.createElement("p");
    note.className = "msg msg-warning pair-notice";
    note.setAttribute("role", "status");
    note.textContent = text;
    var nav = panel.querySelector(".pair-nav");
    if (nav && !note.parentNode) nav.insertAdjacentElement("afterend", note);
  }

  function approve() {
    var button = actionButton("approve");
    if (button) button.click();
    else flash(message("msgNoApprove", "This pair cannot be approved now."));
  }

  function askReason() {
    var button = actionButton("reject");
    var reason = document.getElementById("review-reason");
    if (!button || !reason) {
      flash(message("msgNoReject", "This pair cannot be rejected now."));
      return;
    }
    var form = document.getElementById("review-form");
    form.classList.add("asking-reason");
    form.dataset.pending = "reject";
    reason.focus();
    reason.select();
  }

  function edit() {
    var details = document.getElementById("pair-edit");
    if (!details) return;
    details.open = true;
    var field = details.querySelector("textarea");
    if (field) {
      field.focus();
      field.setSelectionRange(field.value.length, field.value.length);
    }
  }

  function go(rel) {
    var link = document.querySelector('#pair-panel a[rel="' + rel + '"]');
    if (link) link.click();
  }

  // Enter in the reason field after `r` sends the rejection; Esc gives up.
  document.addEventListener("keydown", function (event) {
    if (event.target.id !== "review-reason") return;
    var form = document.getElementById("review-form");
    if (event.key === "Enter") {
      event.preventDefault();
      var pending = form.dataset.pending || "reject";
      var button = actionButton(pending);
      if (button && !busy) button.click();
    } else if (event.key === "Escape") {
      delete form.dataset.pending;
      form.classList.remove("asking-reason");
      event.target.blur();
    }
  });

  // Queue page ------------------------------------------------------------------------------

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#review-list tr.pair-row")); }

  function moveSelection(step) {
    var list = rows();
    if (!list.length) return;
    var current = list.findIndex(function (row) { return row.classList.contains("selected"); });
    var next = current < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, current + step));
    list.forEach(function (row) { row.classList.remove("selected"); row.removeAttribute("aria-selected"); });
    list[next].classList.add("selected");
    list[next].setAttribute("aria-selected", "true");
    list[next].scrollIntoView({block: "nearest"});
  }

  function openSelection() {
    var row = document.querySelector("#review-list tr.pair-row.selected");
    var link = row && row.querySelector("a.pair-link");
    if (link) link.click();
    return Boolean(link);
  }

  // Keys --------------------------------------------------------------------------------------

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    var dialog = helpDialog();
    if (dialog && dialog.open && event.key !== "?") return;  // the dialog closes with Esc on its own
    var onPair = Boolean(document.getElementById("pair-panel"));
    var onQueue = Boolean(document.getElementById("review-list"));
    var key = event.key;
    if (key === "?") { event.preventDefault(); toggleHelp(); return; }
    if (onPair) {
      if (busy) { event.preventDefault(); return; }
      var handled = true;
      if (key === "a") approve();
      else if (key === "r") askReason();
      else if (key === "e") edit();
      else if (key === "j" || key === "ArrowRight") go("next");
      else if (key === "k" || key === "ArrowLeft") go("prev");
      else handled = false;
      if (handled) event.preventDefault();
    } else if (onQueue) {
      if (key === "j") { event.preventDefault(); moveSelection(1); }
      else if (key === "k") { event.preventDefault(); moveSelection(-1); }
      else if ((key === "Enter" || key === "o") && openSelection()) event.preventDefault();
    }
  });
})();
