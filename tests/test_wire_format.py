"""What lands on the wire (CONTRACT section 3): the flow span, queue attributes, context values and the
four metrics."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import hud_otel as hud_sdk
from hud_otel.testing import HudFlows, capture_flows
from tests.spans import custom, points, whole


def test_queue_flow_span_follows_the_messaging_conventions():
    """A queue flow: CONSUMER span "process <name>", messaging.* and hud.queue.* attributes, e2e time."""
    with capture_flows() as flows:
        enqueued = datetime(2026, 6, 17, 12, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
        with hud_sdk.sync_flow(
            "orders",
            flow_type=hud_sdk.FlowType.QUEUE,
            framework="sqs",
            enqueued_at=enqueued,
            message_count=10,
        ):
            pass
        (span,) = flows.spans()
        view = whole(span, keep_volatile=True)
        e2e = view["attributes"].pop("hud.queue.e2e_duration_ms")
        assert view == {
            "name": "process orders",
            "kind": "CONSUMER",
            "parent": None,
            "attributes": {
                "hud.flow.name": "orders",
                "hud.flow_type": "queue",
                "hud.framework": "sqs",
                "messaging.system": "aws_sqs",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": "orders",
                "hud.queue.enqueued_at": "2026-06-17T10:00:00.250000Z",
                "hud.queue.message_count": 10,
                "messaging.batch.message_count": 10,
                "hud.flow.outcome": "success",
            },
            "status": ("UNSET", None),
            "links": [],
            "events": [],
        }
        expected_ms = (span.end_time / 1e6) - enqueued.timestamp() * 1000
        assert isinstance(e2e, float) and abs(e2e - expected_ms) < 1.0
        labels = {"hud.flow.name": "orders", "hud.flow_type": "queue", "hud.framework": "sqs"}
        assert points(flows, "hud.flow.messages") == {tuple(sorted(labels.items())): 10}
        assert points(flows, "hud.flow.e2e_duration") == {tuple(sorted(labels.items())): 1}


@pytest.mark.parametrize(
    ("framework", "system"),
    [
        ("sqs", "aws_sqs"),
        ("rabbitmq", "rabbitmq"),
        ("kafka", "kafka"),
        ("pulsar", "pulsar"),
        ("rocketmq", "rocketmq"),
        ("activemq", "activemq"),
        ("gcp_pubsub", "gcp_pubsub"),
        ("servicebus", "servicebus"),
        ("eventhubs", "eventhubs"),
        ("custom", "custom"),
        ("in-house-bus", "in-house-bus"),
    ],
)
def test_queue_framework_maps_to_the_messaging_system_registry_value(framework, system):
    """Known frameworks map to the semantic-convention registry value; any other string passes through."""
    with capture_flows() as flows:
        with hud_sdk.sync_flow("jobs", flow_type="queue", framework=framework):
            pass
        (span,) = flows.spans()
        assert (span.attributes["messaging.system"], span.attributes["hud.framework"]) == (system, framework)


def test_batch_message_count_only_for_two_or_more_messages():
    """messaging.batch.message_count appears for batches (>= 2); hud.queue.message_count whenever given."""
    with capture_flows() as flows:
        for count in (0, 1, 2):
            hud_sdk.start_flow("batch", flow_type="queue", message_count=count)
            hud_sdk.end_flow()
        got = [
            (s.attributes.get("hud.queue.message_count"), s.attributes.get("messaging.batch.message_count"))
            for s in flows.spans()
        ]
        assert got == [(0, None), (1, None), (2, 2)]


def test_set_context_values_are_kept_typed_cut_or_repr_as_the_contract_says():
    """str/bool/int/float and homogeneous lists as they are; None dropped; others repr(); strings cut at 1024."""

    class Tenant:
        def __repr__(self) -> str:
            return "Tenant(acme)"

    with capture_flows() as flows:
        with hud_sdk.sync_flow("ctx"):
            hud_sdk.set_context(
                s="text",
                b=True,
                i=42,
                f=1.5,
                ls=["a", "b"],
                li=[1, 2],
                mixed=[1, "a"],
                none=None,
                obj=Tenant(),
                d={"k": 1},
                long="x" * 5000,
                big=2**70,
            )
        (flow,) = flows.flows()
        assert flow.context == {
            "s": "text",
            "b": True,
            "i": 42,
            "f": 1.5,
            "ls": ("a", "b"),
            "li": (1, 2),
            "mixed": "[1, 'a']",
            "obj": "Tenant(acme)",
            "d": "{'k': 1}",
            "long": "x" * 1024,
            "big": str(2**70),
        }


def test_at_most_64_context_keys_a_flow_the_rest_dropped_with_one_warning(caplog):
    """The 65th distinct key is dropped; keys already set can still be updated."""
    caplog.set_level(logging.WARNING, logger="hud_otel")
    with capture_flows() as flows:
        with hud_sdk.sync_flow("wide"):
            hud_sdk.set_context(**{f"k{i}": i for i in range(100)})
            hud_sdk.set_context(k0="updated", extra=1)
        (flow,) = flows.flows()
        assert len(flow.context) == 64
        assert flow.context["k0"] == "updated"
        assert "extra" not in flow.context and "k64" not in flow.context
        assert len([r for r in caplog.records if "set_context keys" in r.getMessage()]) == 1


def test_context_is_cleared_when_the_flow_ends():
    """A flow's context never leaks into the next flow of the same function or context."""
    with capture_flows() as flows:

        @hud_sdk.sync_flow("job")
        def job(i):
            if i == 0:
                hud_sdk.set_context(only_first=True)

        job(0)
        job(1)
        first, second = flows.flows()
        assert first.context == {"only_first": True}
        assert second.context == {}


def test_flow_metrics_have_the_contract_names_units_and_attributes():
    """hud.flow.duration (s) by name/type/framework/outcome, error.type on failures; skipped by reason."""
    with capture_flows() as flows:

        @hud_sdk.sync_flow("report")
        def report(fail):
            if fail:
                raise OSError("disk")

        report(False)
        report(False)
        with pytest.raises(OSError):
            report(True)
        with hud_sdk.sync_flow("report"), hud_sdk.sync_flow("nested"):
            pass
        base = {"hud.flow.name": "report", "hud.flow_type": "custom", "hud.framework": "custom"}
        ok = tuple(sorted({**base, "hud.flow.outcome": "success"}.items()))
        failed = tuple(sorted({**base, "hud.flow.outcome": "failure", "error.type": "OSError"}.items()))
        # The decorator and the with-block are one flow for the metrics: same name, type and framework.
        assert points(flows, "hud.flow.duration") == {ok: 3, failed: 1}
        assert points(flows, "hud.flow.skipped") == {(("reason", "nested"),): 1}
        units = {}
        data = flows.metric_reader.get_metrics_data()
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                assert sm.scope.name == "hud_otel"
                for metric in sm.metrics:
                    units[metric.name] = metric.unit
        assert units == {"hud.flow.duration": "s", "hud.flow.skipped": "{flow}"}


def test_metrics_count_every_flow_even_when_the_sampler_drops_its_span():
    """Metrics are recorded for 100% of flows whatever the trace sampler decides."""
    capture = HudFlows()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(capture.span_exporter))
    hud_sdk.register(tracer_provider=provider, meter_provider=capture.meter_provider)
    try:

        @hud_sdk.sync_flow("sampled-out")
        def job():
            hud_sdk.set_context(a=1)
            with hud_sdk.sync_flow("nested"):
                pass

        for _ in range(5):
            job()
        assert capture.spans() == []
        (count,) = points(capture, "hud.flow.duration").values()
        assert count == 5
        assert capture.skipped() == {"nested": 5}
    finally:
        hud_sdk.shutdown()


def test_custom_flow_span_is_a_root_internal_span_named_after_the_flow():
    """The whole custom flow span of a decorated function."""
    with capture_flows() as flows:

        @hud_sdk.sync_flow("nightly-report", framework="cron")
        def nightly():
            return 1

        nightly()
        (span,) = flows.spans()
        assert whole(span) == {
            "name": "nightly-report",
            "kind": "INTERNAL",
            "parent": None,
            "attributes": {
                **custom(
                    "nightly-report",
                    f"{__name__}.test_custom_flow_span_is_a_root_internal_span_named_after_the_flow"
                    ".<locals>.nightly",
                ),
                "hud.framework": "cron",
                "hud.flow.outcome": "success",
            },
            "status": ("UNSET", None),
            "links": [],
            "events": [],
        }
        assert span.attributes["code.file.path"] == __file__


def test_flowtype_is_a_str_enum_and_plain_strings_are_accepted():
    """FlowType.QUEUE == "queue"; flow_type="queue" and FlowType.QUEUE make the same flow."""
    assert hud_sdk.FlowType.QUEUE == "queue" and str(hud_sdk.FlowType.CUSTOM) == "custom"
    with capture_flows() as flows:
        for flow_type in (hud_sdk.FlowType.QUEUE, "queue"):
            with hud_sdk.sync_flow("jobs", flow_type=flow_type):
                pass
        assert [(f.flow_type, f.span.name) for f in flows.flows()] == [("queue", "process jobs")] * 2
        assert len(points(flows, "hud.flow.duration")) == 1


def test_set_context_on_a_request_span_is_capped_at_64_keys_too():
    """Inside a request (no flow), set_context lands on the request span under the same 64-key cap."""
    from opentelemetry.trace import SpanKind

    with capture_flows() as flows:
        tracer = flows.tracer_provider.get_tracer("web")
        with tracer.start_as_current_span("GET /items", kind=SpanKind.SERVER):
            hud_sdk.set_context(**{f"k{i}": i for i in range(100)})
            hud_sdk.set_failure("Rejected", reason="too many")
        (span,) = flows.spans()
        context_keys = [k for k in span.attributes if k.startswith("hud.context.")]
        assert len(context_keys) == 64
        assert (span.attributes["hud.flow.error"], span.status.description) == ("Rejected", "too many")


def test_a_flow_under_a_remote_parent_from_message_headers_is_a_root_linked_to_it():
    """A consumer that attaches the context extracted from a message's traceparent: the flow is still a
    new trace, and carries a link to the remote producer span."""
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with capture_flows() as flows:
        token = context.attach(TraceContextTextMapPropagator().extract(headers))
        try:
            with hud_sdk.sync_flow("orders", flow_type="queue", framework="kafka"):
                pass
        finally:
            context.detach(token)
        (span,) = flows.spans()
        assert span.parent is None
        assert span.context.trace_id != 0x0AF7651916CD43DD8448EB211C80319C
        assert [
            (link.context.trace_id, link.context.span_id, link.context.is_remote) for link in span.links
        ] == [(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True)]
