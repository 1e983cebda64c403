"""A Flask app: a flow attempted inside an HTTP request is skipped, the request is the flow.

``generate_report`` is a flow when the nightly job calls it, but the web app calls it too. Inside a
request the HTTP server span is already Hud's flow for that work, so the nested attempt is skipped
(counted as ``hud.flow.skipped{reason="in_request"}``) and its ``set_context`` lands on the request span.

The app is driven by Flask's test client here, so the example needs no port; with
``opentelemetry-instrument flask run`` or ``FlaskInstrumentor`` in a real server it behaves the same.
"""

from __future__ import annotations

from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor

import hud_otel as hud_sdk


@hud_sdk.sync_flow("generate-report")
def generate_report(report_id: str) -> dict[str, str]:
    hud_sdk.set_context(report_id=report_id)
    return {"id": report_id, "status": "ready"}


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/reports/<report_id>")
    def report(report_id: str) -> dict[str, str]:
        return generate_report(report_id)  # inside the request: skipped as a flow, the code still runs

    # Uses the global tracer provider, which register() sets up (or finds) at start-up.
    FlaskInstrumentor().instrument_app(app)
    return app


def main() -> None:
    app = create_app()
    client = app.test_client()
    response = client.get("/reports/r-42")
    print(f"flask_app: GET /reports/r-42 -> {response.status_code} {response.get_json()}")
    generate_report("r-nightly")  # outside any request: a flow of its own


if __name__ == "__main__":
    hud_sdk.register()
    try:
        main()
    finally:
        hud_sdk.shutdown()
