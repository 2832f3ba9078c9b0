// Rendering an answer: Markdown (marked) made safe (DOMPurify), code blocks highlighted
// (highlight.js) with a copy button and their quality signals, and what answered it.

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let parser = null;

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// One Markdown parser for the page: HTML an answer writes outside code is shown as text (a coding
// answer's `<div>` is meant to be read, not rendered); DOMPurify still cleans what marked makes.
function markdown() {
  if (parser === null) {
    parser = new window.marked.Marked({ gfm: true, breaks: false, async: false });
    parser.use({ renderer: { html: (token) => escapeHtml(token.text) } });
  }
  return parser;
}

// Markdown to sanitised HTML in `body`: raw HTML in an answer never runs, styles nothing (the
// page's policy would refuse inline styles anyway), and loads nothing from elsewhere (the policy
// refuses other origins' images: an answer cannot call out with what the page shows).
export function renderMarkdown(body, text) {
  const html = markdown().parse(text);
  body.innerHTML = window.DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_ATTR: ["style"] });
  for (const image of body.querySelectorAll("img:not([src])")) image.replaceWith(image.alt);
}

let hooked = false;

// Run inside DOMPurify's inert document, before anything reaches the page: an image from
// elsewhere never starts loading, a link opens in a new tab.
export function hookSanitizer() {
  if (hooked) return;
  hooked = true;
  window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "IMG" && !(node.getAttribute("src") || "").startsWith("data:")) {
      node.setAttribute("alt", `[image: ${node.getAttribute("alt") || node.getAttribute("src") || ""}]`);
      node.removeAttribute("src");
      node.removeAttribute("srcset");
    }
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
}

// Wrap each code block with its toolbar and highlight it; returns the blocks found, with the
// language each is checked as (its tag, else the language highlight.js recognises).
export function decorateCode(body) {
  const blocks = [];
  for (const code of body.querySelectorAll("pre > code")) {
    const pre = code.parentElement;
    const tagged = [...code.classList].find((c) => c.startsWith("language-"));
    let language = tagged ? tagged.slice("language-".length) : "";
    let detected = false;
    if (language && window.hljs.getLanguage(language)) {
      window.hljs.highlightElement(code);
    } else {
      const result = window.hljs.highlightAuto(code.textContent);
      code.innerHTML = result.value; // highlight.js escapes the text it marks up
      code.classList.add("hljs");
      if (!language && result.language) {
        language = result.language;
        detected = true;
      }
    }
    const source = code.textContent;
    const copy = el("button", { type: "button", class: "copy", "aria-label": `Copy ${language || "code"}` }, "Copy");
    copy.addEventListener("click", () => copyText(source, copy));
    const label = language ? `${language}${detected ? " (detected)" : ""}` : "code";
    const head = el("div", { class: "code-head" }, el("span", { class: "lang" }, label), copy);
    const quality = el("div", { class: "quality", "aria-label": "Estimated code quality" },
      el("h4", {}, "Estimated quality"), el("ul", {}, el("li", { class: "check unknown" }, "checking…")));
    const wrapper = el("div", { class: "code-block", "data-language": language });
    pre.replaceWith(wrapper);
    wrapper.append(head, pre, quality);
    blocks.push({ code: source, language, quality });
  }
  return blocks;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Not a secure context (a LAN address over http): the older way.
    const area = el("textarea", { class: "sr" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

const MARKS = { true: ["ok", "✓"], false: ["fail", "✗"], null: ["unknown", "–"] };

// One block's quality signals, each as the checker said it; pass@1 as measured, or not measured.
export function showQuality(quality, found) {
  const list = quality.querySelector("ul");
  list.replaceChildren();
  for (const check of found.checks) {
    const [kind, mark] = MARKS[String(check.ok)];
    list.append(el("li", { class: `check ${kind}`, "data-check": check.name },
      el("span", { class: "mark", "aria-hidden": "true" }, mark),
      el("span", { class: "sr" }, kind === "ok" ? "passed:" : kind === "fail" ? "failed:" : "not run:"),
      el("span", { class: "name" }, check.name),
      el("span", { class: "detail" }, check.detail)));
  }
  const measured = found.pass_at_1 !== null && found.pass_at_1 !== undefined;
  list.append(el("li", { class: `check ${measured ? "ok" : "unknown"} pass-at-1` },
    el("span", { class: "mark", "aria-hidden": "true" }, measured ? "∑" : "–"),
    el("span", { class: "name" }, "tier pass@1"),
    el("span", { class: "detail" }, measured
      ? `${(found.pass_at_1 * 100).toFixed(0)}% on bench/tasks (${found.pass_at_1_source})`
      : "not measured (run npu-bench on this machine)")));
}

export function qualityFailed(quality, message) {
  quality.querySelector("ul").replaceChildren(
    el("li", { class: "check unknown" }, el("span", { class: "mark" }, "–"), `checks unavailable: ${message}`));
}

function chip(name, value) {
  return el("span", { class: "chip", "data-field": name }, `${name} `, el("b", {}, value));
}

// What answered, how fast, the route (Code Mode) and the fallback steps.
export function renderMeta(container, meta) {
  container.replaceChildren();
  if (!meta.asked && !meta.answered) return null; // an answer rendered from elsewhere: nothing to say
  const answered = meta.answered || {};
  const metrics = answered.metrics || {};
  const routing = answered.routing;
  if (routing) {
    const why = (routing.why || []).join("; ") || "no strong signal";
    container.append(el("div", { class: "route", "data-task": routing.task, "data-tier": routing.tier },
      el("strong", {}, "Route "), `task ${routing.task} → tier ${routing.tier}`,
      ` · confidence ${Number(routing.confidence).toFixed(2)} · by ${routing.stage}`,
      el("div", { class: "why" }, `why: ${why}`)));
  }
  // What the page asked for, and the tier the server said it received (X-NPU-Engine-Tier).
  const line = el("div", { class: "meta", "data-asked": meta.asked || "", "data-header-tier": meta.headerTier || "" });
  line.append(chip("asked", meta.asked || "?"));
  if (answered.tier) {
    line.append(chip("tier", answered.tier), chip("model", answered.model), chip("device", answered.device),
      chip("backend", answered.backend), chip("decoding", answered.decoding));
  }
  if (metrics.tokens_per_second !== undefined) {
    line.append(chip("tokens/s", Number(metrics.tokens_per_second).toFixed(1)),
      chip("first token", `${Math.round(metrics.ttft_ms)} ms`),
      chip("tokens", String(metrics.output_tokens)));
  }
  container.append(line);
  const steps = answered.fallback || [];
  if (steps.length) {
    container.append(el("div", { class: "fallback" },
      `fallback: ${steps.map((s) => `${s.target} (${s.reason})`).join(" → ")}`));
  } else if (answered.tier) {
    line.append(chip("fallback", "none"));
  }
  return line;
}

// The attestation badge: verified in place by the server, and the receipt to download. Checking
// re-hashes the model's files, so a saved answer is verified when asked (a click), not on load.
export function renderBadge(line, receipt, verify, now = true) {
  if (!receipt) {
    line.append(el("span", { class: "badge unsigned", title: "no receipt: a remote server answered, or none was made" },
      "not attested"));
    return;
  }
  const badge = el("button", { type: "button", class: "badge", title: "verify the receipt again" }, "attested: verifying…");
  const run = async () => {
    badge.className = "badge";
    badge.textContent = "attested: verifying…";
    try {
      const result = await verify();
      badge.className = `badge ${result.ok ? "verified" : "failed"}`;
      badge.textContent = result.ok ? "attested ✓ verified" : `attested ✗ ${result.reason}`;
      badge.title = result.ok ? result.summary : result.message;
    } catch (error) {
      badge.className = "badge failed";
      badge.textContent = "attested: could not verify";
      badge.title = error.message;
    }
  };
  badge.addEventListener("click", run);
  const download = el("a", { href: "#", class: "download-receipt" }, "receipt.json");
  download.addEventListener("click", (event) => {
    event.preventDefault();
    const blob = new Blob([JSON.stringify(receipt, null, 2)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: "npu-engine-receipt.json" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  line.append(badge, download);
  if (now) {
    run();
  } else {
    badge.textContent = "attested: verify";
    badge.title = "check the receipt's signature, this text and the model's files";
  }
}
