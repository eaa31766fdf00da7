# Santong FHIR server: runs `santong serve` against SANTONG_DATABASE_URL as a non-root user.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
COPY fhir_profiles ./fhir_profiles
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /app santong
COPY --from=build /install /usr/local
USER santong
WORKDIR /app
ENV SANTONG_HOST=0.0.0.0 \
    SANTONG_PORT=8080 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["santong", "serve"]
