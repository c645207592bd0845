FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /out/worker ./cmd/worker && CGO_ENABLED=0 go build -o /out/enqueue ./cmd/enqueue

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/worker /out/enqueue /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/worker"]
