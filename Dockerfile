# One image for every service and process; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY scripts ./scripts
# /keys exists and belongs to refstd so that the named volume mounted there (compose) is writable by it.
RUN pip install . && useradd --system --home /app refstd && mkdir -p /app/var /keys && chown refstd /app/var /keys
USER refstd

EXPOSE 8001 8002 8003
CMD ["gunicorn", "--bind", "0.0.0.0:8001", "services.inventory.app:create_app()"]
