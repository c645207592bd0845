# syntax=docker/dockerfile:1
# Levee's worker and enqueue, as static binaries on a distroless base that runs as non-root.
#   docker build -t levee .
#   docker run --rm levee --help
# docker-compose.yml runs it with NATS and Postgres.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Static binaries (no cgo), without local paths or debug symbols.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/worker ./cmd/worker && \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/enqueue ./cmd/enqueue

# static: CA certificates and tzdata, no shell. The nonroot tag's user is 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/worker /out/enqueue /usr/local/bin/
USER nonroot:nonroot
# --http-addr (/healthz, /readyz, /metrics). The worker binds only what it is given:
# docker-compose.yml sets LEVEE_HTTP_ADDR=:9090 and publishes the port on 127.0.0.1 only.
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/worker"]
