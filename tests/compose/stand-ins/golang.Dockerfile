# A STAND-IN for golang:1.26.8-bookworm, for make compose-test where no registry answers:
# the host's Go toolchain (the build context is its GOROOT) in a Debian bookworm root
# filesystem, laid out as the real image (/usr/local/go, GOPATH=/go). Never used where the
# real image can be pulled (build.sh pulls first).
FROM broker-stand-in/go-rootfs:bookworm
ARG IMAGE
ARG GO_VERSION
LABEL org.broker.stand-in="${IMAGE} from Debian bookworm packages and the host's ${GO_VERSION}" \
      org.opencontainers.image.vendor="broker compose-test stand-in, not the upstream image" \
      org.opencontainers.image.description="Local stand-in for ${IMAGE}: host ${GO_VERSION}"
COPY . /usr/local/go
ENV GOLANG_VERSION=${GO_VERSION} GOPATH=/go \
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
