# Sigil. `make run` starts the dev server; `make test` runs everything CI runs.
SHELL       := /bin/bash
GO          ?= go
BUF         := $(GO) tool -modfile=tools/buf/go.mod buf
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export CGO_ENABLED := 1

.PHONY: all build release release-deps nfpm run deps test-sys-deps sys-deps crosscheck-deps kms-deps eth-deps trace-deps promtool test test-under-load soak lint fmt-check vet staticcheck nocgo buf-lint proto proto-check docs gotest bench clean

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

all: build

# The version, commit and commit time stamped into the binary (sigil version): the git tag
# (git describe), else the commit; GOFLAGS here may hold -buildvcs=false, so they are explicit.
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
COMMIT      := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
COMMIT_DATE := $(shell git log -1 --format=%cI 2>/dev/null || echo unknown)
LDFLAGS     := -X github.com/sigil-hsm/sigil/server.version=$(VERSION) -X github.com/sigil-hsm/sigil/server.commit=$(COMMIT) -X github.com/sigil-hsm/sigil/server.date=$(COMMIT_DATE)

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/sigil ./cmd/sigil

## release: binaries for linux/amd64 and arm64 (cgo, for PKCS#11), their .deb packages (nfpm),
## man pages and SHA256SUMS in $(DIST), stamped with $(VERSION) (git describe). Reproducible:
## -trimpath, no build ID, file times from the commit (SOURCE_DATE_EPOCH).
DIST        ?= dist
ARCHES      ?= amd64 arm64
DEB_VERSION := $(shell packaging/deb-version.sh '$(VERSION)')
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH

release: release-deps nfpm
	rm -rf $(DIST) && mkdir -p $(DIST)/man
	$(GO) build -ldflags '$(LDFLAGS)' -o $(DIST)/sigil-host ./cmd/sigil
	$(DIST)/sigil-host man --dir $(DIST)/man && rm $(DIST)/sigil-host
	touch -d @$(SOURCE_DATE_EPOCH) $(DIST)/man/*.1 && gzip -9n $(DIST)/man/*.1
	@set -e; for arch in $(ARCHES); do \
		cc=gcc; [ $$arch = amd64 ] || cc=aarch64-linux-gnu-gcc; \
		bin=$(DIST)/sigil-$(VERSION)-linux-$$arch; \
		echo "building $$bin"; \
		CC=$$cc GOOS=linux GOARCH=$$arch CGO_ENABLED=1 $(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS) -s -w -buildid=' -o $$bin ./cmd/sigil; \
		sed -e "s|@ARCH@|$$arch|" -e "s|@VERSION@|$(DEB_VERSION)|" -e "s|@BINARY@|$$bin|" -e "s|@MANDIR@|$(DIST)/man|" packaging/nfpm.yaml > $(DIST)/nfpm-$$arch.yaml; \
		bin/nfpm package --config $(DIST)/nfpm-$$arch.yaml --packager deb --target $(DIST)/ >/dev/null; \
		rm $(DIST)/nfpm-$$arch.yaml; \
		echo "$$bin needs glibc $$(objdump -T $$bin | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1 | cut -d_ -f2) or later"; \
	done
	cd $(DIST) && sha256sum sigil-* *.deb > SHA256SUMS && cat SHA256SUMS

## release-deps: the arm64 cross compiler (Debian's gcc-aarch64-linux-gnu), when an arm64 build is asked.
release-deps:
	@case " $(ARCHES) " in *" arm64 "*) command -v aarch64-linux-gnu-gcc >/dev/null || { echo "installing: gcc-aarch64-linux-gnu"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq gcc-aarch64-linux-gnu >/dev/null; };; esac

## nfpm: the Go packager that makes the .deb, built once into bin/ from the module pinned in tools/nfpm.
nfpm:
	@[ -x bin/nfpm ] || $(GO) build -modfile=tools/nfpm/go.mod -o bin/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm

## deps: install the system packages the server and tests need, when missing.
deps: sys-deps test-sys-deps crosscheck-deps kms-deps eth-deps trace-deps promtool

sys-deps:
	@missing=""; \
	[ -f /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || missing="$$missing softhsm2"; \
	command -v pkcs11-tool >/dev/null || missing="$$missing opensc"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v node >/dev/null || missing="$$missing nodejs npm"; \
	/usr/bin/python3 -c 'import jwt, cryptography' 2>/dev/null || missing="$$missing python3-jwt python3-cryptography"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

## test-sys-deps: what only the tests use: opencryptoki (a second PKCS#11 token), debootstrap and
## binutils (the package test's Debian root and glibc floor), Chromium (the console's browser tests).
test-sys-deps:
	@missing=""; \
	command -v pkcsslotd >/dev/null || missing="$$missing opencryptoki"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	command -v objdump >/dev/null || missing="$$missing binutils"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

## crosscheck-deps: the independent implementations the tests check Sigil's JWTs and signatures with
## (npm jose 5 and 6, ethers, viem, web3.js, undici for their client certificates; Debian's PyJWT
## above; jwx and keyfunc in the tests/rpcheck module).
crosscheck-deps: sys-deps
	@[ -d testdata/crosscheck/node_modules/jose ] && [ -d testdata/crosscheck/node_modules/jose6 ] && [ -d testdata/crosscheck/node_modules/ethers ] && \
		[ -d testdata/crosscheck/node_modules/viem ] && [ -d testdata/crosscheck/node_modules/web3 ] && [ -d testdata/crosscheck/node_modules/undici ] || \
		npm ci --prefix testdata/crosscheck --no-audit --no-fund
	@cd tests/rpcheck && $(GO) mod download

## kms-deps: the AWS KMS emulator the awskms tests run against (pinned in tools/localkms).
kms-deps:
	@[ -x bin/local-kms ] || $(GO) build -modfile=tools/localkms/go.mod -o bin/local-kms github.com/nsmithuk/local-kms

## eth-deps: a real Ethereum execution client for the tests, geth (--dev), built once into
## bin/ from the go-ethereum module pinned in tools/geth.
eth-deps:
	@[ -x bin/geth ] || $(GO) build -modfile=tools/geth/go.mod -o bin/geth github.com/ethereum/go-ethereum/cmd/geth

## promtool: Prometheus's rule checker, for the shipped alert rules: taken from Debian's
## prometheus package (the binary alone, not the service) into bin/.
promtool:
	@[ -x bin/promtool ] || { tmp=$$(mktemp -d) && (cd $$tmp && apt-get download prometheus >/dev/null 2>&1 && dpkg-deb -x prometheus_*.deb x) && mkdir -p bin && cp $$tmp/x/usr/bin/promtool bin/promtool; rm -rf $$tmp; }

## trace-deps: a real trace collector for the tests, Jaeger (OTLP receiver, in-memory
## storage, query API), built once into bin/ from the module pinned in tools/jaeger.
trace-deps:
	@[ -x bin/jaeger ] || $(GO) build -modfile=tools/jaeger/go.mod -o bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

## run: the embedded default, `sigil serve --dev`, in ./.sigil-dev.
run: sys-deps build
	./bin/sigil serve --dev

## test: formatting, vet, buf lint, generated code freshness, then all tests under -race.
test: deps lint proto-check gotest

lint: fmt-check vet staticcheck nocgo buf-lint

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	cd tests/rpcheck && $(GO) vet ./...

## staticcheck: pinned, installed into bin/ from the module proxy when missing; zero findings.
staticcheck:
	@[ -x bin/staticcheck ] || GOBIN=$(CURDIR)/bin $(GO) install $(STATICCHECK)
	bin/staticcheck ./...
	cd tests/rpcheck && ../../bin/staticcheck ./...

## nocgo: the binary builds without cgo (the pkcs11 backend then refuses to start, saying why).
nocgo:
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/sigil

buf-lint:
	$(BUF) lint

## docs: regenerate docs/cli.md from the commands (make test fails while it is stale).
docs:
	$(GO) test ./cmd/sigil -run '^TestCLIReferenceIsFresh$$' -count=1 -update

proto:
	$(BUF) generate

## proto-check: regenerating the protobuf code must change nothing.
proto-check:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(BUF) generate -o $$tmp && \
	diff -r -x '*.proto' $$tmp/proto proto >/dev/null || { echo "generated protobuf code is stale: run make proto"; diff -r -x '*.proto' $$tmp/proto proto | head -20; exit 1; }

gotest:
	$(GO) test -race -count=1 -timeout 30m ./...

## test-under-load: the Go tests (race detector on) twice in a row while two busy
## loops keep both cores loaded, as a new user's busy CI machine would; each run is timed.
test-under-load: deps
	@yes >/dev/null & h1=$$!; yes >/dev/null & h2=$$!; trap 'kill $$h1 $$h2 2>/dev/null' EXIT; \
	for run in 1 2; do \
		echo "== run $$run of 2, both cores loaded"; start=$$(date +%s); \
		$(GO) test -race -count=1 -timeout 60m ./... || exit 1; \
		echo "== run $$run passed in $$(( $$(date +%s) - start )) s"; \
	done

## soak: mixed concurrent load under -race for SOAK_DURATION (5m) on bbolt and on three
## replicas over etcd, with a token blip and an etcd member restart; not part of make test.
SOAK_DURATION ?= 5m
soak: deps
	SIGIL_SOAK_DURATION=$(SOAK_DURATION) $(GO) test -race -count=1 -tags soak -timeout 90m -run TestSoak -v ./tests/soak/

## bench: Go benchmarks, then the load driver, which rewrites BENCHMARKS.md.
bench: sys-deps
	$(GO) test -run='^$$' -bench=. -benchtime=2000x ./signer/pkcs11/ ./server/
	$(GO) run ./cmd/sigil-bench -out BENCHMARKS.md

clean:
	rm -rf bin
