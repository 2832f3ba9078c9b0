// The engine panel: the plan, the loaded models and their expiry, the queue, and the device
// profile's numbers, each read from the server's own routes.
import { el } from "./render.js";

const GB = 1024 ** 3;

function relative(expiresAt) {
  const when = Date.parse(expiresAt);
  if (!Number.isFinite(when) || when < Date.UTC(1000, 0, 1)) return "kept loaded";
  const seconds = Math.max(0, Math.round((when - Date.now()) / 1000));
  if (seconds < 60) return `expires in ${seconds} s`;
  return `expires in ${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

function failed(target, error) {
  target.replaceChildren(el("li", { class: "error" }, error.message));
}

export async function refreshPanel(api) {
  const plan = document.getElementById("plan");
  const machine = document.getElementById("plan-machine");
  const loaded = document.getElementById("loaded");
  const queue = document.getElementById("queue");
  const profile = document.getElementById("profile");
  await Promise.all([
    api.json("/engine/plan").then((data) => {
      machine.textContent = `${data.machine}; ${(data.system_used_bytes / GB).toFixed(1)} of `
        + `${(data.system_budget_bytes / GB).toFixed(1)} GB planned, `
        + (data.measured ? "from measured speeds." : "from built-in preferences.");
      // One line a tier; why, and its fallback chain, one click (or Enter) away.
      plan.replaceChildren(...data.placements.map((p) => el("li", { "data-tier": p.tier },
        el("details", {},
          el("summary", {}, el("b", {}, p.tier), ` ${p.model} on ${p.serves || "no local device"}`),
          el("span", { class: "reason" }, p.reason),
          el("span", { class: "reason" }, `fallback: ${p.fallback.join(" → ") || "none"}`)))));
    }).catch((error) => failed(plan, error)),
    api.json("/api/ps").then((data) => {
      const models = data.models || [];
      loaded.replaceChildren(...(models.length ? models.map((m) => el("li", {},
        el("b", {}, m.name),
        el("span", { class: "reason" },
          `${(m.pipelines || []).map((p) => `${p.device}, ${p.decoding}, ${p.backend}`).join("; ")}`),
        el("span", { class: "reason" }, relative(m.expires_at))))
        : [el("li", { class: "small" }, "none loaded")]));
    }).catch((error) => failed(loaded, error)),
    api.json("/metrics.json").then((data) => {
      queue.textContent = `${data.queue_depth} request(s) queued or generating`;
      queue.dataset.depth = String(data.queue_depth);
    }).catch((error) => { queue.textContent = error.message; }),
    api.json("/engine/measurements").then((data) => {
      const rows = data.measurements || [];
      if (!rows.length) {
        profile.replaceChildren(el("p", { class: "small" }, "No device profile: npu-bench has not measured this machine."));
        return;
      }
      const head = el("tr", {}, ...["tier", "device", "backend", "mode", "tok/s", "first token", "pass@1"]
        .map((name) => el("th", { scope: "col" }, name)));
      const body = rows.map((m) => el("tr", {},
        el("td", {}, m.tier), el("td", {}, m.device.toUpperCase()), el("td", {}, m.backend), el("td", {}, m.mode),
        el("td", {}, m.tokens_per_second.toFixed(1)), el("td", {}, `${Math.round(m.ttft_ms)} ms`),
        el("td", {}, m.pass_at_1 === null ? "not measured" : `${(m.pass_at_1 * 100).toFixed(0)}%`)));
      profile.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...body)));
    }).catch((error) => { profile.textContent = error.message; }),
  ]);
}
