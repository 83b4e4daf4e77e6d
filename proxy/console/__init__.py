"""The web console at ``/console``: keys, usage, health and a playground, for the admin key only.

Server-rendered Jinja2 templates and a little vanilla JavaScript, every asset shipped in this
package (no CDN, no build step). See `proxy.console.session` for the cookie and CSRF design and
`proxy.console.web` for the guard every route goes through.
"""

from proxy.console.routes import routes

__all__ = ["routes"]
