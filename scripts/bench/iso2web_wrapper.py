"""Runs iso2web (Proofpoint's community collector, from PyPI) against isolation-sim, for the
side-by-side benchmark in scripts/bench/run.sh. Nothing of iso2web is copied here: the installed module
is imported and only its hard-coded vendor URL is pointed at the simulator.

  python scripts/bench/iso2web_wrapper.py receive PORT COUNT_FILE
      a webhook receiver: accepts iso2web's POSTs (JSON lists of events), counts the events,
      writes the running count to COUNT_FILE after each post; nothing else is kept.

  /tmp/isoenv/bin/python scripts/bench/iso2web_wrapper.py run SIM_BASE_URL CALLBACK_URL API_KEY
      iso2web's `run` (collect_events) with its defaults (pageSize 10000, chunk 10000), in the
      current directory (its checkpoint file lands there), INFO logging to stdout as its CLI
      does; a last line `bench: api_requests=N posts=M` counts its HTTP requests.
"""

import json
import logging
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def receive(port: int, count_file: str) -> None:
    state = {"events": 0, "posts": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state["events"] += len(json.loads(body))
            state["posts"] += 1
            with open(count_file, "w") as f:
                f.write(f"{state['events']} {state['posts']}\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with open(count_file, "w") as f:
        f.write("0 0\n")
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def run(sim_base_url: str, callback: str, api_key: str) -> None:
    import iso2web  # the installed package (pip install iso2web)
    import requests

    # Count the HTTP requests it makes (API GETs and webhook POSTs), for the summary.
    counts = {"GET": 0, "POST": 0}
    original_request = requests.Session.request

    def counting_request(self, method, url, *args, **kwargs):
        counts[method.upper()] = counts.get(method.upper(), 0) + 1
        return original_request(self, method, url, *args, **kwargs)

    requests.Session.request = counting_request

    iso2web.ISO_URL_INFO["WEB"]["URL"] = sim_base_url.rstrip("/") + "/api/v2/reporting/usage-data"
    log = logging.getLogger("iso2web")
    log.setLevel("INFO")
    handler = logging.StreamHandler(stream=sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    options = {
        "identifier": "bench",
        "log_level": "INFO",
        "input_type": "WEB",
        "callback": callback,
        "chunk_size": 10000,
        "page_size": 10000,
        "timeout": 600,
        "api_key": api_key,
    }
    iso2web.collect_events(log, options, False)
    print(f"bench: api_requests={counts['GET']} posts={counts['POST']}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["receive"]:
        receive(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1:2] == ["run"]:
        run(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
