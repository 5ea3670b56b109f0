"""``GET /``: the page a person sees at the URL ``pushgate serve`` prints.

A small static page: the version, where the API reference is (``/docs``, ``/openapi.json``)
and which APIs answer under which paths. Built once; it carries no data of any account.
"""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pushgate {version}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 44rem; margin: 3rem auto;
  padding: 0 1rem; line-height: 1.5; color: #222; }}
code {{ background: #f3f3f3; padding: 0 .25rem; border-radius: 3px; }}
li {{ margin: .25rem 0; }}
</style>
</head>
<body>
<h1>Pushgate <small>{version}</small></h1>
<p>A self-hosted push-notification gateway. This server is running.</p>
<h2>API</h2>
<ul>
<li><a href="/dashboard/">Dashboard</a> (sign in with an account's user token)</li>
<li><a href="/docs">API reference</a> (the native API, tried out in the browser)</li>
<li><a href="/openapi.json">OpenAPI description</a> (<code>/openapi.json</code>)</li>
<li><a href="/api/v1/health">Health</a> (<code>/api/v1/health</code>)</li>
</ul>
<h2>Paths</h2>
<ul>
<li><code>/api/v1/</code>: the native API (bearer: an account's user token)</li>
<li><code>/v1/</code>: the Instapush v1 API</li>
<li><code>/api/v1/channel/</code>: the device channel (WebSocket, SSE, poll)</li>
</ul>
<h2>Documentation</h2>
<p>The guides are in the <code>docs/</code> folder of Pushgate's source: start with
<code>docs/quickstart.md</code>. On the command line, <code>pushgate --help</code> lists the
commands, and each has its own <code>--help</code>.</p>
</body>
</html>
"""


def home_route(version: str) -> Route:
    body = _PAGE.format(version=escape(version)).encode()

    async def home(request: Request) -> Response:
        return Response(body, media_type="text/html; charset=utf-8")

    return Route("/", home, methods=["GET", "HEAD"], include_in_schema=False)
