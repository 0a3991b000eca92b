// A fake DOM just big enough to run the playground's script in node (no browser needed).
const vm = require("vm");
const fs = require("fs");
class El {
  constructor(tag) { Object.assign(this, { tag, children: [], dataset: {}, value: "", listeners: {}, checked: false, textContent: "" }); }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  fire(type) { for (const fn of this.listeners[type] || []) fn({}); }
  setAttribute(k, v) { this[k] = v; }
  append(...c) { this.children.push(...c); }
  replaceChildren(...c) { this.children = [...c]; }
  querySelector(sel) { const type = /type=(\w+)/.exec(sel)[1]; return this.children.find((c) => c.type === type); }
  focus() {}
}
const els = {};
global.document = {
  getElementById: (id) => els[id] || (els[id] = new El("x")),
  createElement: (tag) => new El(tag),
  addEventListener() {},
  body: { dataset: {} },
};
const responses = JSON.parse(process.argv[3]);
global.fetch = async (path) => ({ ok: true, status: 200, json: async () => responses[path] });
vm.runInThisContext(fs.readFileSync(process.argv[2], "utf8"));
setTimeout(() => {
  const out = {};
  const band = () => [els["layer-from"].value, els["layer-to"].value];
  out.band = band();
  out.sliders = {};
  for (const li of els["vector-list"].children) {
    const s = li.querySelector("input[type=range]");
    out.sliders[li.dataset.name] = { min: s.min, max: s.max, step: s.step, value: s.value };
  }
  const [first, second] = els["vector-list"].children;
  second.querySelector("input[type=checkbox]").checked = true;
  out.uncalibrated = vm.runInThisContext("chosenSteering()");
  second.querySelector("input[type=checkbox]").checked = false;
  first.querySelector("input[type=checkbox]").checked = true;
  out.calibrated = vm.runInThisContext("chosenSteering()");
  els["layer-from"].value = "5"; els["layer-to"].value = "9"; els["layer-from"].fire("input");
  out.touched = vm.runInThisContext("chosenSteering()");
  console.log(JSON.stringify(out));
}, 50);
