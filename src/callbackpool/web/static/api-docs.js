// Starts Swagger UI on /api/docs (routes/docs.py) over the service's OpenAPI document.
'use strict';

(() => {
  const container = document.getElementById('swagger-ui');
  if (!container || typeof window.SwaggerUIBundle !== 'function') return;
  window.ui = window.SwaggerUIBundle({
    url: container.dataset.openapiUrl,
    dom_id: '#swagger-ui',
    layout: 'BaseLayout',
    deepLinking: true,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
