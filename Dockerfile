# Sigil's container image. Built in Debian 12's Go image (cgo: PKCS#11
# modules are C libraries); run on distroless/cc (glibc, no shell, no
# package manager) as uid 65532. SoftHSM's module comes along for
# development, at /usr/lib/sigil/libsofthsm2.so (name that path in the
# backend's module:); a real HSM's module is mounted or layered on top.
# The configuration, TLS files and PIN are mounted at run time, readable
# by uid 65532: nothing secret is in the image (.dockerignore keeps a dev
# server's data and the git history out of the build too).
# /var/lib/sigil (the store, SoftHSM's tokens) is the volume.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t sigil .
#   docker run -v /srv/sigil/etc:/etc/sigil:ro -v /srv/sigil/credentials:/run/credentials:ro \
#     -e CREDENTIALS_DIRECTORY=/run/credentials -v sigil-state:/var/lib/sigil sigil
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends softhsm2 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=unknown
RUN CGO_ENABLED=1 go build -trimpath -buildvcs=false -ldflags "-s -w -buildid= -X github.com/sigil-hsm/sigil/server.version=${VERSION}" -o /out/sigil ./cmd/sigil
# SoftHSM's module and what it links beyond glibc (which the final image has).
RUN mkdir -p /out/lib /out/state/tokens && cp /usr/lib/softhsm/libsofthsm2.so /out/lib/ && \
    ldd /usr/lib/softhsm/libsofthsm2.so | awk '/=> \// {print $3}' | grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' | xargs -r cp -t /out/lib/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sigil /usr/bin/sigil
COPY --from=build /out/lib/ /usr/lib/sigil/
# The state folder, the service's own (a named volume takes its owner).
COPY --from=build --chown=65532:65532 /out/state/ /var/lib/sigil/
ENV LD_LIBRARY_PATH=/usr/lib/sigil SOFTHSM2_CONF=/etc/sigil/softhsm2.conf
USER 65532:65532
EXPOSE 7443 7080 7081 7545
ENTRYPOINT ["/usr/bin/sigil"]
CMD ["serve", "--config", "/etc/sigil/sigil.yaml"]
