# The ticketflow worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY processors ./processors
COPY topics ./topics
COPY schemas ./schemas
COPY infra ./infra
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["ticketflow"]
CMD ["worker"]
