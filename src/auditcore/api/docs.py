"""``/docs``: Swagger UI from files installed with auditcore (the ``fastapi-offline`` package
ships Swagger UI's own bundle, MIT-licensed), so the docs work offline, fetch nothing from
another origin, and run under the same Content-Security-Policy as the viewer (the page's
start-up script is a file too, not an inline script).

Failure semantics: none beyond serving files; a file missing from the installed package is a
404 for that file (tests/test_security_headers.py fetches every one the page names).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_UI = Path(fastapi_offline.__file__).parent / "static"
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>auditcore API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" href="/docs/assets/favicon.png">
<script src="/docs/assets/swagger-ui-bundle.js" defer></script>
<script src="/assets/docs.js" defer></script>
</head>
<body><div id="swagger-ui"></div></body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_PAGE)
