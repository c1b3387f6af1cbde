// /docs: Swagger UI from the vendored bundle, reading the service's own /openapi.json. The validator badge is
// off: it would send the schema to an outside server. "Authorize" takes an API key (HTTP bearer).
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
