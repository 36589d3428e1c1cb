// Live tails: a table with data-source follows that server-sent-events URL. Every value
// is written with textContent, so event data is shown as text, never run as markup.
"use strict";

function showState(state, text) {
  const element = document.getElementById("stream-state");
  if (element) {
    element.dataset.state = state;
    element.textContent = text;
  }
}

function shortOffset(offset) {
  const seq = String(offset).split("_").pop();
  return String(Number(seq));
}

function shown(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value, null, 2);
  return String(value);
}

// As the server's duration filter writes it: 840 ms, 20.1 s, 3 min 4 s, 2 h 6 min.
function duration(ms) {
  if (ms === null || ms === undefined) return "";
  const seconds = ms / 1000;
  if (seconds < 1) return Math.trunc(ms) + " ms";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  let minutes = Math.floor(Math.round(seconds) / 60);
  const rest = Math.round(seconds) % 60;
  if (minutes < 60) return minutes + " min " + rest + " s";
  return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
}

function eventKind(data) {
  return data && typeof data === "object" && typeof data.type === "string" ? data.type : "";
}

async function refreshFields(url) {
  if (!url) return;
  const response = await fetch(url, { headers: { accept: "application/json" } });
  if (!response.ok) return;
  const data = await response.json();
  for (const element of document.querySelectorAll("[data-field]")) {
    const field = element.dataset.field;
    const value = data.run[field];
    if (element.tagName === "PRE") {
      element.textContent = value === null ? "" : JSON.stringify(value, null, 2);
      const box = element.closest("[data-box]");
      if (box) box.hidden = value === null;
    } else if (field === "duration_ms") {
      element.textContent = duration(value);
      element.title = value === null ? "" : value + " ms";
    } else {
      element.textContent = shown(value).replace("T", " ").slice(0, 19);
    }
    if (field === "status") element.className = "status status-" + shown(value);
  }
}

function follow(table) {
  const body = table.tBodies[0];
  const source = new EventSource(table.dataset.source);
  source.onopen = () => showState("live", "live: new events appear as they are appended");
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    const row = body.insertRow();
    const offset = row.insertCell();
    offset.textContent = shortOffset(event.offset);
    offset.title = event.offset;
    const time = row.insertCell();
    time.textContent = event.at ? String(event.at).slice(11, 23) : "";
    time.title = event.at || "";
    row.insertCell().textContent = eventKind(event.data);
    const code = document.createElement("code");
    code.textContent = JSON.stringify(event.data);
    row.insertCell().appendChild(code);
  };
  source.addEventListener("closed", () => {
    source.close();
    showState("closed", "closed: the stream has ended");
    refreshFields(table.dataset.refresh);
  });
  source.addEventListener("failed", (message) => {
    source.close();
    showState("failed", "failed: " + JSON.parse(message.data).error.message);
  });
  source.onerror = () => {
    // The browser reconnects by itself, sending Last-Event-ID: the tail resumes there.
    if (source.readyState === EventSource.CONNECTING) showState("reconnecting", "reconnecting…");
  };
}

document.addEventListener("DOMContentLoaded", () => {
  for (const table of document.querySelectorAll("table[data-source]")) follow(table);
});
