# Multi-stage build: a static binary on a minimal, non-root base image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/token-orchestrator ./cmd/token-orchestrator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/token-orchestrator /token-orchestrator
USER nonroot:nonroot
EXPOSE 8080
ENV ADDR=:8080
ENTRYPOINT ["/token-orchestrator"]
