# Sigil's container image. Built in Debian 12's Go image (cgo: PKCS#11
# modules are C libraries); run on distroless/cc (glibc, no shell, no
# package manager) as a non-root user. SoftHSM's module comes along for
# development (/usr/lib/sigil/libsofthsm2.so); a real HSM's module is
# mounted or layered on top. The configuration, TLS files and PIN are
# mounted at run time: nothing secret is in the image.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t sigil .
#   docker run -v /etc/sigil:/etc/sigil:ro -v sigil-state:/var/lib/sigil sigil
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
RUN mkdir -p /out/lib && cp /usr/lib/softhsm/libsofthsm2.so /out/lib/ && \
    ldd /usr/lib/softhsm/libsofthsm2.so | awk '/=> \// {print $3}' | grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' | xargs -r cp -t /out/lib/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sigil /usr/bin/sigil
COPY --from=build /out/lib/ /usr/lib/sigil/
ENV LD_LIBRARY_PATH=/usr/lib/sigil
USER 65532:65532
EXPOSE 7443 7080 7081 7545
ENTRYPOINT ["/usr/bin/sigil"]
CMD ["serve", "--config", "/etc/sigil/sigil.yaml"]
