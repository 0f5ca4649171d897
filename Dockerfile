FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY catalog catalog
COPY eventlog eventlog
COPY connectors connectors
COPY expectations expectations
COPY pipelines pipelines
COPY hub hub
RUN pip install --no-cache-dir -c constraints.txt .
USER nobody
EXPOSE 8000
CMD ["blockhub", "serve", "--host", "0.0.0.0"]
