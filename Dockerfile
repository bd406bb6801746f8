# One image for every dnsflow component; compose.yaml picks the verb.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dnsflow ./dnsflow
COPY edge ./edge
COPY policies ./policies
COPY streams ./streams
COPY sinks ./sinks
COPY bench ./bench
RUN pip install --no-cache-dir .
USER 65534:65534
ENTRYPOINT ["dnsflow"]
