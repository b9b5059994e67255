"""What every service serves besides its resources: health, readiness, metrics, spec, request ids."""


def test_healthz_answers_while_the_process_is_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_checks_the_database_and_the_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_is_503_when_the_broker_is_unreachable(app):
    app.config["REFSTD_SETTINGS"].amqp_url = "amqp://guest:guest@127.0.0.1:1/%2F"
    from services.inventory.app import create_app

    broken = create_app(app.config["REFSTD_SETTINGS"], app.extensions["refstd.db"])
    response = broken.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["broker"] == "unavailable"


def test_metrics_are_prometheus_text_and_count_requests(client):
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert 'refstd_http_requests_total{endpoint="/healthz"' in response.text


def test_openapi_spec_and_docs_are_served(client):
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    assert spec.json["info"]["title"] == "refstd inventory"
    assert "/api/v1/auth/token" in spec.json["paths"]
    assert "bearerAuth" in spec.json["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_request_id_is_echoed_or_generated(client):
    echoed = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    generated = client.get("/healthz")
    assert len(generated.headers["X-Request-ID"]) == 36


def test_request_id_is_carried_into_events_as_correlationid(client, admin, outbox):
    body = {"name": "关联测试有限公司", "kind": "university"}
    response = client.post("/api/v1/organizations", json=body, headers={**admin, "X-Request-ID": "req-77"})
    assert response.status_code == 201
    assert outbox()[-1]["correlationid"] == "req-77"


def test_unknown_path_and_wrong_method_are_problem_json(client):
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.content_type == "application/problem+json"
    assert missing.json["status"] == 404
    wrong = client.delete("/healthz")
    assert wrong.status_code == 405
    assert wrong.content_type == "application/problem+json"
