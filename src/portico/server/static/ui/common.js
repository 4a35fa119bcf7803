// Shared by every dashboard page (loaded first, as a classic script): the master key's storage slot, a query
// helper, a DOM builder that inserts every value as text (never as HTML), the status line, and the guard that
// sends a refused key back to the page's own showLogin().
"use strict";

const KEY = "portico.masterKey";
const $ = (sel) => document.querySelector(sel);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class NeedsKey extends Error {}

function setStatus(text, bad) {
  const el = $("#status");
  el.textContent = text;
  el.className = bad ? "error" : "muted";
}

async function guarded(fn) {
  try {
    await fn();
  } catch (e) {
    if (e instanceof NeedsKey) return showLogin(sessionStorage.getItem(KEY) ? "That key was refused." : "");
    setStatus(e.message, true);
  }
}
