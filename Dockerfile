# One image for the hub API, its init command and the Airflow services (blockhub depends on
# Airflow; the `celery` extra adds the CeleryExecutor).  docker-compose.yml builds it once.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY catalog catalog
COPY eventlog eventlog
COPY connectors connectors
COPY expectations expectations
COPY pipelines pipelines
COPY hub hub
COPY deploy/init.sh /usr/local/bin/blockhub-init
RUN pip install --no-cache-dir -c constraints.txt '.[celery]'
# A user of its own (not `nobody`, whose home and groups are shared) that owns the folders
# the named volumes mount: a fresh volume takes the ownership of the image's folder, so
# the hub can write its cache and lake there and Airflow its logs.
RUN useradd --system --uid 10001 --create-home --home-dir /home/blockhub blockhub \
    && mkdir -p /data /opt/airflow \
    && chown blockhub:blockhub /data /opt/airflow
ENV BLOCKHUB_HOME=/data AIRFLOW_HOME=/opt/airflow
VOLUME ["/data", "/opt/airflow"]
USER blockhub
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["blockhub", "serve", "--host", "0.0.0.0", "--port", "8000"]
