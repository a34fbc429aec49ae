# syntax=docker/dockerfile:1
# payoutd: one static binary on a minimal, non-root base.
#
#   docker build -t payoutd --build-arg VERSION=$(git describe --tags --always) --build-arg COMMIT=$(git rev-parse HEAD) .

# Exact tags; pin by digest (golang@sha256:…) where your registry policy wants it.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# Modules first, so source edits do not refetch them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=""
ARG COMMIT=""
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/payoutd ./cmd/payoutd

# distroless/static: CA certificates and tzdata, no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/payoutd /payoutd
USER nonroot:nonroot
# ingress (webhooks), ops (/metrics, /healthz, /readyz), sandbox
EXPOSE 8080 9464 8081
ENTRYPOINT ["/payoutd"]
CMD ["--help"]
