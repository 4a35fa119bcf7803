// Runs the /docs page's own script under Node against a live server, with a minimal DOM (no browser needed), for
// tests/e2e/test_openapi.py. Usage: node docs_render.mjs BASE_URL. Prints one JSON line: the rendered operations
// (id, method, path), the section headings, and any error the page showed or threw.
import vm from "node:vm";

const base = process.argv[2];

class Node_ {
  constructor(tag) { this.tag = tag; this.attrs = {}; this.children = []; this._text = ""; this.open = false; }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  append(...kids) { this.children.push(...kids); }
  set textContent(v) { this._text = String(v); this.children = []; }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(""); }
  scrollIntoView() {}
  *walk() { yield this; for (const c of this.children) if (c instanceof Node_) yield* c.walk(); }
}
class Text_ { constructor(t) { this.t = t; } get textContent() { return this.t; } }

const html = await (await fetch(base + "/docs")).text();
const script = html.match(/<script>([\s\S]*?)<\/script>/)[1];
const byId = new Map(["title", "desc", "err", "ops"].map((id) => [id, new Node_("div")]));
const document = {
  createElement: (tag) => new Node_(tag),
  createTextNode: (t) => new Text_(t),
  getElementById: (id) => byId.get(id) || null,
};
const context = vm.createContext({
  document, Node: Node_, location: { hash: "" }, console, JSON, Object, Map, Set, String, Error,
  fetch: (path) => fetch(new URL(path, base + "/docs")),
});
let thrown = null;
try {
  vm.runInContext(script, context);
  await new Promise((r) => setTimeout(r, 1500)); // main() awaits the fetch of openapi.json
} catch (e) {
  thrown = String(e);
}
const ops = [...byId.get("ops").walk()].filter((n) => n.tag === "details").map((d) => {
  const summary = d.children[0];
  return { id: d.attrs.id, method: summary.children[0].textContent, path: summary.children[1].textContent,
           text: d.textContent };
});
const headings = [...byId.get("ops").children].filter((n) => n.tag === "h2").map((h) => h.textContent);
process.stdout.write(JSON.stringify({ ops, headings, title: byId.get("title").textContent,
                                      error: byId.get("err").textContent || thrown }) + "\n");
