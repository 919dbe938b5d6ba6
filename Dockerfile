# syntax=docker/dockerfile:1
#
# custos' container images, all from one build stage:
#
#   docker build -t custos .                      custos (the default, last stage)
#   docker build --target issuer -t custos-issuer .      `custos dev` as the compose stack's OIDC issuer
#   docker build --target stackinit -t custos-stackinit .   the compose stack's volume setup and health probe
#
# custos links pg_query (PostgreSQL's parser, C) through cgo, so it is built
# with CGO_ENABLED=1 and linked statically against glibc: pg_query needs
# nothing from libc that static linking breaks (no dlopen, no NSS), and the
# netgo and osusergo tags keep DNS and user lookups in Go. The result runs
# on distroless/static as a non-root user, with no shell and no libc.
#
# Base images are pinned by tag (distroless publishes no version tags:
# nonroot is its release channel). For a production build pin each by
# digest as well: FROM image:tag@sha256:...

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
ENV GOTOOLCHAIN=local GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -tags netgo,osusergo \
      -ldflags "-s -w -X main.version=${VERSION} -linkmode external -extldflags -static" \
      -o /out/custos ./cmd/custos \
 && CGO_ENABLED=0 go build -ldflags "-s -w" -o /out/stackinit ./compose/stackinit \
 && if ldd /out/custos >/dev/null 2>&1; then echo "custos is not static" >&2; exit 1; fi \
 && /out/custos version \
 && mkdir -p /out/data && chown 65532:65532 /out/data

# The compose stack's one-shot setup (certificates, passwords, volume
# ownership) and health probe. It runs as root only to chown the volumes
# it prepares for each service's own user, then exits.
FROM gcr.io/distroless/static-debian12:nonroot AS stackinit
COPY --from=build /out/stackinit /usr/local/bin/stackinit
USER 0:0
ENTRYPOINT ["/usr/local/bin/stackinit"]
CMD ["init"]

# The dev OIDC issuer for the compose stack: `custos dev` serves it on its
# admin listener at /dev-oidc. custos dev also runs a throwaway demo
# PostgreSQL of its own, hence the PostgreSQL image (initdb, postgres); it
# runs as the image's postgres user.
FROM postgres:17.6-bookworm AS issuer
COPY --from=build /out/custos /usr/local/bin/custos
RUN mkdir -p /var/lib/custos-dev && chown postgres:postgres /var/lib/custos-dev && chmod 0711 /var/lib/custos-dev
USER postgres
WORKDIR /var/lib/custos-dev
ENTRYPOINT ["/usr/local/bin/custos"]
# Data dir ./.custos (the default of custos dev and custos token).
CMD ["dev"]

# custos: static binary, no shell, non-root (distroless nonroot, uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot AS custos
COPY --from=build /out/custos /usr/local/bin/custos
COPY --from=build --chown=65532:65532 /out/data /var/lib/custos
USER 65532:65532
WORKDIR /var/lib/custos
EXPOSE 6543 9901 9902
ENTRYPOINT ["/usr/local/bin/custos"]
CMD ["serve", "--config", "/etc/custos/custos.yaml"]
