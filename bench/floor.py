"""The latency floor: the official-style run against NGINX alone, answering every route itself.

    python bench/floor.py [--max-requests 550] [--duration 60] [--schedule official]

Same k6 script, same emulators and fault schedule, same nginx.conf, except that the location
that proxies to the API nodes is replaced by constant answers: 202 to POST /payments, an empty
summary to GET /payments-summary, 200 to the rest. Nothing behind NGINX can answer faster than
NGINX answering itself on the same machine, so stack p99 / floor p99 says how much of our
latency is ours (`bench/p99.py` runs both, interleaved). The floor's money, lag and audit
figures mean nothing (no payment goes anywhere); only its latency and NGINX's CPU do.
All flags are bench/official.py's; this is `official.py --floor`.
"""

from __future__ import annotations

import re
import sys

from rinha.stack.launcher import render_nginx_conf

# What the floor answers (the shapes of our own answers, so k6 parses them the same way).
EMPTY_SUMMARY = ('{"default":{"totalRequests":0,"totalAmount":0.0},'
                 '"fallback":{"totalRequests":0,"totalAmount":0.0}}')
CONSTANT_LOCATIONS = f"""\
        location = /payments {{
            return 202;
        }}

        location = /payments-summary {{
            default_type application/json;
            return 200 '{EMPTY_SUMMARY}';
        }}

        location / {{
            default_type application/json;
            return 200 '{{"status":"ok"}}';
        }}"""
# The one location of nginx.conf: `location / { ... }` with no braces inside.
PROXY_LOCATION = re.compile(r"^ *location / \{[^{}]*\}", re.MULTILINE)


def render_floor_conf(template: str, *, port: int, socket_dir: str) -> str:
    """The repo's nginx.conf, rendered as for the stack, with its proxy location made constant."""
    conf = render_nginx_conf(template, port=port, socket_dir=socket_dir)
    if len(PROXY_LOCATION.findall(conf)) != 1:
        raise ValueError("nginx.conf must have exactly one 'location / { ... }' block for the floor to replace")
    return PROXY_LOCATION.sub(CONSTANT_LOCATIONS, conf)


if __name__ == "__main__":
    from official import main

    raise SystemExit(main([*sys.argv[1:], "--floor"]))
