/* VSM document upload: drag and drop, several files, one progress bar per file.
 *
 * Each file is posted on its own (multipart, field "files") to the form's action with
 * XMLHttpRequest, whose upload progress events move that file's bar; the server answers
 * JSON (Accept: application/json) saying per file: uploaded, duplicate or refused.
 * Without this script the form is a plain multipart POST and the outcomes come back as
 * messages on the page. Texts come translated from the form's data-msg-* attributes.
 */
(function () {
  "use strict";

  var form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) {
    return;
  }
  var input = form.querySelector("input[type=file]");
  var zone = form.querySelector(".dropzone");
  var list = form.querySelector(".upload-list");
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]");
  var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10) || 0;
  var PARALLEL = 2;
  var queue = [];
  var active = 0;
  var finishedSome = false;

  form.classList.add("js-upload");

  function msg(name) {
    return form.getAttribute("data-msg-" + name) || "";
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function addItem(file) {
    var li = el("li", "upload-item");
    li.appendChild(el("span", "name", file.name));
    var wrap = el("div", "progress-wrap");
    var bar = el("div", "progress");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", "0");
    bar.setAttribute("aria-label", file.name);
    var fill = el("div", "progress-fill");
    fill.style.width = "0%";
    bar.appendChild(fill);
    wrap.appendChild(bar);
    var percent = el("span", "progress-text", "0%");
    wrap.appendChild(percent);
    li.appendChild(wrap);
    var note = el("span", "note", msg("waiting"));
    li.appendChild(note);
    list.appendChild(li);
    return { file: file, li: li, bar: bar, fill: fill, percent: percent, note: note };
  }

  function setProgress(item, value) {
    var p = Math.max(0, Math.min(100, Math.round(value)));
    item.fill.style.width = p + "%";
    item.bar.setAttribute("aria-valuenow", String(p));
    item.percent.textContent = p + "%";
  }

  function finish(item, outcome, text, url) {
    item.li.classList.add("outcome-" + outcome);
    item.li.setAttribute("data-outcome", outcome);
    item.note.textContent = text;
    if (url) {
      item.note.appendChild(document.createTextNode(" "));
      var link = el("a", "", msg("open"));
      link.href = url;
      item.note.appendChild(link);
    }
  }

  function refreshTable() {
    var target = document.getElementById("document-table");
    if (!finishedSome || !target || !window.htmx) {
      return;
    }
    window.htmx.ajax("GET", form.getAttribute("data-table-url"), { target: "#document-table", swap: "outerHTML" });
  }

  function next() {
    while (active < PARALLEL && queue.length) {
      send(queue.shift());
    }
    if (active === 0 && queue.length === 0) {
      refreshTable();
    }
  }

  function send(item) {
    active += 1;
    var data = new FormData();
    data.append("files", item.file, item.file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    if (csrf) xhr.setRequestHeader("X-CSRFToken", csrf.value);
    item.note.textContent = msg("uploading");
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        setProgress(item, (100 * event.loaded) / event.total);
      }
    });
    xhr.upload.addEventListener("load", function () {
      setProgress(item, 100);
      item.note.textContent = msg("reading");
    });
    xhr.addEventListener("load", function () {
      var body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (e) {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300 && body && body.results && body.results.length) {
        // One file was sent, but an over-limit file is reported beside it: show every outcome.
        var lines = [];
        var worst = "uploaded";
        var url = "";
        body.results.forEach(function (result) {
          lines.push(result.message);
          if (result.outcome === "refused" || (result.outcome === "duplicate" && worst === "uploaded")) {
            worst = result.outcome;
          }
          if (result.document && !url) url = result.document.url;
        });
        setProgress(item, 100);
        finish(item, worst, lines.join(" "), url);
        finishedSome = true;
      } else if (body && body.error) {
        finish(item, "refused", body.error, "");
      } else {
        finish(item, "refused", msg("denied") + " HTTP " + xhr.status, "");
      }
    });
    xhr.addEventListener("error", function () {
      finish(item, "refused", msg("failed"), "");
    });
    xhr.addEventListener("loadend", function () {
      active -= 1;
      next();
    });
    xhr.send(data);
  }

  function enqueue(files) {
    for (var i = 0; i < files.length; i += 1) {
      var item = addItem(files[i]);
      if (maxBytes && files[i].size > maxBytes) {
        finish(item, "refused", msg("too-large"), "");
        continue;
      }
      queue.push(item);
    }
    next();
  }

  input.addEventListener("change", function () {
    if (input.files && input.files.length) {
      enqueue(input.files);
    }
    input.value = "";
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (input.files && input.files.length) {
      enqueue(input.files);
      input.value = "";
    }
  });

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
      zone.classList.add("dragging");
    });
  });
  ["dragleave", "dragend"].forEach(function (name) {
    zone.addEventListener(name, function () {
      zone.classList.remove("dragging");
    });
  });
  // A file dropped beside the zone must not make the browser leave the page to show it.
  window.addEventListener("dragover", function (event) {
    event.preventDefault();
  });
  window.addEventListener("drop", function (event) {
    event.preventDefault();
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer && event.dataTransfer.files && event.dataTransfer.files.length) {
      enqueue(event.dataTransfer.files);
    }
  });
})();
