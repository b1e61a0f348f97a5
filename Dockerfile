# The image the Helm chart runs: `switchboard` on PATH, non-root, fine with a read-only
# root filesystem (the chart mounts an emptyDir at /tmp for the only files it writes).
# Build: docker build -t switchboard:0.1.0 .

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Dependencies first (cached while only the code changes), exactly as locked, by hash.
COPY requirements-runtime.lock /src/
RUN python -m venv /opt/switchboard \
 && /opt/switchboard/bin/pip install --require-hashes --no-deps -r /src/requirements-runtime.lock
COPY pyproject.toml README.md /src/
COPY libs /src/libs
COPY services /src/services
RUN /opt/switchboard/bin/pip install --no-deps /src \
 && /opt/switchboard/bin/switchboard --help >/dev/null

FROM python:3.11-slim
# The uid/gid the chart's securityContext runs as.
RUN groupadd --system --gid 10001 switchboard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin switchboard
COPY --from=build /opt/switchboard /opt/switchboard
ENV PATH=/opt/switchboard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SWITCHBOARD_STATE_DIR=/tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["switchboard"]
CMD ["serve", "api", "--port", "8080"]
