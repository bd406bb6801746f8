# One image for every dnsflow component; compose.yaml and the Helm chart pick the verb.
FROM python:3.11-slim

# iproute2 + nftables: the edge's node-local set-up (`dnsflow edge --setup-interface`, the
# chart's init container); libcap2-bin: setcap below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 nftables libcap2-bin \
 && rm -rf /var/lib/apt/lists/*

# The edge binds :53 as a non-root user. Kubernetes gives a non-root container no ambient
# capabilities (kubernetes#56374), so `capabilities.add: [NET_BIND_SERVICE]` alone does
# nothing; a file capability does. Only this copy of the interpreter carries it (the edge
# DaemonSet's command), and it takes effect only where the bounding set allows it.
RUN cp /usr/local/bin/python3.11 /usr/local/bin/python3-netbind \
 && setcap cap_net_bind_service=+ep /usr/local/bin/python3-netbind

WORKDIR /src
# Dependencies first: this layer changes only when pyproject.toml does.
COPY pyproject.toml setup.py README.md ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps))" \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The sources (no bench/, no tests/, no test harness).
COPY dnsflow ./dnsflow
COPY edge ./edge
COPY policies ./policies
COPY streams ./streams
COPY sinks ./sinks
COPY console ./console
RUN pip install --no-cache-dir --no-deps . \
 && cd / && rm -rf /src \
 && mkdir -p /var/lib/dnsflow && chown 65534:65534 /var/lib/dnsflow

# Everything a component writes goes under DNSFLOW_HOME (spool, policy snapshot, TLS, chDB)
# and faust's data directory: one writable volume; the working directory stays unwritable.
ENV DNSFLOW_HOME=/var/lib/dnsflow \
    APP_DATADIR=/var/lib/dnsflow/faust/{conf.name}-data \
    HOME=/var/lib/dnsflow \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/dnsflow"]
WORKDIR /
USER 65534:65534
# The edge's /healthz by default (DNSFLOW_HEALTH_URL); components without an HTTP endpoint
# set DNSFLOW_HEALTH_URL=process (compose.yaml does).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "dnsflow.healthcheck"]
ENTRYPOINT ["dnsflow"]
