# claude-proxy: a small image, non-root, configured entirely from the environment.
#   docker build -t claude-proxy .
#   docker run -p 8080:8080 -e ANTHROPIC_API_KEY=sk-ant-... -e PROXY_API_KEYS=team-key claude-proxy

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY proxy ./proxy
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir --upgrade pip \
    && /venv/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home proxy
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PROXY_STORE=/data/claude-proxy.db
USER proxy
WORKDIR /data
EXPOSE 8080
# Binding 0.0.0.0 means the gateway refuses to start without client keys (PROXY_API_KEYS, or
# PROXY_ALLOW_ANONYMOUS=true to opt in explicitly).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
# Exec form: no shell in between, so SIGTERM reaches the server itself and it drains gracefully.
ENTRYPOINT ["python", "-m", "proxy", "serve", "--host", "0.0.0.0", "--port", "8080"]
