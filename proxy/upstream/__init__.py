"""The one place that talks HTTP to Anthropic.

Everything network-shaped lives here: the connection pool, the upstream keys, timeouts and
retries. The rest of the gateway sees two calls:

    await upstream.request(method, path, body)   -> UpstreamReply (status, headers, body bytes)
    await upstream.open_stream(path, body)        -> UpstreamStream (status, headers, async bytes)

Transport failures never leave this package as httpx exceptions: ``_TRANSPORT_ERRORS`` maps them
to the gateway's own errors (see ``proxy/errors.py``), in the manner of httpx's own exception map.

What comes back is held to the gateway's bounds before anyone else sees it (``_open`` and
``UpstreamStream``): redirects are never followed (a 3xx is a 502: following one would send the key
and the prompt to another host), bodies are asked for and accepted only uncompressed (so their size
on the wire is their size in memory), a body is read up to ``upstream.max_response_bytes`` and one
stream event buffered up to ``upstream.max_event_bytes``; past a bound the reply is
``UpstreamRejected`` (502, not retried) and its connection closed. Retry hints are made sane once,
by the one parser (``retry_after_seconds``), and every byte and every transport error's text goes
through a ``Scrubber`` that removes the gateway's upstream keys (and, from transport errors, the
upstream's address), so no route or translator downstream can relay them.

The modules, each one concept:

    client.py    ``Upstream``: admission (in-flight slots), keys, opening a call, judging replies
    retry.py     the retry policy under tenacity: ``_Retry``, waits, stops, the retry metric
    backends.py  the HTTP clients (aiohttp, httpx, httpx2) and the transport error map
    reply.py     ``UpstreamReply`` and ``UpstreamStream``: bounded, scrubbed reads
    scrub.py     ``Scrubber`` / ``StreamScrubber``: keys and addresses out of upstream text
    keypool.py   the upstream key pool: weighted rotation, resting and refused keys
"""

from proxy.translate.errors import retry_after_seconds
from proxy.upstream.backends import map_transport_error
from proxy.upstream.client import Upstream
from proxy.upstream.reply import UpstreamReply, UpstreamStream
from proxy.upstream.scrub import Scrubber

__all__ = [
    "Scrubber",
    "Upstream",
    "UpstreamReply",
    "UpstreamStream",
    "map_transport_error",
    "retry_after_seconds",
]
