# Multi-stage build: a static binary on a minimal, non-root base image.
#   docker build -t token-orchestrator .
#   docker run -e DATABASE_URL=postgres://... -p 8080:8080 token-orchestrator
# The image has no PostgreSQL of its own: DATABASE_URL is required.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a change to the code does not download them again.
# The Go client is a module of its own that go.mod replaces with ./client:
# its go.mod is needed to resolve the modules.
COPY go.mod go.sum ./
COPY client/go.mod client/
RUN go mod download
COPY . .
# .git is not sent to the build (.dockerignore): the version and commit come
# as build arguments, e.g.
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t token-orchestrator .
ARG VERSION=devel
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w \
      -X github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo.version=${VERSION} \
      -X github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo.revision=${REVISION}" \
    -o /out/token-orchestrator ./cmd/token-orchestrator

# distroless/static: no shell, no package manager, CA certificates and
# tzdata only; runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=devel
ARG REVISION=unknown
LABEL org.opencontainers.image.title="token-orchestrator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/token-orchestrator /token-orchestrator
USER nonroot:nonroot
EXPOSE 8080
ENV ADDR=:8080
# The image has no curl: the binary checks itself (GET /readyz).
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s --retries=3 \
    CMD ["/token-orchestrator", "healthcheck"]
ENTRYPOINT ["/token-orchestrator"]
CMD ["serve"]
