// The API docs at /docs: Swagger UI (vendored) over this server's own OpenAPI document. Started
// from this file, not from an inline script as FastAPI's docs page does, so that the page's
// Content-Security-Policy can refuse every inline script.
//
// The page itself needs no key; the document and the calls "Try it out" makes do when the server
// has one. The key is asked for once on a 401 and kept for this tab in sessionStorage, under the
// same name as the Code Mode page's, so either page's key serves both.

const KEY_ITEM = "npu-engine.api-key";

async function openapi() {
  for (;;) {
    const key = sessionStorage.getItem(KEY_ITEM) || "";
    const response = await fetch("/openapi.json", {
      headers: key ? { Authorization: `Bearer ${key}` } : {},
    });
    if (response.status !== 401) return response.json();
    const typed = window.prompt(key ? "That key was refused. API key:" : "This server needs its API key:");
    if (!typed) return null;
    sessionStorage.setItem(KEY_ITEM, typed);
  }
}

openapi().then((spec) => {
  if (spec === null) {
    document.getElementById("swagger-ui").textContent = "No API key: the API document needs one.";
    return;
  }
  window.ui = SwaggerUIBundle({
    spec,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis],
    // Swagger UI would otherwise send the document to validator.swagger.io for a badge.
    validatorUrl: null,
    requestInterceptor: (request) => {
      const key = sessionStorage.getItem(KEY_ITEM);
      if (key) request.headers.Authorization = `Bearer ${key}`;
      return request;
    },
  });
});
