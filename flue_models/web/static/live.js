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

async function refreshFields(url) {
  if (!url) return;
  const response = await fetch(url, { headers: { accept: "application/json" } });
  if (!response.ok) return;
  const data = await response.json();
  for (const element of document.querySelectorAll("[data-field]")) {
    const value = data.run[element.dataset.field];
    element.textContent = element.tagName === "PRE" ? JSON.stringify(value, null, 2) : shown(value).replace("T", " ").slice(0, 19);
    if (element.dataset.field === "status") element.className = "status status-" + shown(value);
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
