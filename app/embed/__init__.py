"""The landing page's side: `GET /embed.js`, the script that carries the trace from the browser.

`embed.js` here is its readable source, `embed.min.js` what is served (see `minify.py`).
"""

from app.embed.routes import router

__all__ = ["router"]
