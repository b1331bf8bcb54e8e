# A STAND-IN for gcr.io/distroless/static-debian12:nonroot, for make compose-test where no
# registry answers: what that image holds for a static binary (CA certificates, time zones,
# /etc/passwd with root, nobody and nonroot 65532, a writable /tmp), copied out of a Debian
# bookworm root filesystem; no shell. Never used where the real image can be pulled.
FROM broker-stand-in/python-rootfs:bookworm AS files
RUN mkdir -p /out/etc/ssl/certs /out/usr/share /out/tmp /out/home/nonroot \
 && chmod 1777 /out/tmp \
 && chown 65532:65532 /out/home/nonroot \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
 && if [ -d /usr/share/zoneinfo ]; then cp -a /usr/share/zoneinfo /out/usr/share/; fi \
 && printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
      'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
      'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > /out/etc/passwd \
 && printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' > /out/etc/group

FROM scratch
ARG IMAGE
LABEL org.broker.stand-in="${IMAGE} from Debian bookworm files" \
      org.opencontainers.image.vendor="broker compose-test stand-in, not the upstream image" \
      org.opencontainers.image.description="Local stand-in for ${IMAGE}"
COPY --from=files /out/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /home/nonroot
