// The API docs at /docs: Swagger UI (vendored) over this server's own OpenAPI document. Started
// from this file, not from an inline script as FastAPI's docs page does, so that the page's
// Content-Security-Policy can refuse every inline script.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis],
  // Swagger UI would otherwise send the document to validator.swagger.io for a badge.
  validatorUrl: null,
});
