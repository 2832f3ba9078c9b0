// The Code Mode page: a chat over the engine's OpenAI-compatible API, with conversations kept in
// this browser, Code Mode (model `auto`: the router picks the tier), and what answered each prompt.
import { Api } from "./api.js";
import { refreshPanel } from "./panel.js";
import { Conversations } from "./store.js";
import {
  decorateCode, el, hookSanitizer, qualityFailed, renderBadge, renderMarkdown, renderMeta, showQuality,
} from "./render.js";

const THEME_ITEM = "npu-engine.theme";
const $ = (id) => document.getElementById(id);

// -- the API key: asked for once, in a dialog, when a call answers 401 ---------------------------

function askKey(refused) {
  const dialog = $("key-dialog");
  const input = $("key-input");
  $("key-error").hidden = !refused;
  input.value = "";
  return new Promise((resolve) => {
    const done = (value) => {
      dialog.removeEventListener("close", closed);
      resolve(value);
    };
    const closed = () => done(dialog.returnValue === "save" ? input.value.trim() || null : null);
    dialog.addEventListener("close", closed);
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}

const api = new Api(askKey);
const conversations = new Conversations();
let current = null; // the conversation shown
let chatTiers = [];
let running = null; // the AbortController of the answer being streamed

// -- theme: prefers-color-scheme, unless the toggle chose ------------------------------------------

function effectiveTheme() {
  const chosen = localStorage.getItem(THEME_ITEM);
  if (chosen === "light" || chosen === "dark") return chosen;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function applyTheme() {
  const chosen = localStorage.getItem(THEME_ITEM);
  if (chosen) document.documentElement.dataset.theme = chosen;
  else delete document.documentElement.dataset.theme;
  const dark = effectiveTheme() === "dark";
  $("hl-light").media = dark ? "not all" : "all";
  $("hl-dark").media = dark ? "all" : "not all";
  $("theme").setAttribute("aria-label", `Switch to ${dark ? "light" : "dark"}`);
}

// -- models: Code Mode sends `auto`; off, a chat tier or a converted model ----------------------------

async function loadModels() {
  const select = $("model");
  try {
    const [models, plan] = await Promise.all([api.json("/v1/models"), api.json("/engine/plan")]);
    chatTiers = plan.chat_tiers || [];
    const tiers = models.data.filter((m) => m.id === m.tier && chatTiers.includes(m.tier));
    const converted = models.data.filter((m) => m.id !== m.tier && chatTiers.includes(m.tier));
    select.replaceChildren(
      el("optgroup", { label: "Tiers" }, ...tiers.map((m) => el("option", { value: m.id }, m.id))),
      el("optgroup", { label: "Converted models" },
        ...converted.map((m) => el("option", { value: m.id }, `${m.id} (${m.tier})`))));
    select.value = tiers.some((m) => m.id === "code") ? "code" : select.value;
    select.dataset.chosen = select.value;
    if ($("code-mode").checked) {
      select.prepend(el("option", { value: "auto" }, "auto: the router picks"));
      select.value = "auto";
    }
  } catch (error) {
    select.replaceChildren(el("option", { value: "code" }, "code"));
    console.warn("models could not be listed:", error.message);
  }
}

function askedModel() {
  return $("code-mode").checked ? "auto" : $("model").value || "code";
}

// With Code Mode on the select shows `auto`, disabled; off, the tier or model last chosen.
function syncCodeMode() {
  const on = $("code-mode").checked;
  const select = $("model");
  const auto = select.querySelector('option[value="auto"]');
  if (on && !auto) {
    select.dataset.chosen = select.value;
    select.prepend(el("option", { value: "auto" }, "auto: the router picks"));
    select.value = "auto";
  } else if (!on && auto) {
    auto.remove();
    if (select.dataset.chosen) select.value = select.dataset.chosen;
  }
  select.disabled = on;
  $("model-field").title = on ? "Code Mode is on: the router chooses (model auto)" : "";
}

// -- conversations -----------------------------------------------------------------------------------

function listConversations() {
  const list = $("conversation-list");
  list.replaceChildren(...conversations.list().map((c) => {
    const open = el("button", { type: "button", class: "open", title: c.title }, c.title);
    open.addEventListener("click", () => { show(c.id); closeDrawers(); });
    const remove = el("button", { type: "button", class: "delete", "aria-label": `Delete conversation: ${c.title}` }, "✕");
    remove.addEventListener("click", () => {
      conversations.remove(c.id);
      if (current && current.id === c.id) current = null;
      show(current ? current.id : null);
    });
    const item = el("li", { class: current && current.id === c.id ? "current" : "", "data-id": c.id }, open, remove);
    if (current && current.id === c.id) open.setAttribute("aria-current", "true");
    return item;
  }));
}

function show(id) {
  current = id ? conversations.get(id) : null;
  const messages = $("messages");
  messages.replaceChildren();
  if (!current || !current.messages.length) messages.append(emptyNote());
  for (const message of current ? current.messages : []) {
    if (message.role === "user") messages.append(userMessage(message.content));
    else finishAnswer(assistantMessage(), message.content, message.meta || {}, false);
  }
  listConversations();
  messages.scrollTop = messages.scrollHeight;
}

function emptyNote() {
  return el("div", { class: "empty", id: "empty" }, el("p", {},
    "Ask for code. With ", el("strong", {}, "Code Mode"), " on, each prompt goes to ", el("code", {}, "auto"),
    ": the router picks a tier and the answer shows why. Code blocks are highlighted and checked: whether they "
    + "parse, what the linter says, and the tier's measured pass@1."));
}

// -- messages ----------------------------------------------------------------------------------------

function userMessage(text) {
  return el("article", { class: "message user" }, el("div", { class: "who" }, "You"), el("div", { class: "body" }, text));
}

function assistantMessage() {
  const body = el("div", { class: "body" });
  const meta = el("div", { class: "answer-meta" });
  const node = el("article", { class: "message assistant" }, el("div", { class: "who" }, "npu-engine"), body, meta);
  $("messages").append(node);
  return node;
}

// Render a finished answer: Markdown, highlighted code with its checks, what answered, the badge.
// `fresh`: just answered (scrolled to, its receipt verified at once), not read back from storage.
function finishAnswer(node, text, meta, fresh = true) {
  node.classList.remove("streaming");
  const body = node.querySelector(".body");
  renderMarkdown(body, text);
  const blocks = decorateCode(body);
  const line = renderMeta(node.querySelector(".answer-meta"), meta);
  const answered = meta.answered || {};
  if (line && meta.answered) {
    const verify = () => api.post("/engine/receipts/verify", { receipt: answered.receipt, text });
    renderBadge(line, answered.receipt, verify, fresh);
  }
  if (blocks.length) checkBlocks(blocks, meta);
  if (fresh) $("messages").scrollTop = $("messages").scrollHeight;
  return blocks;
}

// The checks of an answer's code blocks, asked once and kept with the answer.
async function checkBlocks(blocks, meta) {
  const answered = meta.answered || {};
  try {
    if (!meta.quality || meta.quality.length !== blocks.length) {
      const found = await api.post("/engine/code-checks", {
        blocks: blocks.map((b) => ({ code: b.code, language: b.language })),
        tier: answered.tier || null,
        device: answered.device || null,
        backend: answered.backend || null,
      });
      meta.quality = found.blocks;
      if (meta.answered) conversations.save(); // the answer's meta is the one its conversation holds
    }
    meta.quality.forEach((quality, index) => showQuality(blocks[index].quality, quality));
  } catch (error) {
    for (const block of blocks) qualityFailed(block.quality, error.message);
  }
}

async function send(text) {
  if (!current) current = conversations.create();
  const history = current.messages.map((m) => ({ role: m.role, content: m.content }));
  conversations.add(current, { role: "user", content: text });
  $("empty")?.remove();
  $("messages").append(userMessage(text));
  listConversations();
  const node = assistantMessage();
  node.classList.add("streaming");
  const body = node.querySelector(".body");
  const asked = askedModel();
  const meta = { asked, started: performance.now() };
  let answer = "";
  let pending = false;
  running = new AbortController();
  setBusy(true);
  try {
    const { answered } = await api.streamChat({
      model: asked,
      messages: [...history, { role: "user", content: text }],
      max_tokens: Number($("max-tokens").value) || 512,
      npu_engine: { receipt: true, decoding: $("decoding").value },
    }, {
      signal: running.signal,
      onStart: (response) => { meta.headerTier = response.headers.get("X-NPU-Engine-Tier"); },
      onText: (piece) => {
        if (!answer) meta.firstTextMs = Math.round(performance.now() - meta.started);
        answer += piece;
        meta.pieces = (meta.pieces || 0) + 1;
        node.dataset.pieces = String(meta.pieces);
        if (pending) return;
        pending = true;
        requestAnimationFrame(() => {
          pending = false;
          // A frame after the last piece may come when the answer is finished and decorated.
          if (!node.classList.contains("streaming")) return;
          renderMarkdown(body, answer);
          $("messages").scrollTop = $("messages").scrollHeight;
        });
      },
    });
    meta.answered = answered;
    delete meta.started;
    finishAnswer(node, answer, meta);
    conversations.add(current, { role: "assistant", content: answer, meta });
  } catch (error) {
    node.classList.remove("streaming");
    node.classList.add("error");
    const stopped = error.name === "AbortError";
    body.textContent = stopped ? `${answer}\n\n(stopped)` : `${answer ? `${answer}\n\n` : ""}Error: ${error.message}`;
  } finally {
    running = null;
    setBusy(false);
    listConversations();
    refreshPanel(api);
  }
}

function setBusy(busy) {
  $("messages").setAttribute("aria-busy", String(busy));
  $("send").disabled = busy;
  $("stop").hidden = !busy;
}

// -- drawers at narrow widths ------------------------------------------------------------------------

function toggleDrawer(button, panel) {
  const open = !panel.classList.contains("open");
  panel.classList.toggle("open", open);
  button.setAttribute("aria-expanded", String(open));
  if (open) panel.querySelector("button")?.focus();
}

function closeDrawers() {
  for (const [button, panel] of [["show-conversations", "conversations"], ["show-engine", "engine"]]) {
    if (!$(panel).classList.contains("open")) continue;
    $(panel).classList.remove("open");
    $(button).setAttribute("aria-expanded", "false");
    if ($(panel).contains(document.activeElement)) $(button).focus(); // back where the reader was
  }
}

// -- wiring ------------------------------------------------------------------------------------------

// Follow an answer as it grows (text, checks, badge) while the reader is at the bottom; stay put
// once they scroll up to read.
function followAnswers() {
  const messages = $("messages");
  let atBottom = true;
  messages.addEventListener("scroll", () => {
    atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
  });
  new MutationObserver(() => {
    if (atBottom) messages.scrollTop = messages.scrollHeight;
  }).observe(messages, { childList: true, subtree: true, characterData: true });
}

function start() {
  hookSanitizer();
  applyTheme();
  followAnswers();
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
  $("theme").addEventListener("click", () => {
    localStorage.setItem(THEME_ITEM, effectiveTheme() === "dark" ? "light" : "dark");
    applyTheme();
  });
  $("code-mode").addEventListener("change", syncCodeMode);
  syncCodeMode();
  $("key-cancel").addEventListener("click", () => $("key-dialog").close(""));
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || running) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => running && running.abort());
  $("new-chat").addEventListener("click", () => {
    current = null;
    show(null);
    closeDrawers();
    $("prompt").focus();
  });
  $("refresh").addEventListener("click", () => refreshPanel(api));
  $("show-conversations").addEventListener("click", () => toggleDrawer($("show-conversations"), $("conversations")));
  $("show-engine").addEventListener("click", () => toggleDrawer($("show-engine"), $("engine")));
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeDrawers(); });
  for (const close of document.querySelectorAll(".close-drawer")) close.addEventListener("click", closeDrawers);
  const latest = conversations.list()[0];
  show(latest ? latest.id : null);
  // The models first (it may ask for the key once), then the panel with the key in hand.
  loadModels().then(() => refreshPanel(api));
  setInterval(() => { if (!document.hidden && !running) refreshPanel(api); }, 30000);
  // For the page's own tests, and for anyone reading a saved answer: render a Markdown answer
  // through the same renderer (its code blocks are highlighted and checked).
  window.npuEngine = {
    showAnswer: (text, meta = {}) => {
      $("empty")?.remove();
      return finishAnswer(assistantMessage(), text, meta).length;
    },
  };
  document.body.dataset.ready = "true";
}

start();
