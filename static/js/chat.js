// The chat form, streamed: post it to data-stream-url and show the answer as it arrives
// (server-sent events over fetch), then swap in the finished message with its citations.
// Without JavaScript the form posts to its action and the page reloads with the answer.
(function () {
  "use strict";
  const form = document.getElementById("chat-form");
  if (!form || !window.fetch || !window.TextDecoder) return;
  const thread = document.getElementById("chat-thread");
  const question = form.querySelector("textarea[name=question]");
  const send = document.getElementById("chat-send");

  function parseEvents(buffer, onEvent) {
    const parts = buffer.split("\n\n");
    const rest = parts.pop();
    for (const part of parts) {
      let name = "message", data = "";
      for (const line of part.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
    return rest;
  }

  function setConversation(id, url) {
    let input = form.querySelector("input[name=conversation]");
    if (!input) {
      input = document.createElement("input");
      input.type = "hidden";
      input.name = "conversation";
      form.appendChild(input);
    }
    input.value = id;
    if (url && window.history && window.location.pathname !== url) window.history.replaceState(null, "", url);
    const list = document.querySelector(".chat-list ul");
    if (list && url && !list.querySelector('a[href="' + url + '"]')) {  // a new conversation joins the list
      const item = document.createElement("li");
      const link = document.createElement("a");
      item.className = "current";
      link.href = url;
      link.textContent = question.dataset.asked || url;
      item.appendChild(link);
      list.querySelectorAll("li.muted").forEach(function (li) { li.remove(); });
      list.prepend(item);
    }
  }

  question.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async function (e) {
    const text = question.value.trim();
    if (!text) return;
    e.preventDefault();
    const empty = document.getElementById("chat-empty");
    if (empty) empty.remove();
    const pending = document.getElementById("chat-pending").content.cloneNode(true);
    const [userTurn, answerTurn] = pending.querySelectorAll("article");
    userTurn.querySelector(".bubble").textContent = text;
    const bubble = answerTurn.querySelector(".bubble");
    const note = answerTurn.querySelector("p");
    thread.appendChild(userTurn);
    thread.appendChild(answerTurn);
    answerTurn.scrollIntoView({block: "end"});
    const body = new FormData(form);
    question.dataset.asked = text.slice(0, 48);
    question.value = "";
    send.disabled = true;
    try {
      const response = await fetch(form.dataset.streamUrl, {method: "POST", body: body, credentials: "same-origin",
                                                            headers: {"Accept": "text/event-stream"}});
      if (!response.ok) {
        let message = response.statusText;
        try {
          const data = await response.json();
          message = Object.values(data.errors || {}).flat().map(function (x) { return x.message || x; }).join(" ");
        } catch (err) { /* not JSON */ }
        answerTurn.classList.add("failed");
        bubble.textContent = message;
        note.remove();
        question.value = text;
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer = parseEvents(buffer + decoder.decode(value, {stream: true}), function (name, data) {
          if (name === "conversation") setConversation(data.id, data.url);
          else if (name === "citations") note.textContent = data.covered ? note.dataset.writing || "…" : "";
          else if (name === "token") bubble.textContent += data.text;
          else if (name === "done") {
            const holder = document.createElement("div");
            holder.innerHTML = data.html;
            const finished = holder.firstElementChild;
            answerTurn.replaceWith(finished);
            if (window.htmx) window.htmx.process(finished);
            finished.scrollIntoView({block: "end"});
          }
        });
      }
    } catch (err) {
      answerTurn.classList.add("failed");
      bubble.textContent = String(err);
    } finally {
      send.disabled = false;
      question.focus();
    }
  });
})();
