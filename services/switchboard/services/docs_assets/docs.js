// Starts Swagger UI on this hub's own /openapi.json. A file, not an inline script: the
// page's Content-Security-Policy allows scripts from the hub only.
window.addEventListener("load", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No badge fetched from the public validator: nothing leaves the hub.
    validatorUrl: null,
    tryItOutEnabled: false,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
